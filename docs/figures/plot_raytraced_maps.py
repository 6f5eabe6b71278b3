"""Draw ray-traced radio maps of real cities beside synthetic ones (the figures of docs/data.md).

Traces the maps it needs with `radiodiff-vae make-raytraced`'s writer into ``--work_dir/<scene>`` (or resumes a
folder traced before with the same settings), then draws building masks over path gain, and with ``--repeat_out``
one map traced twice with different seeds and their difference (the Monte Carlo noise). Needs the raytrace extra.

Usage::

    python docs/figures/plot_raytraced_maps.py --out docs/images/raytraced_maps.png --scenes munich florence --maps 2 \\
        --rays 1e7 --work_dir raytraced_figure --repeat_out docs/images/raytraced_repeat.png
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from radiodiff_vae.atomic import atomic_path  # noqa: E402
from radiodiff_vae.data.conventions import RADIOMAPSEER_DB_RANGE, unit_to_db  # noqa: E402
from radiodiff_vae.data.items import transmitter_pixel  # noqa: E402
from radiodiff_vae.data.layout import (  # noqa: E402
    BUILDINGS_DIR,
    antenna_path,
    buildings_path,
    gain_path,
    list_map_ids,
    read_grey_png,
)
from radiodiff_vae.data.simulation.raytraced import (  # noqa: E402
    DEFAULT_SIMULATION,
    SCENES,
    RaytraceConfig,
    repeat_simulation,
    write_raytraced_folder,
)
from radiodiff_vae.data.simulation.synthetic import generate_radio_maps  # noqa: E402


def parse_args(input_args=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/images/raytraced_maps.png", help="PNG to write.")
    parser.add_argument("--scenes", nargs="+", default=["munich", "florence"], help="Sionna RT scenes (default 2).")
    parser.add_argument("--maps", type=int, default=2, help="Tiles per scene and synthetic cities (default 2).")
    parser.add_argument("--rays", type=float, default=1e7, help="Rays per transmitter (default 1e7).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of tiles, transmitters, rays and cities (default 0).")
    parser.add_argument("--work_dir", default="raytraced_figure", help="Where the traced folders go (resumable).")
    parser.add_argument("--repeat_out", default=None, help="Also draw one map traced twice, and the difference.")
    args = parser.parse_args(input_args)
    if not 1 <= args.maps <= 3:
        raise SystemExit(f"--maps must be between 1 and 3, got {args.maps}")
    unknown = [scene for scene in args.scenes if scene not in SCENES]
    if unknown or not 1 <= len(args.scenes) <= 3:
        raise SystemExit(f"--scenes takes 1 to 3 of {', '.join(SCENES)}, got {' '.join(args.scenes)}")
    for path in (args.out, args.repeat_out):
        if path is not None and not path.lower().endswith(".png"):
            raise SystemExit(f"--out and --repeat_out must name .png files, got {path}")
    return args


def _hide_ticks(axes) -> None:
    for axis in np.ravel(axes):
        axis.set_xticks([])
        axis.set_yticks([])


def _gain_db(folder: Path, simulation: str, map_id: int) -> np.ndarray:
    return unit_to_db(read_grey_png(gain_path(folder, simulation, map_id, 0)) / 255.0)


def main(input_args=None) -> None:
    args = parse_args(input_args)
    repeat = 1 if args.repeat_out else 0
    columns = []  # (title, buildings (H, W), gain dB (H, W), tx (row, col))
    folders = {}
    for scene in args.scenes:
        folder = Path(args.work_dir) / scene
        config = RaytraceConfig(scene=scene, rays_per_tx=int(args.rays))
        # Only the first scene's maps are traced twice (for --repeat_out).
        repeats = repeat if scene == args.scenes[0] else 0
        write_raytraced_folder(folder, num_maps=args.maps, num_tx=1, config=config, seed=args.seed, repeat=repeats)
        folders[scene] = folder
        for map_id in list_map_ids(folder / BUILDINGS_DIR)[: args.maps]:
            buildings = read_grey_png(buildings_path(folder, map_id)) > 0
            tx = transmitter_pixel(read_grey_png(antenna_path(folder, map_id, 0)))
            columns.append((f"{scene} {map_id}_0", buildings, _gain_db(folder, DEFAULT_SIMULATION, map_id), tx))
    synthetic = generate_radio_maps(range(1, args.maps + 1), num_tx=1, seed=args.seed, resolution=256)
    for index in range(args.maps):
        gain_db = unit_to_db(synthetic["gain"][index, 0].numpy())
        tx = synthetic["tx_pixels"][index, 0].tolist()
        columns.append((f"synthetic {index + 1}_0", synthetic["buildings"][index].numpy(), gain_db, tx))

    low, high = RADIOMAPSEER_DB_RANGE
    figure, axes = plt.subplots(
        2, len(columns), figsize=(2.6 * len(columns), 5.6), squeeze=False, constrained_layout=True
    )
    for column, (title, buildings, gain_db, (row, col)) in enumerate(columns):
        axes[0, column].imshow(buildings, cmap="gray_r", interpolation="nearest")
        axes[0, column].set_title(f"{title}: buildings", fontsize=9)
        image = axes[1, column].imshow(gain_db, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        axes[1, column].plot(col, row, marker="x", color="red", markersize=7)
        axes[1, column].set_title("path gain, tx at x", fontsize=9)
    _hide_ticks(axes)
    figure.colorbar(image, ax=axes[1, :].tolist(), label="path gain (dB); buildings at -147", shrink=0.9)
    figure.suptitle(
        f"256 m x 256 m at 5.9 GHz: Sionna RT ({args.rays:.0e} rays per transmitter, 4 interactions, tx at 10 m) "
        "beside the synthetic generator"
    )
    with atomic_path(args.out) as temporary:
        figure.savefig(temporary, dpi=72, format="png")
    print(f"wrote {args.out}")

    if args.repeat_out:
        _plot_repeat(folders[args.scenes[0]], args)


def _plot_repeat(folder: Path, args: argparse.Namespace) -> None:
    """Trace A, trace B (other seed) and |A - B| of the first map of ``folder``."""
    map_id = list_map_ids(folder / BUILDINGS_DIR)[0]
    buildings = read_grey_png(buildings_path(folder, map_id)) > 0
    traces = [_gain_db(folder, name, map_id) for name in (DEFAULT_SIMULATION, repeat_simulation(DEFAULT_SIMULATION, 1))]
    difference = np.abs(traces[0] - traces[1])
    difference[buildings] = np.nan
    rmse = float(np.sqrt(np.mean(((traces[0] - traces[1]) / 100.0) ** 2)))
    low, high = RADIOMAPSEER_DB_RANGE
    figure, axes = plt.subplots(1, 3, figsize=(11.5, 3.9), squeeze=False, constrained_layout=True)
    for column, (image, title) in enumerate(zip(traces, ("trace A", "trace B (another seed)"))):
        shown = axes[0, column].imshow(image, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        axes[0, column].set_title(f"{folder.name} {map_id}_0, {title}", fontsize=9)
    figure.colorbar(shown, ax=axes[0, :2].tolist(), label="path gain (dB)", shrink=0.9)
    error = axes[0, 2].imshow(difference, cmap="magma", vmin=0, vmax=40, interpolation="nearest")
    axes[0, 2].set_title(f"|A - B|, RMSE {rmse:.3f} on [0, 1] maps", fontsize=9)
    figure.colorbar(error, ax=axes[0, 2], label="dB (clipped at 40)", shrink=0.9)
    _hide_ticks(axes)
    with atomic_path(args.repeat_out) as temporary:
        figure.savefig(temporary, dpi=72, format="png")
    print(f"wrote {args.repeat_out}")


if __name__ == "__main__":
    main()
