"""The evaluation job (radiodiff_vae.evaluation) and `radiodiff-vae evaluate`, on the tiny preset at 32x32."""

import json
import math
import os

import pytest
import torch
from PIL import Image

from radiodiff_vae import RadioVAE
from radiodiff_vae.cli import main
from radiodiff_vae.data.conventions import RADIOMAPSEER_DB_RANGE, model_to_unit
from radiodiff_vae.errors import DataError, InvalidArgumentError, OutputExistsError
from radiodiff_vae.evaluation import (
    OUTPUT_FILES,
    EvaluationResult,
    ExampleMaps,
    MapScores,
    evaluate_vae,
    plot_examples,
    reconstruct,
    save_evaluation,
    score_maps,
    summarize_per_simulation,
)
from radiodiff_vae.metrics import compute_metrics

SIZE = 32


def _maps(count: int, seed: int = 0) -> list:
    """In-memory radio-map items: a smooth decay from a random point, a few building squares set to 0."""
    generator = torch.Generator().manual_seed(seed)
    coords = torch.linspace(-1, 1, SIZE)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    items = []
    for index in range(count):
        cx, cy = (torch.rand(2, generator=generator) - 0.5).tolist()
        gain = (1 - ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() / 2.5).clamp(0, 1)
        buildings = torch.zeros(SIZE, SIZE)
        buildings[4:10, 20:28] = 1
        gain = gain * (1 - buildings)
        items.append(
            {
                "pixel_values": (gain * 2 - 1)[None],
                "buildings": buildings[None],
                "name": f"{index + 1}_0",
                "simulation": "IRT4" if index % 2 == 0 else "DPM",
            }
        )
    return items


@pytest.fixture(scope="module")
def vae() -> RadioVAE:
    torch.manual_seed(0)
    return RadioVAE.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, vae) -> str:
    folder = tmp_path_factory.mktemp("model") / "tiny-vae"
    vae.save_pretrained(folder)
    return str(folder)


def test_scores_equal_metrics_of_the_reconstructions(vae):
    items = _maps(5)
    result = evaluate_vae(vae, items, batch_size=2, draw_figure=False, progress=False)
    inputs = torch.stack([item["pixel_values"] for item in items])
    expected = compute_metrics(
        model_to_unit(reconstruct(vae, inputs).clamp(-1, 1)), model_to_unit(inputs), db_range=RADIOMAPSEER_DB_RANGE
    )
    assert set(result.per_image) == {"psnr", "ssim", "nmse", "rmse", "mae", "rmse_db", "mae_db"}
    for name, values in expected.items():
        assert torch.allclose(result.per_image[name], values.double(), rtol=1e-4, atol=1e-6), name
        assert result.metrics[name]["mean"] == pytest.approx(values.double().mean().item(), rel=1e-4)
    assert result.names == [f"{i}_0" for i in range(1, 6)]
    # Per simulation: 3 IRT4 maps (even positions) and 2 DPM maps, each summarised on its own.
    per_simulation = result.metrics["per_simulation"]
    assert {key: value["psnr"]["count"] for key, value in per_simulation.items()} == {"IRT4": 3, "DPM": 2}
    assert per_simulation["DPM"]["mae"]["mean"] == pytest.approx(expected["mae"][[1, 3]].double().mean().item(), rel=1e-4)
    assert "| PSNR (dB) ↑ |" in result.table and "| DPM | 2 |" in result.table


