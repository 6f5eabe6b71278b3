"""Construction evaluation (radiodiff_vae.evaluation.construction) and `radiodiff-vae evaluate-construction`, on
untrained tiny pipelines (a tiny-f4 VAE) and synthetic 32 x 32 maps: what is scored, how, and the files."""

import csv
import json
import math

import pytest
import torch
from PIL import Image

from radiodiff_vae import RadioDiffPipeline, RadioUNetPipeline, RadioVAE
from radiodiff_vae.baseline import LogDistanceFit
from radiodiff_vae.cli import main
from radiodiff_vae.data import SyntheticRadioMaps
from radiodiff_vae.data.batches import spread_indices
from radiodiff_vae.data.conventions import RADIOMAPSEER_DB_RANGE, model_to_unit
from radiodiff_vae.errors import DataError, InvalidArgumentError, ModelFileError
from radiodiff_vae.evaluation.construction import (
    CONSTRUCTION_OUTPUT_FILES,
    SCORES,
    evaluate_construction,
    load_construction_pipeline,
    save_construction,
)
from radiodiff_vae.metrics import compute_metrics

SIZE = 32


def _tiny_pipeline() -> RadioDiffPipeline:
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny-f4", sample_size=SIZE)
    return RadioDiffPipeline.from_vae(
        vae, unet_block_out_channels=(16, 32), layers_per_block=1, attention=False, unet_norm_num_groups=8,
        city_channels=8, city_block_out_channels=(8, 8), city_norm_num_groups=4, ray_samples=8,
        default_num_inference_steps=2,
    )  # fmt: skip


def _tiny_direct() -> RadioUNetPipeline:
    torch.manual_seed(1)
    return RadioUNetPipeline.from_sizes(
        sample_size=SIZE, unet_block_out_channels=(8, 16), layers_per_block=1, unet_norm_num_groups=4, ray_samples=8
    )


@pytest.fixture(scope="module")
def pipeline() -> RadioDiffPipeline:
    return _tiny_pipeline()


@pytest.fixture(scope="module")
def direct() -> RadioUNetPipeline:
    return _tiny_direct()


@pytest.fixture(scope="module")
def test_maps() -> SyntheticRadioMaps:
    return SyntheticRadioMaps(3, 2, resolution=SIZE, first_map_id=10001, show_progress=False)


@pytest.fixture(scope="module")
def train_maps() -> SyntheticRadioMaps:
    return SyntheticRadioMaps(4, 2, resolution=SIZE, show_progress=False)


