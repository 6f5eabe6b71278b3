"""Draw validation PSNR against steps for training runs, each with its resize baseline (docs/training.md's figure).

Reads the TensorBoard logs that ``examples/train_vae.py`` writes (``validation/psnr`` and
``validation/baseline_psnr``, the resize baseline with as many values as the latent, on the same maps), or the
script's console log (a ``.log`` file: its ``step N, ... baseline_psnr B, ... psnr P`` validation lines), which is
all that came back of the GPU runs in docs/results/.

Usage::

    python docs/figures/plot_learning_curves.py --run outputs/quickstart "quick start" \\
        --run outputs/small_cpu "small_cpu.yaml" --out docs/images/learning_curves.png
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from radiodiff_vae.atomic import atomic_path  # noqa: E402
from radiodiff_vae.training.curves import BASELINE_TAG, MODEL_TAG, read_console_log, read_scalars  # noqa: E402


def parse_args(input_args=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", nargs=2, action="append", required=True, metavar=("OUTPUT_DIR", "LABEL"),
        help="A training run's --output_dir (or its console .log) and its label in the legend (repeat for several).",
    )  # fmt: skip
    parser.add_argument("--out", default="docs/images/learning_curves.png", help="PNG to write.")
    args = parser.parse_args(input_args)
    if not args.out.lower().endswith(".png"):
        parser.error(f"--out must name a .png file, got {args.out}")
    for folder, _ in args.run:
        if not (Path(folder) / "logs").is_dir() and not (folder.endswith(".log") and Path(folder).is_file()):
            parser.error(f"--run {folder}: expected a training output folder with logs/, found none")
    return args


def main(input_args=None) -> None:
    args = parse_args(input_args)
    figure, axis = plt.subplots(figsize=(7.5, 4.2), constrained_layout=True)
    for index, (folder, label) in enumerate(args.run):
        scalars = read_console_log(folder) if folder.endswith(".log") else read_scalars(folder)
        if MODEL_TAG not in scalars or BASELINE_TAG not in scalars:
            raise SystemExit(f"--run {folder}: its logs hold no {MODEL_TAG} / {BASELINE_TAG} (run without validation?)")
        color = f"C{index}"
        steps, values = zip(*scalars[MODEL_TAG])
        axis.plot(steps, values, marker="o", color=color, label=f"{label}: model")
        baseline = scalars[BASELINE_TAG][-1][1]  # the same maps at every validation: one value
        axis.axhline(baseline, color=color, linestyle="--", label=f"{label}: resize baseline ({baseline:.2f} dB)")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("validation PSNR (dB), maps in [0, 1]")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("Validation PSNR of unseen synthetic cities against the resize baseline")
    with atomic_path(args.out) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