def test_non_building_mask_and_subset(vae):
    items = _maps(6)
    result = evaluate_vae(
        vae, items, batch_size=4, num_samples=3, seed=1, non_building_only=True, draw_figure=False, progress=False
    )
    assert len(result.names) == 3 and result.metrics["settings"]["num_images"] == 3
    assert result.indices == sorted(result.indices) and len(set(result.indices)) == 3
    chosen = [items[index] for index in result.indices]
    inputs = torch.stack([item["pixel_values"] for item in chosen])
    mask = torch.stack([item["buildings"] for item in chosen]) < 0.5
    expected = compute_metrics(model_to_unit(reconstruct(vae, inputs).clamp(-1, 1)), model_to_unit(inputs), mask=mask)
    assert torch.allclose(result.per_image["rmse"], expected["rmse"].double(), rtol=1e-4)
    # The same seed picks the same subset.
    again = evaluate_vae(vae, items, num_samples=3, seed=1, draw_figure=False, progress=False)
    assert again.indices == result.indices


def test_posterior_samples_do_not_depend_on_batching(vae):
    items = _maps(4)
    one = evaluate_vae(vae, items, batch_size=1, sample_posterior=True, seed=3, draw_figure=False, progress=False)
    four = evaluate_vae(vae, items, batch_size=4, sample_posterior=True, seed=3, draw_figure=False, progress=False)
    mean = evaluate_vae(vae, items, batch_size=4, draw_figure=False, progress=False)
    assert torch.allclose(one.per_image["mae"], four.per_image["mae"], rtol=1e-5)
    assert not torch.allclose(one.per_image["mae"], mean.per_image["mae"])


def test_training_mode_is_handed_back(vae):
    """Validation inside training evaluates in eval mode and leaves the model training afterwards."""
    items = _maps(2)
    reference = evaluate_vae(vae, items, draw_figure=False, progress=False)
    vae.train()
    try:
        result = evaluate_vae(vae, items, draw_figure=False, progress=False)
        assert vae.training
    finally:
        vae.eval()
    assert torch.allclose(result.per_image["psnr"], reference.per_image["psnr"])


def test_save_writes_every_file_and_refuses_to_clobber(vae, tmp_path):
    result = evaluate_vae(vae, _maps(3), batch_size=3, progress=False)
    # A perfect score is inf, which JSON cannot hold: it is written as the string "inf".
    result.metrics["psnr"]["max"] = math.inf
    written = save_evaluation(result, tmp_path / "out")
    assert sorted(written) == sorted(OUTPUT_FILES)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for name in ("psnr", "ssim", "nmse", "rmse", "mae"):
        assert {"mean", "std", "p5", "p50", "p95", "count"} <= set(metrics[name])
    assert metrics["psnr"]["max"] == "inf"
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out" / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    rows = (tmp_path / "out" / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("index,name,simulation,psnr") and len(rows) == 4
    with Image.open(tmp_path / "out" / "examples.png") as figure:
        assert figure.format == "PNG" and figure.width > 500
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_evaluation(result, tmp_path / "out")


