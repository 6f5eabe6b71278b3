"""`radiodiff-vae make-raytraced` (radiodiff_vae.data.simulation.raytraced): Sionna RT maps of a real city in RadioMapSeer's
layout, read back by the loader, trained on and evaluated.

The first tests run in the core install (no Sionna). The others need the ``raytrace`` extra and skip without it;
they trace one real 32 x 32 tile of Munich (2 m cells, 64 m x 64 m) with two transmitters and 5000 rays each.
"""

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from radiodiff_vae.cli import main
from radiodiff_vae.data.conventions import model_to_unit, unit_to_db
from radiodiff_vae.data.layout import read_grey_png
from radiodiff_vae.data.simulation.raytraced import INSTALL_HINT, SCENES, path_gain_to_grey

# Map 5 (below) lies in two splits of RadioDiff's scheme, which the loader says each time it opens the folder.
pytestmark = pytest.mark.filterwarnings("ignore:split_scheme='radiodiff' reproduces")

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
# Map 5 sits in the validation split of RadioDiff's scheme, which lies inside its training split: one traced tile
# then serves training, validation and evaluation.
MAP_ID = 5
TRACE_FLAGS = ["--scene", "munich", "--maps", "1", "--tx", "2", "--resolution", str(SIZE), "--cell_size", "2"]
TRACE_FLAGS += ["--rays", "5e3", "--max_depth", "3", "--seed", "7", "--first_map_id", str(MAP_ID), "--threads", "1"]


