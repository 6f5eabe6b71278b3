"""Draw construction runs' validation RMSE (dB of path gain) against training time (docs/construction.md's figure).

Reads the TensorBoard logs that ``examples/train_radiodiff.py`` writes: ``validation/rmse_db`` by step, placed at the
step's ``train/training_seconds`` (steps and data loading; start-up, validation and checkpoints not counted), so that
a latent pipeline and the direct predictor compare at equal training time.

Usage::

    python docs/figures/plot_construction_curves.py --run outputs/radiodiff_quickstart "latent pipeline" \\
        --run outputs/radiodiff_direct "direct (pixel space)" --ceiling 4.94 --out docs/images/construction_curves.png
"""

import argparse
from pathlib import Path
from typing import List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from radiodiff_vae.atomic import atomic_path  # noqa: E402
from radiodiff_vae.training.curves import read_scalars  # noqa: E402

RMSE_TAG = "validation/rmse_db"
SECONDS_TAG = "train/training_seconds"


def parse_args(input_args=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", nargs=2, action="append", required=True, metavar=("OUTPUT_DIR", "LABEL"),
        help="A train_radiodiff.py --output_dir and its label in the legend (repeat for several).",
    )  # fmt: skip
    parser.add_argument("--ceiling", type=float, default=None, help="The VAE's ceiling in dB, drawn as a line.")
    parser.add_argument("--out", default="docs/images/construction_curves.png", help="PNG to write.")
    args = parser.parse_args(input_args)
    if not args.out.lower().endswith(".png"):
        parser.error(f"--out must name a .png file, got {args.out}")
    for folder, _ in args.run:
        if not (Path(folder) / "logs").is_dir():
            parser.error(f"--run {folder}: expected a training output folder with logs/, found none")
    return args


def rmse_against_seconds(output_dir: str) -> List[Tuple[float, float]]:
    """``[(training seconds, validation RMSE dB), ...]`` of a run: each validation at the training time of the
    nearest logged step at or before it."""
    scalars = read_scalars(output_dir)
    if RMSE_TAG not in scalars or SECONDS_TAG not in scalars:
        raise SystemExit(f"--run {output_dir}: its logs hold no {RMSE_TAG} / {SECONDS_TAG}")
    seconds = scalars[SECONDS_TAG]
    points = []
    for step, rmse in scalars[RMSE_TAG]:
        before: Optional[float] = None
        for logged_step, value in seconds:
            if logged_step <= step:
                before = value
        if before is not None:
            points.append((before, rmse))
    return points


def main(input_args=None) -> None:
    args = parse_args(input_args)
    figure, axis = plt.subplots(figsize=(7.5, 4.2), constrained_layout=True)
    for index, (folder, label) in enumerate(args.run):
        times, values = zip(*rmse_against_seconds(folder))
        axis.plot(times, values, marker="o", color=f"C{index}", label=label)
    if args.ceiling is not None:
        label = f"VAE ceiling on the test cities ({args.ceiling:.2f} dB)"
        axis.axhline(args.ceiling, color="grey", linestyle="--", label=label)
    axis.set_xlabel("training time (s), steps and data loading")
    axis.set_ylabel("validation RMSE (dB of path gain)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("Construction on unseen synthetic cities against training time")
    with atomic_path(args.out) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