def test_failed_save_leaves_earlier_results_whole(vae, tmp_path, monkeypatch):
    result = evaluate_vae(vae, _maps(2), batch_size=2, progress=False)
    save_evaluation(result, tmp_path)
    before = (tmp_path / "metrics.json").read_bytes()

    def broken_savefig(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(result.figure, "savefig", broken_savefig)
    result.metrics["psnr"]["mean"] = 123.0
    with pytest.raises(RuntimeError, match="disk full"):
        save_evaluation(result, tmp_path, overwrite=True)
    assert (tmp_path / "metrics.json").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(OUTPUT_FILES)  # no temporary files left


def test_evaluate_rejects_data_the_model_cannot_take(vae):
    two_channel = [{"pixel_values": torch.zeros(2, SIZE, SIZE)}]
    with pytest.raises(InvalidArgumentError, match="1-channel maps but the dataset has 2-channel"):
        evaluate_vae(vae, two_channel, progress=False)
    with pytest.raises(InvalidArgumentError, match="is 36x36, not divisible by the model's downsampling factor 8"):
        evaluate_vae(vae, [{"pixel_values": torch.zeros(1, 36, 36)}], progress=False)
    with pytest.raises(DataError, match="empty"):
        evaluate_vae(vae, [], progress=False)
    with pytest.raises(DataError, match="buildings"):
        evaluate_vae(vae, [{"pixel_values": torch.zeros(1, SIZE, SIZE)}], non_building_only=True, progress=False)


def test_cli_model_argument_finds_a_checkpoint_subfolder(model_dir, tmp_path, vae):
    from radiodiff_vae.cli.arguments import load_model

    checkpoint = tmp_path / "checkpoint-100"
    RadioVAE.from_pretrained(model_dir).save_pretrained(checkpoint / "vae")
    loaded = load_model(str(checkpoint), dtype=torch.bfloat16)
    assert not loaded.training and loaded.dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing"))


def test_cli_evaluate_on_synthetic_maps(model_dir, tmp_path, capsys):
    output = tmp_path / "eval"
    argv = ["evaluate", model_dir, "--output_dir", str(output), "--synthetic_maps", "2", "--synthetic_tx", "2"]
    argv += ["--resolution", str(SIZE), "--batch_size", "3", "--device", "cpu", "--non_building_only"]
    assert main(argv) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["settings"]["num_images"] == 4 and metrics["settings"]["pixels"] == "non-building"
    assert set(metrics["per_simulation"]) == {"synthetic"}
    assert metrics["rmse_db"]["mean"] == pytest.approx(100 * metrics["rmse"]["mean"], rel=1e-6)
    assert "| RMSE (dB of path gain) ↓ |" in (output / "metrics.md").read_text()
    assert "| PSNR (dB) ↑ |" in capsys.readouterr().out
    # A second run into the same folder is refused before any work, and leaves the results alone.
    before = (output / "metrics.json").read_bytes()
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (output / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data_dir", "/nonexistent/RadioMapSeer"], "is not a folder"),
        (["--batch_size", "0"], "--batch_size must be at least 1"),
        (["--db_range", "-47", "-147"], "--db_range"),
        (["--resolution", "36"], "not divisible by the model's downsampling factor 8"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(model_dir, tmp_path, capsys, extra, message):
    output = tmp_path / "eval"
    assert main(["evaluate", model_dir, "--output_dir", str(output), *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar
    assert error.startswith("radiodiff-vae evaluate: error:") and message in error
    assert not (output / "metrics.json").exists()


def test_cli_model_with_other_channel_count(tmp_path, capsys):
    RadioVAE.from_preset("tiny", in_channels=2, out_channels=2).save_pretrained(tmp_path / "two")
    argv = ["evaluate", str(tmp_path / "two"), "--output_dir", str(tmp_path / "eval")]
    assert main(argv + ["--synthetic_maps", "1", "--synthetic_tx", "1", "--resolution", str(SIZE)]) == 2
    assert "the model takes 2-channel maps but the dataset has 1-channel maps" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "eval")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_evaluate_a_radiomapseer_folder_per_simulation(model_dir, tmp_path):
    import shutil

    from radiodiff_vae.data.simulation.synthetic import write_synthetic_folder

    # Maps 1-3 in RadioMapSeer's layout; the disjoint split puts map 2 (2 transmitters) in test. A copy of the gain
    # folder stands in for a second simulation.
    root = write_synthetic_folder(tmp_path / "rms", num_maps=3, num_tx=2, resolution=SIZE, show_progress=False)
    shutil.copytree(root / "gain" / "synthetic", root / "gain" / "DPM")
    output = tmp_path / "eval"
    argv = ["evaluate", model_dir, "--output_dir", str(output), "--data_dir", str(root), "--no_figure"]
    argv += ["--simulation", "synthetic", "DPM", "--split", "test", "--split_scheme", "disjoint"]
    assert main(argv) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    per_simulation = metrics["per_simulation"]
    assert {name: summary["psnr"]["count"] for name, summary in per_simulation.items()} == {"DPM": 2, "synthetic": 2}
    # The same maps under two names score the same.
    assert per_simulation["DPM"]["ssim"]["mean"] == pytest.approx(per_simulation["synthetic"]["ssim"]["mean"])
    assert not (output / "examples.png").exists()
    names = [line.split(",")[1] for line in (output / "per_image.csv").read_text().splitlines()[1:]]
    assert sorted(names) == ["2_0", "2_0", "2_1", "2_1"]


def test_cli_evaluate_a_hub_model(vae, tmp_path, monkeypatch, capsys, hub_endpoint):
    """A Hub id loads through huggingface_hub (here the in-memory Hub of tests/hub_server.py); an unknown id is a
    one-line error."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    vae.push_to_hub("test-user/tiny-vae", token=False)
    argv = ["evaluate", "test-user/tiny-vae", "--output_dir", str(tmp_path / "eval"), "--no_figure"]
    argv += ["--synthetic_maps", "1", "--synthetic_tx", "2", "--resolution", str(SIZE)]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["settings"]["model"] == "test-user/tiny-vae" and metrics["psnr"]["count"] == 2
    assert main(["evaluate", "test-user/missing", "--output_dir", str(tmp_path / "eval2")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    # diffusers' own words, on one line
    assert error.startswith("radiodiff-vae evaluate: error: test-user/missing is not a local folder and is not a valid")


def test_a_folder_that_is_not_radiomapseer_is_scored_whole(tmp_path):
    """9 cities x 5 transmitters written like make-raytraced / make-synthetic folders: --split defaults to all."""
    from radiodiff_vae import RadioVAE
    from radiodiff_vae.cli import main
    from radiodiff_vae.data import write_synthetic_folder

    folder = tmp_path / "foreign"
    write_synthetic_folder(folder, num_maps=9, num_tx=5, seed=4, resolution=32)
    torch.manual_seed(0)
    RadioVAE.from_preset("tiny", sample_size=32).save_pretrained(tmp_path / "model")
    out = tmp_path / "eval"
    code = main(["evaluate", str(tmp_path / "model"), "--data_dir", str(folder), "--simulation", "synthetic",
                 "--device", "cpu", "--no_figure", "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["num_images"] == 45
    assert "every map of the folder: --split all" in metrics["settings"]["data"]
    assert (out / "metrics.md").read_text().startswith("Reconstruction of 45 maps of ")
    names = (out / "per_image.csv").read_text().splitlines()[1:]
    assert len(names) == 45


def test_training_validation_and_evaluate_score_alike(vae):
    """One scoring core (evaluation.score_batch): a run's validation means equal `evaluate`'s on the same maps."""
    from radiodiff_vae.training.validation import evaluate_reconstructions

    items = _maps(3)
    result = evaluate_vae(vae, items, batch_size=2, db_range=None, draw_figure=False, progress=False)

    def collate(batch):
        return {"pixel_values": torch.stack([item["pixel_values"] for item in batch])}

    metrics, grid = evaluate_reconstructions(vae, items, collate, 3, torch.device("cpu"), num_images=2)
    for name in ("psnr", "ssim", "nmse", "rmse", "mae"):
        assert metrics[name] == pytest.approx(result.metrics[name]["mean"], rel=1e-5), name
    assert metrics["baseline_psnr"] == pytest.approx(result.metrics["baseline"]["psnr"]["mean"], rel=1e-5)
    assert metrics["psnr_gap_db"] == pytest.approx(result.metrics["baseline"]["psnr_gap_db"]["mean"], rel=1e-4)
    assert grid is not None and grid.dtype.name == "uint8" and grid.shape[-1] == 3


def test_scoring_and_reporting_of_predicted_maps_without_a_vae(tmp_path):
    """What a construction evaluation reuses: per-map scores of any prediction against the truth, gathered over
    batches and methods, and the four files written from them."""
    items = _maps(5)
    truth = model_to_unit(torch.stack([item["pixel_values"] for item in items]))  # (5, 1, H, W) in [0, 1]
    predicted = truth + 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    flat = truth.mean(dim=(2, 3), keepdim=True).expand_as(truth)  # a trivial baseline: each map's mean
    scores = MapScores()
    for start in (0, 3):  # two batches
        batch = {key: [item[key] for item in items[start : start + 3]] for key in ("name", "simulation")}
        chunk = slice(start, start + 3)
        scores.add_maps(batch, list(range(start, min(start + 3, 5))))
        scores.add("pipeline", score_maps(predicted[chunk], truth[chunk], db_range=RADIOMAPSEER_DB_RANGE))
        scores.add("mean", score_maps(flat[chunk], truth[chunk]))
    assert scores.methods == ["pipeline", "mean"] and scores.indices == [0, 1, 2, 3, 4]
    pipeline = scores.per_image("pipeline")
    expected = compute_metrics(predicted.clamp(0, 1), truth, db_range=RADIOMAPSEER_DB_RANGE)  # clamped first
    for name, values in expected.items():
        torch.testing.assert_close(pipeline[name], values.double())
    assert (pipeline["psnr"] > scores.per_image("mean")["psnr"]).all()

    per_simulation = summarize_per_simulation(pipeline, scores.simulations)
    assert {name: summary["psnr"]["count"] for name, summary in per_simulation.items()} == {"DPM": 2, "IRT4": 3}
    result = EvaluationResult(
        metrics={"pipeline": {name: float(values.mean()) for name, values in pipeline.items()}},
        per_image=pipeline,
        names=scores.names,
        simulations=scores.simulations,
        indices=scores.indices,
        table="| method | PSNR |\n",
        compared_per_image={"mean": scores.per_image("mean")},
    )
    def load_example(index: int) -> ExampleMaps:
        return ExampleMaps(truth[index, 0].numpy(), predicted[index, 0].numpy())

    result.figure = plot_examples(result, load_example, labels=("truth", "constructed"))
    titles = [axis.get_title() for axis in result.figure.axes[:9]]  # 3 rows x 3 panels, then their colour bars
    best = int(pipeline["psnr"].argmax())
    assert titles[0] == f"best: {scores.names[best]} ({scores.simulations[best]}) truth"
    assert [title.split(":")[0] for title in titles[::3]] == ["best", "median", "worst"]
    assert titles[1].startswith(f"constructed, PSNR {pipeline['psnr'][best]:.2f} dB")
    written = save_evaluation(result, tmp_path)
    assert sorted(written) == sorted(OUTPUT_FILES)
    rows = (tmp_path / "per_image.csv").read_text().splitlines()
    assert rows[0] == ",".join(
        ["index", "name", "simulation", *pipeline, *(f"mean_{name}" for name in scores.per_image("mean"))]
    )
    assert len(rows) == 6 and rows[1].startswith("0,1_0,IRT4,")
    assert json.loads((tmp_path / "metrics.json").read_text())["pipeline"]["psnr"] == pytest.approx(
        pipeline["psnr"].mean().item()
    )


def test_validation_grid_reaches_tensorboard_through_the_trackers_log_images(tmp_path, fresh_accelerate_state):
    import io

    import numpy as np
    from accelerate import Accelerator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from radiodiff_vae.training.validation import log_image_to_trackers

    accelerator = Accelerator(log_with="tensorboard", project_dir=str(tmp_path))
    accelerator.init_trackers("run")
    image = np.zeros((8, 12, 3), dtype=np.uint8)  # (H, W, 3), as make_reconstruction_grid returns it
    image[2:5, 3:9, 0] = 255
    log_image_to_trackers(accelerator, "validation/input_reconstruction_error", image, step=3)
    accelerator.end_training()
    (events,) = (tmp_path / "run").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    (logged,) = accumulator.Images("validation/input_reconstruction_error")
    assert logged.step == 3 and (logged.height, logged.width) == (8, 12)
    with Image.open(io.BytesIO(logged.encoded_image_string)) as png:
        assert np.array_equal(np.asarray(png.convert("RGB")), image)