@pytest.fixture(scope="module")
def result(pipeline, direct, test_maps, train_maps):
    return evaluate_construction(
        pipeline, test_maps, train_dataset_for_fit=train_maps, direct=direct, num_inference_steps=2, batch_size=4,
        seed=0, device="cpu", num_examples=2, progress=False, settings={"data": "synthetic 32x32"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory, pipeline, direct):
    root = tmp_path_factory.mktemp("construction")
    pipeline.save_pretrained(root / "pipeline")
    direct.save_pretrained(root / "direct")
    pipeline.vae.save_pretrained(root / "vae")
    return root


def test_every_method_is_scored_on_every_map(result, test_maps):
    assert result.metrics["methods"] == ["pipeline", "direct", "log_distance", "ceiling"]
    assert result.metrics["num_maps"] == len(test_maps) == 6
    assert result.names == [test_maps[index]["name"] for index in range(6)]
    for method in result.metrics["methods"]:
        block = result.metrics[method]
        assert block["num_maps"] == 6
        for score in SCORES:
            assert result.per_map[method][score].shape == (6,)
            assert block[score] == pytest.approx(float(result.per_map[method][score].mean()), rel=1e-12)
        # RMSE in dB is the [0, 1] RMSE times the width of the dB range
        assert block["rmse_db"] == pytest.approx(block["rmse"] * 100.0, rel=1e-6)  # float32 per map
    assert result.metrics["pipeline"]["num_inference_steps"] == result.metrics["num_inference_steps"] == 2
    # the first of the two batches is left out of the timing
    assert result.metrics["pipeline"]["timed_maps"] == 2 and result.metrics["pipeline"]["maps_per_second"] > 0
    assert result.metrics["data"] == "synthetic 32x32"


def test_ceiling_is_the_vae_reconstruction_of_the_truth_outside_buildings(result, pipeline, test_maps):
    truth = torch.stack([test_maps[index]["pixel_values"] for index in range(6)])  # (6, 1, H, W) in [-1, 1]
    with torch.no_grad():
        decoded = pipeline.vae.decode(pipeline.vae.encode(truth).latent_dist.mode()).sample
    buildings = torch.stack([test_maps[index]["buildings"] for index in range(6)])  # (6, 1, H, W) in {0, 1}
    error = model_to_unit(decoded.clamp(-1, 1)) * (1 - buildings) - model_to_unit(truth)
    by_hand = error.pow(2).flatten(1).mean(dim=1).sqrt().double()
    torch.testing.assert_close(result.per_map["ceiling"]["rmse"], by_hand, rtol=1e-5, atol=1e-7)
    assert result.metrics["ceiling"]["rmse"] == pytest.approx(float(by_hand.mean()), rel=1e-5)


def test_log_distance_is_the_fit_on_the_training_maps(result, test_maps, train_maps):
    fit = LogDistanceFit.from_dataset(train_maps, max_maps=512, progress=False)
    assert result.metrics["log_distance"]["fit"] == fit.to_dict()
    items = [test_maps[index] for index in range(6)]
    truth = model_to_unit(torch.stack([item["pixel_values"] for item in items]))
    predicted = fit.predict(torch.stack([item["buildings"] for item in items]), torch.stack([item["transmitter"] for item in items]))
    expected = compute_metrics(predicted, truth, db_range=RADIOMAPSEER_DB_RANGE)
    for score in SCORES:
        torch.testing.assert_close(result.per_map["log_distance"][score], expected[score].double())


def test_pipeline_scores_are_the_pipeline_output_with_the_seeded_generator(result, pipeline, test_maps):
    items = [test_maps[index] for index in range(4)]  # the first batch
    generator = torch.Generator().manual_seed(0)
    images = pipeline(
        torch.stack([item["buildings"] for item in items]), torch.stack([item["transmitter"] for item in items]),
        num_inference_steps=2, generator=generator, output_type="pt",
    ).images  # fmt: skip
    truth = model_to_unit(torch.stack([item["pixel_values"] for item in items]))
    expected = compute_metrics(images, truth)["nmse"].double()
    torch.testing.assert_close(result.per_map["pipeline"]["nmse"][:4], expected)


def test_max_maps_takes_maps_spread_over_the_data(pipeline, test_maps, train_maps):
    fit = LogDistanceFit.from_dataset(train_maps, progress=False)
    result = evaluate_construction(
        pipeline, test_maps, log_distance=fit, max_maps=3, batch_size=8, device="cpu", draw_figure=False,
        progress=False,
    )  # fmt: skip
    assert result.indices == spread_indices(6, 3) and len(set(result.indices)) == 3
    assert result.metrics["methods"] == ["pipeline", "log_distance", "ceiling"]
    assert result.metrics["num_inference_steps"] == 2  # the pipeline's default_num_inference_steps
    assert result.figure is None


def test_bad_arguments_fail_before_any_prediction(pipeline, test_maps, train_maps):
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        evaluate_construction(pipeline, test_maps, train_dataset_for_fit=train_maps, batch_size=0)
    with pytest.raises(InvalidArgumentError, match="train_dataset_for_fit"):
        evaluate_construction(pipeline, test_maps)
    odd = SyntheticRadioMaps(1, 1, resolution=36, first_map_id=10001, show_progress=False)
    with pytest.raises(InvalidArgumentError, match="36x36.*multiples of 8"):
        evaluate_construction(pipeline, odd, train_dataset_for_fit=train_maps)
    no_city = [{"pixel_values": torch.zeros(1, SIZE, SIZE)}]
    with pytest.raises(DataError, match=r"lack \['buildings', 'transmitter'\]"):
        evaluate_construction(pipeline, no_city, train_dataset_for_fit=train_maps)


def test_saved_files_agree(result, tmp_path):
    written = save_construction(result, tmp_path / "out")
    assert sorted(written) == sorted(CONSTRUCTION_OUTPUT_FILES)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    with open(tmp_path / "out" / "per_map.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 6 * 4
    for method in metrics["methods"]:
        mine = [row for row in rows if row["method"] == method]
        assert [row["name"] for row in mine] == result.names
        for score in ("nmse", "rmse", "psnr", "ssim", "rmse_db"):
            mean = sum(float(row[score]) for row in mine) / len(mine)
            assert metrics[method][score] == pytest.approx(mean, rel=1e-12)
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "pipeline (2 steps)" in table and "log-distance fit" in table and "ceiling" in table
    with Image.open(tmp_path / "out" / "examples.png") as image:
        assert image.width > image.height > 0  # two rows of six panels
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_construction(result, tmp_path / "out")


def test_loading_checks_the_folder(folders):
    loaded = load_construction_pipeline(folders / "pipeline")
    assert isinstance(loaded, RadioDiffPipeline)
    with pytest.raises(ModelFileError, match="no model_index.json .*a VAE"):
        load_construction_pipeline(folders / "vae")
    with pytest.raises(ModelFileError, match="holds a RadioUNetPipeline .*expected a RadioDiffPipeline"):
        load_construction_pipeline(folders / "direct")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_construction_pipeline(str(folders / "missing"))


# ------------------------------------------------------------------------------------------------------------------
# the command
def _command(folders, output, *extra):
    return [
        "evaluate-construction", str(folders / "pipeline"), "--output_dir", str(output), "--resolution", str(SIZE),
        "--synthetic_num_maps", "2", "--synthetic_num_tx", "2", "--fit_maps", "8", "--device", "cpu", *extra,
    ]  # fmt: skip


def test_command_writes_the_files(folders, tmp_path, capsys):
    output = tmp_path / "eval"
    code = main(_command(folders, output, "--direct_model", str(folders / "direct"), "--num_inference_steps", "1"))
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["methods"] == ["pipeline", "direct", "log_distance", "ceiling"]
    assert metrics["num_maps"] == 4 and metrics["num_inference_steps"] == 1
    for method in metrics["methods"]:
        assert {"nmse", "rmse", "psnr", "ssim", "rmse_db", "num_maps"} <= set(metrics[method])
        assert all(math.isfinite(float(metrics[method][name])) for name in ("nmse", "rmse", "psnr", "ssim"))
    # the fit read the training runs' synthetic cities: 8 maps of 2 transmitters, cities 1-4
    assert metrics["log_distance"]["fit"]["num_maps"] == 8
    assert "cities 1-4" in metrics["settings"]["log_distance_fit"]
    assert "cities 10001-10002" in metrics["data"]
    with open(output / "per_map.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 4 * 4
    assert "pipeline (1 step)" in (output / "metrics.md").read_text()
    with Image.open(output / "examples.png") as image:
        image.verify()
    assert "pipeline (1 step)" in capsys.readouterr().out

    # the fit of that run, reused: the same line, no training maps read
    again = tmp_path / "again"
    code = main(_command(folders, again, "--log_distance_fit", str(output / "metrics.json"), "--no_figure"))
    assert code == 0, capsys.readouterr().err
    assert json.loads((again / "metrics.json").read_text())["log_distance"]["fit"] == metrics["log_distance"]["fit"]
    assert not (again / "examples.png").exists()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "does not exist"),
        ("vae", "not a pipeline folder: no model_index.json"),
        ("direct", "holds a RadioUNetPipeline"),
        ("size", "--resolution is 36"),
        ("output_file", "is a file"),
        ("steps", "--num_inference_steps must be at least 1"),
        ("fit_file", "--log_distance_fit"),
        ("overlap", "overlap the log-distance fit's training cities"),
    ],
)
def test_command_bad_input_is_one_line(folders, tmp_path, capsys, case, expected):
    output = tmp_path / "out"
    args = _command(folders, output)
    if case in ("missing", "vae", "direct"):
        args[1] = str(folders / case)
    elif case == "size":
        args[args.index("--resolution") + 1] = "36"
    elif case == "output_file":
        output.write_text("a file")
    elif case == "steps":
        args += ["--num_inference_steps", "0"]
    elif case == "fit_file":
        (tmp_path / "fit.json").write_text('{"a": 1}')
        args += ["--log_distance_fit", str(tmp_path / "fit.json")]
    elif case == "overlap":
        args += ["--synthetic_first_map", "2"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    assert error.startswith("radiodiff-vae evaluate-construction: error:") and expected in error
    assert case == "output_file" or not output.exists()
