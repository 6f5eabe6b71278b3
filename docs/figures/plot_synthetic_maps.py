"""Draw a few synthetic radio maps beside their building masks (the figure of docs/data.md).

Usage::

    python docs/figures/plot_synthetic_maps.py --out docs/images/synthetic_maps.png --maps 4 --seed 0
"""

import argparse

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from radiodiff_vae.data.conventions import RADIOMAPSEER_DB_RANGE, unit_to_db  # noqa: E402
from radiodiff_vae.atomic import atomic_path  # noqa: E402
from radiodiff_vae.data.simulation.synthetic import generate_radio_maps  # noqa: E402


def parse_args(input_args=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/images/synthetic_maps.png", help="PNG to write.")
    parser.add_argument("--maps", type=int, default=4, help="Number of cities, one column each (default 4).")
    parser.add_argument("--seed", type=int, default=0, help="Generator seed (default 0).")
    parser.add_argument("--resolution", type=int, default=256, help="Pixels per side (default 256).")
    args = parser.parse_args(input_args)
    if not 1 <= args.maps <= 8:
        raise SystemExit(f"--maps must be between 1 and 8, got {args.maps}")
    if not args.out.lower().endswith(".png"):
        raise SystemExit(f"--out must name a .png file, got {args.out}")
    return args


def main(input_args=None) -> None:
    args = parse_args(input_args)
    maps = generate_radio_maps(range(1, args.maps + 1), num_tx=1, seed=args.seed, resolution=args.resolution)
    low, high = RADIOMAPSEER_DB_RANGE
    figure, axes = plt.subplots(2, args.maps, figsize=(3.2 * args.maps, 6.6), squeeze=False, constrained_layout=True)
    for column in range(args.maps):
        row, col = maps["tx_pixels"][column, 0].tolist()
        axes[0, column].imshow(maps["buildings"][column], cmap="gray_r", interpolation="nearest")
        axes[0, column].set_title(f"map {column + 1}: buildings")
        image = axes[1, column].imshow(
            unit_to_db(maps["gain"][column, 0]), cmap="viridis", vmin=low, vmax=high, interpolation="nearest"
        )
        axes[1, column].plot(col, row, marker="x", color="red", markersize=8)
        axes[1, column].set_title("path gain, tx at x")
        for axis in axes[:, column]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.colorbar(image, ax=axes[1, :].tolist(), label="path gain (dB); buildings at -147", shrink=0.9)
    figure.suptitle(f"Synthetic 256 m x 256 m cities, 5.9 GHz, seed {args.seed}")

    with atomic_path(args.out) as temporary:
        figure.savefig(temporary, dpi=80, format="png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