# ------------------------------------------------------------------------------------------------------------------
# the core install: no Sionna needed
def test_without_sionna_make_raytraced_says_what_to_install(tmp_path, monkeypatch, capsys):
    for name in ("sionna", "sionna.rt", "mitsuba", "drjit"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError, as when not installed
    assert main(["make-raytraced", "--out", str(tmp_path / "out"), *TRACE_FLAGS]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert error.startswith("radiodiff-vae make-raytraced: error: ") and 'pip install -e ".[raytrace]"' in error
    assert "libllvm19" in error and "DRJIT_LIBLLVM_PATH" in error and INSTALL_HINT in error
    assert not (tmp_path / "out").exists()


def test_unknown_scene_names_the_available_ones(tmp_path, capsys):
    assert main(["make-raytraced", "--out", str(tmp_path / "out"), "--scene", "paris"]) == 2
    error = capsys.readouterr().err.strip()
    assert "unknown scene 'paris'" in error and all(scene in error for scene in SCENES)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--maps", "0", "--maps must be >= 1, got 0"),
        ("--repeat", "-1", "--repeat must be >= 0, got -1"),
        ("--resolution", "4", "resolution must be an integer >= 8, got 4"),
        ("--cell_size", "0", "cell_size_m must be a positive number, got 0.0"),
        ("--max_depth", "-2", "max_depth must be an integer >= 0, got -2"),
    ],
)
def test_bad_flags_stop_in_one_line_before_any_trace(tmp_path, capsys, flag, value, message):
    assert main(["make-raytraced", "--out", str(tmp_path / "out"), flag, value]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and not (tmp_path / "out").exists()


def test_a_folder_of_other_radio_maps_is_never_written_into(tmp_path, capsys):
    from radiodiff_vae.data.simulation.synthetic import write_synthetic_folder

    root = write_synthetic_folder(tmp_path / "rms", num_maps=1, num_tx=1, resolution=SIZE, show_progress=False)
    before = sorted(path.name for path in root.rglob("*"))
    assert main(["make-raytraced", "--out", str(root), *TRACE_FLAGS]) == 2
    assert "has no meta.json: it was not written by make-raytraced" in capsys.readouterr().err
    assert sorted(path.name for path in root.rglob("*")) == before


def test_path_gain_to_grey_floors_missing_rays_and_zeroes_buildings():
    # -47 dB -> 255, -97 dB -> 127.5 -> 128 (round half to even of 127.5 is 128), -147 dB and below -> 0.
    path_gain = np.array([[[10 ** -4.7, 10 ** -9.7, 10 ** -14.7], [10 ** -20, 0.0, np.nan], [1.0, 10 ** -9.7, 0.0]]])
    buildings = np.zeros((3, 3), dtype=bool)
    buildings[2, 1] = True
    grey = path_gain_to_grey(path_gain, buildings)
    assert grey.dtype == np.uint8 and grey.shape == (1, 3, 3)
    np.testing.assert_array_equal(grey[0], [[255, 128, 0], [0, 0, 0], [255, 0, 0]])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    import torch

    from radiodiff_vae import RadioVAE

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "tiny-vae"
    RadioVAE.from_preset("tiny").save_pretrained(folder)
    return str(folder)


def _rmse_per_map(outputs, targets) -> list:
    """RMSE on [0, 1] of (N, 1, H, W) maps in [-1, 1], one per map, as `evaluate` scores."""
    return [
        float((((output.clamp(-1, 1) - target) / 2) ** 2).mean().sqrt())
        for output, target in zip(outputs, targets)
    ]


def _evaluate_against_reference(model_dir, root, simulation, reference, output, split):
    import torch

    from radiodiff_vae import RadioVAE
    from radiodiff_vae.data import RadioMapSeer
    from radiodiff_vae.evaluation import reconstruct

    argv = ["evaluate", model_dir, "--output_dir", str(output), "--data_dir", str(root), "--no_figure"]
    argv += ["--simulation", simulation, "--reference_simulation", reference, "--split", split, "--device", "cpu"]
    assert main(argv) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    options = {"split": split, "warn_overlap": False}
    a = torch.stack([item["pixel_values"] for item in RadioMapSeer(root, simulation, **options)])
    b = torch.stack([item["pixel_values"] for item in RadioMapSeer(root, reference, **options)])
    reconstruction = reconstruct(RadioVAE.from_pretrained(model_dir), a)
    assert metrics["settings"]["reference_simulation"] == reference
    # The floor is trace A scored against trace B; the model's scores are its reconstruction of A against B.
    assert metrics["noise_floor"]["rmse"]["mean"] == pytest.approx(np.mean(_rmse_per_map(a, b)), rel=1e-5)
    assert metrics["rmse"]["mean"] == pytest.approx(np.mean(_rmse_per_map(reconstruction, b)), rel=1e-4)
    assert "the Monte Carlo noise floor, is at RMSE" in (output / "metrics.md").read_text()
    return metrics, a, b


def test_evaluate_scores_against_a_reference_trace_beside_the_noise_floor(model_dir, tmp_path, capsys):
    import shutil

    from radiodiff_vae.data.layout import write_grey_png
    from radiodiff_vae.data.simulation.synthetic import write_synthetic_folder

    # A synthetic folder stands in for two traces: "repeat1" is the same maps with noise added to one of them.
    root = write_synthetic_folder(tmp_path / "rms", num_maps=3, num_tx=2, resolution=SIZE, show_progress=False)
    shutil.copytree(root / "gain" / "synthetic", root / "gain" / "synthetic_repeat1")
    noisy = root / "gain" / "synthetic_repeat1" / "1_1.png"  # map 1 is a training map
    grey = read_grey_png(noisy).astype(np.int16) + np.random.default_rng(0).integers(-20, 21, (SIZE, SIZE))
    write_grey_png(noisy, np.clip(grey, 0, 255).astype(np.uint8))
    metrics, a, b = _evaluate_against_reference(
        model_dir, root, "synthetic", "synthetic_repeat1", tmp_path / "eval", "train"
    )
    assert metrics["noise_floor"]["rmse"]["max"] > 0.02 and metrics["noise_floor"]["rmse"]["min"] == 0
    # A reference that holds some of the transmitters: the maps both folders hold are scored, and the report says so.
    shutil.rmtree(root / "gain" / "synthetic_repeat1")
    shutil.copytree(root / "gain" / "synthetic", root / "gain" / "other")
    (root / "gain" / "other" / "3_1.png").unlink()
    argv = ["evaluate", model_dir, "--output_dir", str(tmp_path / "some"), "--data_dir", str(root), "--no_figure"]
    assert main(argv + ["--simulation", "synthetic", "--reference_simulation", "other"]) == 0  # --split all
    settings = json.loads((tmp_path / "some" / "metrics.json").read_text())["settings"]
    assert (settings["num_images"], settings["maps_with_reference"], settings["maps_in_data"]) == (5, 5, 6)
    assert "(other) on the 5 of 6 maps it holds" in (tmp_path / "some" / "metrics.md").read_text()
    # A reference that holds none of them, and a missing simulation, are refused.
    for name in os.listdir(root / "gain" / "other"):
        os.replace(root / "gain" / "other" / name, root / "gain" / "other" / f"9{name}")
    argv[3] = str(tmp_path / "bad")
    assert main(argv + ["--simulation", "synthetic", "--reference_simulation", "other"]) == 2
    assert "no gain map with its transmitter image for any of the 3 maps" in capsys.readouterr().err
    assert main(argv + ["--reference_simulation", "other"]) == 2  # the default simulation IRT4 is not there either
    assert main(["evaluate", model_dir, "--output_dir", str(tmp_path / "bad"), "--reference_simulation", "x"]) == 2
    assert "--reference_simulation needs --data_dir" in capsys.readouterr().err


def test_reference_pairs_match_maps_by_name():
    import torch

    from radiodiff_vae.evaluation import ReferencePairs

    maps = [{"pixel_values": torch.full((1, 4, 4), value), "name": f"1_{tx}"} for tx, value in enumerate((0.5, -0.5))]
    pairs = ReferencePairs(maps, maps[::-1])  # paired by name, whatever the order
    assert len(pairs) == 2 and pairs.num_data_maps == 2
    assert pairs[0]["reference"].equal(maps[0]["pixel_values"]) and pairs[1]["reference"].equal(maps[1]["pixel_values"])
    subset = ReferencePairs(maps, maps[1:])  # the reference holds one of the two maps: that one is an item
    assert len(subset) == 1 and subset.num_data_maps == 2 and subset[0]["name"] == "1_1"
    with pytest.raises(ValueError, match="the reference holds none of the 2 maps"):
        ReferencePairs(maps, [{"pixel_values": maps[0]["pixel_values"], "name": "2_0"}])
    with pytest.raises(ValueError, match=r"name each map once, got \['1_1'\]"):
        ReferencePairs(maps, maps[1:] + maps[1:])


# ------------------------------------------------------------------------------------------------------------------
# a real trace (needs the raytrace extra)
@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    pytest.importorskip("sionna.rt", reason='the raytrace extra is not installed (pip install -e ".[raytrace]")')
    root = tmp_path_factory.mktemp("traced") / "munich"
    assert main(["make-raytraced", "--out", str(root), *TRACE_FLAGS, "--repeat", "1"]) == 0
    return root


def test_an_llvm_that_would_crash_the_tracer_is_refused_in_one_line(traced, tmp_path, monkeypatch, capsys):
    import drjit
    import mitsuba

    if not mitsuba.variant().startswith("llvm"):
        pytest.skip(f"Sionna RT traces on {mitsuba.variant()} here, not on the CPU's LLVM backend")
    monkeypatch.setattr(drjit.detail, "llvm_version", lambda: (15, 0, 6))
    assert main(["make-raytraced", "--out", str(tmp_path / "out"), *TRACE_FLAGS]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Dr.Jit loaded LLVM 15.0.6, which cannot run the tracer" in error
    assert "libllvm19" in error and not (tmp_path / "out").exists()


def _gain_files(root: Path) -> dict:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted((root / "gain").rglob("*.png"))}


def test_traced_folder_reads_like_radiomapseer(traced):
    from radiodiff_vae.data import RadioMapSeer

    meta = json.loads((traced / "meta.json").read_text())
    record = meta["maps"][str(MAP_ID)]
    assert meta["settings"]["config"]["rays_per_tx"] == 5000 and meta["settings"]["config"]["cell_size_m"] == 2.0
    assert meta["simulations"] == ["sionna", "sionna_repeat1"]
    assert record["tile_size_m"] == 64.0 and 0.1 <= record["building_share"] <= 0.7
    for trace in record["traces"].values():
        assert trace["seconds"] > 0 and all(0 < share <= 1 for share in trace["covered_share"])

    dataset = RadioMapSeer(traced, simulation="sionna", split="val", warn_overlap=False)
    assert dataset.map_ids == [MAP_ID] and len(dataset) == 2
    buildings = read_grey_png(traced / "png" / "buildings_complete" / f"{MAP_ID}.png") > 0
    assert 0.1 <= buildings.mean() <= 0.7
    for tx, transmitter in enumerate(record["transmitters"]):
        item = dataset[tx]
        assert item["pixel_values"].shape == (1, SIZE, SIZE) and item["name"] == f"{MAP_ID}_{tx}"
        row, col = transmitter["pixel"]
        assert item["transmitter"][0, row, col] == 1 and not buildings[row, col]  # outdoors
        gain_db = unit_to_db(model_to_unit(item["pixel_values"][0].numpy()))
        assert np.all(gain_db[buildings] == -147)  # buildings at 0, as in RadioMapSeer
        # Under the transmitter the line of sight dominates: free space over the 8.5 m between the 10 m antenna
        # and the 1.5 m plane is -66.4 dB at 5.9 GHz; the ground reflection and the 2 m cell move it a few dB.
        free_space_db = -20 * math.log10(4 * math.pi * 8.5 * 5.9e9 / 299_792_458.0)
        assert abs(gain_db[row, col] - free_space_db) < 6
        # The gain falls with distance: the street cells near the transmitter are stronger than the far ones.
        rows, cols = np.indices(gain_db.shape)
        distance = np.hypot(rows - row, cols - col)
        near, far = ~buildings & (distance <= 4), ~buildings & (distance >= 12)
        assert gain_db[near].mean() > gain_db[far].mean() + 10


def test_repeats_are_independent_traces_of_the_same_transmitters(traced):
    from radiodiff_vae.data import RadioMapSeer

    main_trace = RadioMapSeer(traced, simulation="sionna", split="val", warn_overlap=False)
    repeat = RadioMapSeer(traced, simulation="sionna_repeat1", split="val", warn_overlap=False)
    for tx in range(2):
        a, b = main_trace[tx]["pixel_values"], repeat[tx]["pixel_values"]
        assert main_trace[tx]["transmitter"].equal(repeat[tx]["transmitter"])
        rmse = float((((a - b) / 2) ** 2).mean().sqrt())
        assert 0 < rmse < 0.15, rmse  # other rays, the same physics


def test_same_seed_gives_the_same_files_and_a_rerun_resumes(traced, tmp_path, capsys):
    again = tmp_path / "again"
    assert main(["make-raytraced", "--out", str(again), *TRACE_FLAGS, "--repeat", "1"]) == 0
    assert _gain_files(again) == _gain_files(traced)  # one thread: bit-identical traces

    # A lost repeat is traced again (the same bytes); the files already there are not rewritten.
    lost = again / "gain" / "sionna_repeat1" / f"{MAP_ID}_1.png"
    lost.unlink()
    kept = again / "gain" / "sionna" / f"{MAP_ID}_0.png"
    kept_mtime = kept.stat().st_mtime_ns
    assert main(["make-raytraced", "--out", str(again), *TRACE_FLAGS, "--repeat", "1"]) == 0
    assert _gain_files(again) == _gain_files(traced) and kept.stat().st_mtime_ns == kept_mtime

    # Other settings in the same folder are refused before any trace.
    capsys.readouterr()
    assert main(["make-raytraced", "--out", str(again), *TRACE_FLAGS, "--rays", "6000"]) == 2
    assert "holds another run (rays_per_tx = 5000 there, 6000 now)" in capsys.readouterr().err
    assert _gain_files(again) == _gain_files(traced)


def test_tiles_without_buildings_or_coverage_are_skipped_with_a_message(traced, tmp_path, monkeypatch):
    from radiodiff_vae.data.simulation import raytraced

    real_rasterize, real_trace = raytraced.SceneTracer.rasterize, raytraced.SceneTracer.trace
    calls = {"rasterize": 0, "trace": 0}

    def empty_first_tile(self, center):
        calls["rasterize"] += 1
        buildings, inside = real_rasterize(self, center)
        return (buildings & False, inside) if calls["rasterize"] == 1 else (buildings, inside)

    def no_rays_first_trace(self, tile, transmitters, seed):
        calls["trace"] += 1
        path_gain = real_trace(self, tile, transmitters, seed)
        return path_gain * 0 if calls["trace"] == 1 else path_gain

    monkeypatch.setattr(raytraced.SceneTracer, "rasterize", empty_first_tile)
    monkeypatch.setattr(raytraced.SceneTracer, "trace", no_rays_first_trace)
    messages = []
    config = raytraced.RaytraceConfig(resolution=SIZE, cell_size_m=2.0, rays_per_tx=5000, max_depth=3)
    root = raytraced.write_raytraced_folder(
        tmp_path / "skips", num_maps=1, num_tx=2, config=config, seed=7, show_progress=False, log=messages.append
    )
    # Draw 0 lost its buildings; later draws may fall on Munich's empty outskirts (also skipped, also said).
    assert "no building in it" in messages[0]
    assert sum("rays reached no outdoor cell" in message for message in messages) == 1, messages
    meta = json.loads((root / "meta.json").read_text())
    (skipped,) = meta["skipped"]  # the tile whose rays reached nothing is recorded, so a resume skips it too
    assert 0 < skipped["draw"] < meta["maps"]["1"]["draw"] and calls["trace"] == 2
    assert sorted(path.name for path in (root / "gain" / "sionna").iterdir()) == ["1_0.png", "1_1.png"]


@pytest.mark.slow
def test_training_script_trains_on_the_traced_folder(traced, tmp_path):
    from conftest import reset_accelerate_state

    spec = importlib.util.spec_from_file_location("train_vae_on_raytraced", REPO_ROOT / "examples" / "train_vae.py")
    train_vae = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_vae)
    reset_accelerate_state()
    try:
        args = train_vae.parse_args(
            ["--data_dir", str(traced), "--simulation", "sionna", "--preset", "tiny", "--resolution", str(SIZE)]
            + ["--max_train_steps", "2", "--train_batch_size", "2", "--gradient_accumulation_steps", "1"]
            + ["--num_validation_maps", "2", "--num_validation_images", "1", "--scaling_factor_maps", "2"]
            + ["--perceptual_weight", "0", "--disc_start", "100", "--report_to", "tensorboard"]
            + ["--output_dir", str(tmp_path / "run")]
        )
        code = train_vae.main(args)
    finally:
        reset_accelerate_state()
    assert code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["sample_size"] == SIZE
    assert (tmp_path / "run" / "diffusion_pytorch_model.safetensors").is_file()


def test_evaluate_against_the_repeat_trace(traced, model_dir, tmp_path):
    metrics, a, b = _evaluate_against_reference(
        model_dir, traced, "sionna", "sionna_repeat1", tmp_path / "eval", "validation"
    )
    assert metrics["settings"]["num_images"] == 2 and 0 < metrics["noise_floor"]["rmse"]["mean"] < 0.15
