#!/usr/bin/env python
"""The report's model at the report's size on one GPU: train, score against the resize baseline, draw the curve.

Three parts, each writing its numbers and figures under ``--output_dir`` as it goes:

* ``recipe``: ``examples/train_vae.py --config examples/configs/radiodiff_vae_gpu.yaml`` (the report's preset and
  loss, 320x320 synthetic cities) for as many steps as fit ``--train_seconds`` at the step time that
  ``benchmark_gpu.py`` measured (``--step_json``), phase 2 over the last 10% of them; then ``radiodiff-vae
  evaluate`` on unseen synthetic cities (other seed) and on a ray-traced folder (``--raytraced_dir``, from
  ``radiodiff-vae make-raytraced``), both against the resize baseline with as many values as the latent; the
  learning curve (gap to the baseline against steps and seconds); the model card rewritten with those numbers.
* ``compare``: the 8x layout with 3 latent channels (the report), the original code's 4x layout
  (``radiodiff-ldm-f4``) and the 8x layout with 8 latent channels, each trained for the same GPU time
  (``--compare_seconds``; steps from each layout's measured step time), scored on the same unseen cities.
* ``precision``: the report's preset trained in bf16 and in fp32 for the same steps (``--precision_steps``, at
  ``--precision_resolution``), validation PSNR and loss curves side by side.
* ``construction``: RadioDiff's second stage on that VAE (the ``recipe`` part's, else ``--vae_dir``):
  ``examples/train_radiodiff.py --config examples/configs/radiodiff_gpu.yaml`` for ``--construction_seconds`` of
  training, then the direct baseline (``--direct``) for the same training time; ``radiodiff-vae
  evaluate-construction`` of both on unseen synthetic cities (other seed, cities 10001..) against the log-distance
  fit and the VAE's ceiling, the pipeline at 1, 2, 4 and 10 sampling steps (quality and maps per second), and on the
  ray-traced folder with the synthetic run's fit; ``construction.json`` / ``construction.md`` and the validation
  curves of both runs against training time.

``--dry_run`` runs all of it on the CPU at toy sizes (``tiny`` presets, 32x32 maps, a few steps, LPIPS off), which
is how the tests run it. Without ``--step_json`` the step counts come from ``--step_seconds``.

Usage::

    python benchmarks/gpu_recipe.py --parts recipe --output_dir gpu-recipe --step_json gpu-check/step_bf16.json \\
        --train_seconds 240 --raytraced_dir raytraced_eval
    python benchmarks/gpu_recipe.py --parts compare precision --output_dir gpu-recipe --bench_dir gpu-check
    python benchmarks/gpu_recipe.py --parts construction --output_dir gpu-recipe --vae_dir gpu-recipe/recipe \\
        --construction_seconds 180 --raytraced_dir raytraced_eval
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPE_CONFIG = ROOT / "examples" / "configs" / "radiodiff_vae_gpu.yaml"
# Cities for scoring: another seed than training's (42 in the config), so no city is shared with training.
EVALUATION_SEED = 2027
# The comparison's layouts: (label, train_vae.py flags, benchmark_gpu.py part with its step time)
LAYOUTS = [
    ("8x, 3 channels (report)", ["--preset", "radiodiff-vae"], "step_bf16"),
    ("4x, 3 channels (radiodiff-ldm-f4)", ["--preset", "radiodiff-ldm-f4"], "step_ldm_f4_bf16"),
    ("8x, 8 channels", ["--preset", "radiodiff-vae", "--latent_channels", "8"], "step_latent8_bf16"),
]
# The construction part: its training config, the direct baseline's UNet in pixel space at 320x320 (four levels down
# to 40x40, the latent's size; no attention, as RadioUNet), the sampling steps of the steps-vs-quality table.
CONSTRUCTION_CONFIG = ROOT / "examples" / "configs" / "radiodiff_gpu.yaml"
DIRECT_UNET = ["--unet_block_out_channels", "32", "64", "128", "256", "--no-attention"]
CONSTRUCTION_STEPS = (1, 2, 4, 10)
CONSTRUCTION_METRICS = ("rmse_db", "nmse", "rmse", "psnr", "ssim")
TABLE_HEADER = "| {first} | RMSE dB | NMSE | RMSE | PSNR dB | SSIM | maps/s |"
TABLE_RULE = "|---|---|---|---|---|---|---|"
# Several `radiodiff-vae` commands in one interpreter (start-up once): argv lists as JSON, stops at the first failure.
RUN_COMMANDS = (
    "import json, sys; from radiodiff_vae.cli import main; "
    "sys.exit(next((code for code in map(main, json.loads(sys.argv[1])) if code), 0))"
)
# What each part prints of its results (the rest is in summary.json).
SUMMARY_KEYS = ("error", "unseen_cities", "raytraced", "rows", "steps", "part_seconds")
# Validation, logging and EMA cost on top of the optimizer steps' own time.
OVERHEAD = 1.12


def parse_args(input_args: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="Folder for the runs, scores, figures and summary.")
    parser.add_argument(
        "--parts", nargs="+", default=["recipe"], choices=["recipe", "compare", "precision", "construction"]
    )
    parser.add_argument("--train_seconds", type=float, default=240.0, help="Recipe: seconds of optimizer steps.")
    parser.add_argument("--step_json", default=None, help="Recipe: benchmark_train_step.py's JSON (phase-1 time).")
    parser.add_argument("--step_seconds", type=float, default=0.1, help="Recipe: step time without --step_json.")
    parser.add_argument("--bench_dir", default=None, help="Compare: benchmark_gpu.py's folder (step times).")
    parser.add_argument("--compare_seconds", type=float, default=60.0, help="Compare: GPU seconds per layout.")
    parser.add_argument("--precision_steps", type=int, default=300, help="Precision: steps of each run.")
    parser.add_argument("--precision_resolution", type=int, default=128, help="Precision: map size.")
    parser.add_argument(
        "--vae_dir", default=None, help="Construction: the VAE (train_vae.py folder) when --parts has no recipe."
    )
    parser.add_argument(
        "--construction_seconds",
        type=float,
        default=None,
        help="Construction: training seconds of the pipeline, and of the direct baseline (default --train_seconds).",
    )
    parser.add_argument(
        "--construction_step_seconds",
        type=float,
        default=0.09,
        help="Construction: the pipeline's step time the cosine schedule's length is planned with (a guess until a "
        "run's summary records seconds_per_step; the time limit stops a slower run).",
    )
    parser.add_argument(
        "--direct_step_seconds", type=float, default=0.15, help="Construction: the same for the direct baseline."
    )
    parser.add_argument(
        "--construction_eval_maps", type=int, default=256, help="Construction: unseen synthetic cities to score."
    )
    parser.add_argument("--raytraced_dir", default=None, help="A make-raytraced folder to score the models on.")
    parser.add_argument(
        "--raytraced_simulation", default="sionna", help="The simulation folder of --raytraced_dir (under gain/)."
    )
    parser.add_argument("--eval_maps", type=int, default=512, help="Unseen synthetic cities to score.")
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="Compare/precision: run the trainings at once (they share the GPU: on the H200 five at once, beside "
        "their data generation, ran about three times slower than their step times promised).",
    )
    parser.add_argument("--dry_run", action="store_true", help="CPU, toy sizes: checks the plumbing.")
    args = parser.parse_args(input_args)
    if args.construction_seconds is None:
        args.construction_seconds = args.train_seconds
    for name in ("train_seconds", "step_seconds", "compare_seconds", "construction_seconds",
                 "construction_step_seconds", "direct_step_seconds"):  # fmt: skip
        if not getattr(args, name) > 0:
            parser.error(f"--{name} must be > 0, got {getattr(args, name)}")
    for name in ("eval_maps", "construction_eval_maps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if "compare" in args.parts and args.bench_dir is None and not args.dry_run:
        parser.error("--parts compare needs --bench_dir (benchmark_gpu.py's output with the layouts' step times)")
    if "recipe" in args.parts and "construction" in args.parts[: args.parts.index("recipe")]:
        parser.error("--parts: recipe must come before construction (the construction stage trains on its VAE)")
    if "construction" in args.parts and not args.dry_run and "recipe" not in args.parts and args.vae_dir is None:
        parser.error("--parts construction needs a VAE: --parts recipe construction, or --vae_dir (train_vae.py's)")
    for name in ("vae_dir", "raytraced_dir"):
        folder = getattr(args, name)
        if folder is not None and not Path(folder).is_dir():
            parser.error(f"--{name} must be a folder, got {folder} (no such folder)")
    return args


# ------------------------------------------------------------------------------------------------------------------
# running the package's commands
def train(
    output_dir: Path,
    arguments: List[str],
    log: Path,
    wait: bool = True,
    script: str = "train_vae.py",
    config: Path = RECIPE_CONFIG,
) -> Tuple[subprocess.Popen, Path]:
    """Starts ``examples/<script> --config <config>`` (``train_vae.py``, ``radiodiff_vae_gpu.yaml``) with
    ``arguments`` winning, its output in ``log``; waits for it (``finish``) unless ``wait`` is False. Returns the
    process and its log."""
    command = [sys.executable, str(ROOT / "examples" / script), "--config", str(config)]
    command += ["--output_dir", str(output_dir), *arguments]
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("# " + " ".join(command) + "\n")
    with open(log, "a", encoding="utf-8") as handle:  # the child keeps its own copy of the descriptor
        run = (subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT), log)
    if wait:
        finish(run)
    return run


def finish(run: Tuple[subprocess.Popen, Path]) -> None:
    """Waits for a training process started by ``train``; raises a RuntimeError naming its log if it failed."""
    process, log = run
    code = process.wait()
    if code != 0:
        raise RuntimeError(f"{Path(process.args[1]).name} exited {code}; see {log}")


def evaluate(model: Path, output_dir: Path, data: List[str], log: Path) -> Dict[str, object]:
    """``radiodiff-vae evaluate`` (through the package's CLI entry point); returns the model-vs-baseline numbers."""
    command = [sys.executable, "-c", "import sys; from radiodiff_vae.cli import main; sys.exit(main())"]
    command += ["evaluate", str(model), "--output_dir", str(output_dir), "--overwrite", *data]
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("# " + " ".join(command) + "\n")
        handle.flush()
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, check=True)
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    baseline = metrics["baseline"]
    return {
        "maps": metrics["settings"]["num_images"],
        "psnr": metrics["psnr"]["mean"],
        "ssim": metrics["ssim"]["mean"],
        "baseline": baseline["method"],
        "baseline_psnr": baseline["psnr"]["mean"],
        "baseline_ssim": baseline["ssim"]["mean"],
        "psnr_gap_db": baseline["psnr_gap_db"]["mean"],
        "ssim_gap": baseline["ssim_gap"],
        "maps_where_model_wins": baseline["maps_where_model_wins"],
        "latent_values_per_map": baseline["latent_values_per_map"],
    }


def unseen_cities(args: argparse.Namespace, resolution: int) -> List[str]:
    maps = 8 if args.dry_run else args.eval_maps
    return ["--synthetic_num_maps", str(maps), "--synthetic_num_tx", "1", "--synthetic_seed", str(EVALUATION_SEED),
            "--resolution", str(resolution)] + (["--device", "cpu"] if args.dry_run else [])  # fmt: skip


def toy_flags(args: argparse.Namespace) -> List[str]:
    """What turns a run into the dry run's: the `tiny` preset, 32x32 maps, LPIPS off, a handful of cities."""
    if not args.dry_run:
        return []
    return ["--preset", "tiny", "--resolution", "32", "--synthetic_num_maps", "8", "--synthetic_num_workers", "0",
            "--num_validation_maps", "4", "--perceptual_weight", "0", "--disc_base_channels", "16",
            "--mixed_precision", "no", "--dataloader_num_workers", "0"]  # fmt: skip


def phase_flags(steps: int) -> List[str]:
    """Steps, phase 2 over the last 10%, eight validations, one checkpoint at the end."""
    return ["--max_train_steps", str(steps), "--disc_start", str(max(1, int(steps * 0.9))),
            "--validation_steps", str(max(1, steps // 8)), "--checkpointing_steps", str(steps),
            "--lr_warmup_steps", str(min(100, steps // 10))]  # fmt: skip


def phase1_seconds(path: Path) -> float:
    """The phase-1 step time in a benchmark_train_step.py JSON file."""
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    return next(row["seconds"] for row in rows if row["phase"] == 1)


# ------------------------------------------------------------------------------------------------------------------
# figures
def gap_curve(run: Path) -> List[tuple]:
    """``[(step, seconds since the first logged event, gap dB), ...]`` of a run's validations."""
    from radiodiff_vae.training.curves import BASELINE_TAG, MODEL_TAG, read_scalars

    scalars = read_scalars(str(run), wall_time=True)
    start = min(point[2] for points in scalars.values() for point in points)
    baseline = {step: value for step, value, _ in scalars[BASELINE_TAG]}
    return [
        (step, wall - start, value - baseline[step]) for step, value, wall in scalars[MODEL_TAG] if step in baseline
    ]


def draw_curves(curves: Dict[str, List[tuple]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for label, points in curves.items():
        steps, seconds, gaps = zip(*points)
        axes[0].plot(steps, gaps, marker="o", label=label)
        axes[1].plot(seconds, gaps, marker="o", label=label)
    for axis, name in zip(axes, ("optimizer step", "seconds since the run's first log (start-up included)")):
        axis.axhline(0, color="grey", linestyle="--", linewidth=1)
        axis.set_xlabel(name)
        axis.set_ylabel("validation PSNR gap to the resize baseline (dB)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=90)
    plt.close(figure)


# ------------------------------------------------------------------------------------------------------------------
# the parts
def run_recipe(args: argparse.Namespace, out: Path) -> Dict[str, object]:
    step_seconds = args.step_seconds
    if args.step_json and Path(args.step_json).is_file():
        step_seconds = phase1_seconds(Path(args.step_json))
    elif args.step_json:
        print(f"[gpu_recipe] {args.step_json} is missing: planning with --step_seconds {step_seconds}", flush=True)
    steps = 8 if args.dry_run else max(50, int(args.train_seconds / (step_seconds * OVERHEAD)))
    run = out / "recipe"
    start = time.perf_counter()
    train(run, phase_flags(steps) + toy_flags(args), out / "recipe_train.log")
    seconds = time.perf_counter() - start
    resolution = 32 if args.dry_run else 320
    result: Dict[str, object] = {
        "steps": steps, "planned_step_seconds": step_seconds, "train_command_seconds": round(seconds, 1),
        "training_args": json.loads((run / "training_args.json").read_text(encoding="utf-8")),
    }  # fmt: skip
    result["unseen_cities"] = evaluate(run, out / "eval_unseen", unseen_cities(args, resolution), out / "eval.log")
    if args.raytraced_dir:
        data = ["--data_dir", args.raytraced_dir, "--simulation", args.raytraced_simulation,
                "--resolution", str(resolution)] + (["--device", "cpu"] if args.dry_run else [])  # fmt: skip
        result["raytraced"] = evaluate(run, out / "eval_raytraced", data, out / "eval_raytraced.log")
    curve = gap_curve(run)
    result["curve"] = curve
    draw_curves({"radiodiff-vae, radiodiff_vae_gpu.yaml": curve}, out / "recipe_curve.png",
                "The report's model at 320x320 on synthetic cities: gap to resizing with as many values")  # fmt: skip
    rewrite_card(run, result)
    return result


def rewrite_card(run: Path, result: Dict[str, object]) -> None:
    """The model card with the scores on unseen cities (and ray-traced maps) against the resize baseline."""
    from radiodiff_vae import RadioVAE
    from radiodiff_vae.hub import save_model_card

    unseen = result["unseen_cities"]
    lines = [
        f"Trained with `examples/train_vae.py --config examples/configs/radiodiff_vae_gpu.yaml` for {result['steps']} "
        f"steps ({result['train_command_seconds']:.0f} s for the whole command). On {unseen['maps']} unseen synthetic "
        f"cities: {unseen['psnr']:.2f} dB PSNR against {unseen['baseline_psnr']:.2f} dB for the resize baseline "
        f"({unseen['baseline']}), a gap of {unseen['psnr_gap_db']:+.2f} dB, better on "
        f"{unseen['maps_where_model_wins']} of {unseen['maps']} maps."
    ]
    if "raytraced" in result:
        traced = result["raytraced"]
        lines.append(
            f"On {traced['maps']} ray-traced maps of real city centres (`radiodiff-vae make-raytraced`): "
            f"{traced['psnr']:.2f} dB against {traced['baseline_psnr']:.2f} dB ({traced['psnr_gap_db']:+.2f} dB), "
            f"better on {traced['maps_where_model_wins']} of {traced['maps']}."
        )
    vae = RadioVAE.from_pretrained(run)
    sample = run / "sample.png"
    save_model_card(
        run, vae, training_args=result["training_args"],
        metrics={"psnr": unseen["psnr"], "ssim": unseen["ssim"]},
        baseline={"method": unseen["baseline"], "psnr": unseen["baseline_psnr"], "ssim": unseen["baseline_ssim"]},
        sample_image=sample if sample.is_file() else None, description=" ".join(lines),
        eval_dataset="synthetic", eval_split=f"{unseen['maps']} unseen cities (seed {EVALUATION_SEED})",
    )  # fmt: skip


def run_compare(args: argparse.Namespace, out: Path) -> Dict[str, object]:
    rows, processes = [], []
    for index, (label, flags, part) in enumerate(LAYOUTS):
        if args.dry_run:  # the 4x layout's stand-in is tiny-f4 (the report's layout with two downsamplings)
            step_seconds, steps = 1.0, 3
            flags = ["--preset", "tiny-f4" if "ldm-f4" in label else "tiny"] + flags[2:]
        else:
            step_seconds = phase1_seconds(Path(args.bench_dir) / f"{part}.json")
            steps = max(20, int(args.compare_seconds / step_seconds))
        run = out / f"compare_{index}"
        flags = phase_flags(steps) + toy_flags(args) + flags  # the layout's flags last: they win
        process = train(run, flags, out / f"compare_{index}.log", wait=not args.concurrent)
        processes.append(process)
        rows.append({"layout": label, "steps": steps, "step_seconds": step_seconds,
                     "gpu_seconds": round(steps * step_seconds, 1), "run": str(run)})  # fmt: skip
    for process in processes:
        if args.concurrent:
            finish(process)
    resolution = 32 if args.dry_run else 320
    for index, row in enumerate(rows):
        row.update(evaluate(Path(row["run"]), out / f"eval_compare_{index}", unseen_cities(args, resolution),
                            out / f"eval_compare_{index}.log"))  # fmt: skip
    draw_curves({row["layout"]: gap_curve(Path(row["run"])) for row in rows}, out / "compare_curves.png",
                "Latent layouts at the same GPU time: gap to resizing with as many values")  # fmt: skip
    return {"rows": rows}


def run_precision(args: argparse.Namespace, out: Path) -> Dict[str, object]:
    steps = 3 if args.dry_run else args.precision_steps
    resolution = 32 if args.dry_run else args.precision_resolution
    precisions = ["no", "bf16"]
    runs, processes = {}, []
    for precision in precisions:
        run = out / f"precision_{precision}"
        # the precision last: it wins over toy_flags' fp32
        flags = phase_flags(steps) + toy_flags(args) + ["--resolution", str(resolution), "--mixed_precision", precision]
        processes.append(train(run, flags, out / f"precision_{precision}.log", wait=not args.concurrent))
        runs[precision] = run
    for process in processes:
        if args.concurrent:
            finish(process)
    curves = {("fp32" if p == "no" else p): gap_curve(run) for p, run in runs.items()}
    draw_curves(
        curves, out / "precision_curves.png", f"bf16 against fp32, same {steps} steps at {resolution}x{resolution}"
    )
    from radiodiff_vae.training.curves import read_scalars

    losses = {name: read_scalars(str(run)).get("train/rec", []) for name, run in zip(curves, runs.values())}
    return {"steps": steps, "resolution": resolution, "gap_curves": curves, "train_rec_loss": losses}


# ------------------------------------------------------------------------------------------------------------------
# the construction stage
def construction_vae(args: argparse.Namespace, out: Path) -> Tuple[Path, str]:
    """The first stage the construction part trains on, and where it came from: the ``recipe`` part's model when
    that part ran in this call and succeeded, else ``--vae_dir``; in a dry run without either, a tiny VAE trained
    as the recipe's dry run trains one."""
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    if "recipe" in args.parts and "error" not in summary.get("recipe", {"error": "did not run"}):
        return out / "recipe", "the recipe part (radiodiff_vae_gpu.yaml)"
    if args.vae_dir is not None:
        return Path(args.vae_dir), "--vae_dir"
    if not args.dry_run:
        raise RuntimeError("the recipe part failed and no --vae_dir was given: the construction stage needs a VAE")
    vae = out / "construction_vae"
    # phase 1 only (the discriminator starts after the last step): the construction stage needs a latent, not a GAN
    train(vae, phase_flags(2) + toy_flags(args) + ["--disc_start", "1000"], out / "construction_vae.log")
    return vae, "a tiny VAE trained for the dry run"


def construction_toy_flags(args: argparse.Namespace, direct: bool = False) -> List[str]:
    """The dry run's sizes for train_radiodiff.py: 32x32 maps, 8 cities x 2 transmitters, a UNet of 16/32 channels
    (8/16 for the direct one), 8 ray samples, fp32, batch 4."""
    if not args.dry_run:
        return []
    unet = ["--unet_block_out_channels", "8", "16"] if direct else ["--unet_block_out_channels", "16", "32"]
    return ["--resolution", "32", "--synthetic_num_maps", "8", "--synthetic_num_tx", "2", "--synthetic_num_workers",
            "0", "--dataloader_num_workers", "0", "--num_validation_maps", "4", "--num_validation_images", "2",
            "--layers_per_block", "1", "--no-attention", "--city_channels", "8", "--city_block_out_channels", "8",
            "8", "16", "--ray_samples", "8", "--train_batch_size", "4", "--mixed_precision", "no"] + unet  # fmt: skip


def construction_plan(steps: int, seconds: float) -> List[str]:
    """Train for ``steps`` (the cosine's length) or ``seconds`` of training, whichever ends first; eight
    validations, one checkpoint at the end (its marker holds the steps and seconds the run reached)."""
    return ["--max_train_steps", str(steps), "--max_train_seconds", str(seconds),
            "--lr_warmup_steps", str(min(300, steps // 10)), "--validation_steps", str(max(1, steps // 8)),
            "--checkpointing_steps", str(steps), "--checkpoints_total_limit", "1",
            "--logging_steps", str(max(1, min(50, steps // 10)))]  # fmt: skip


def construction_run_record(run: Path, planned_steps: int, command_seconds: float) -> Dict[str, object]:
    """What a train_radiodiff.py run reached: steps and training seconds (its last checkpoint's marker), what
    stopped it, the validation RMSE (dB of path gain) by step."""
    from radiodiff_vae.training import checkpointing
    from radiodiff_vae.training.curves import read_scalars

    checkpoints = checkpointing.list_checkpoints(str(run))
    if not checkpoints:
        raise RuntimeError(f"{run} holds no complete checkpoint: the run did not finish")
    marker = checkpointing.read_checkpoint_marker(checkpoints[-1][1])
    steps, seconds = int(marker["step"]), float(marker["metadata"]["training_seconds"])
    curve = read_scalars(str(run)).get("validation/rmse_db", [])
    return {
        "run": str(run), "planned_steps": planned_steps, "steps": steps, "training_seconds": round(seconds, 2),
        "seconds_per_step": seconds / steps, "stopped_by": "time" if steps < planned_steps else "steps",
        "command_seconds": round(command_seconds, 1), "validation_rmse_db": [list(point) for point in curve],
    }  # fmt: skip


def read_construction(output_dir: Path) -> Dict[str, object]:
    """The means of an ``evaluate-construction`` run's ``metrics.json``, by method, with the models' maps per second."""
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    methods = {}
    for method in metrics["methods"]:
        block = metrics[method]
        methods[method] = {key: block[key] for key in CONSTRUCTION_METRICS}
        if "maps_per_second" in block:
            methods[method]["maps_per_second"] = block["maps_per_second"]
    return {
        "maps": metrics["num_maps"], "data": metrics["data"], "num_inference_steps": metrics["num_inference_steps"],
        "device": metrics["settings"]["device"], "methods": methods,
    }  # fmt: skip


def construction_evaluations(args: argparse.Namespace, out: Path, pipeline: Path, direct: Path) -> List[tuple]:
    """``(name, steps, output folder, argv)`` of every evaluate-construction run: unseen synthetic cities at one step
    with the direct model (it fits the log-distance line), at the other steps of the table with that fit, and the
    ray-traced folder with it too."""
    resolution = 32 if args.dry_run else 320
    maps = 8 if args.dry_run else args.construction_eval_maps
    run = ["--batch_size", "8", "--device", "cpu", "--fit_maps", "16"] if args.dry_run else ["--batch_size", "32"]
    unseen = ["--synthetic_num_maps", str(maps), "--synthetic_num_tx", "1", "--synthetic_seed", str(EVALUATION_SEED),
              "--synthetic_first_map", "10001", "--resolution", str(resolution)]  # fmt: skip
    fit = ["--log_distance_fit", str(out / "construction_eval_unseen" / "metrics.json")]

    def command(folder: Path, steps: int, data: List[str], extra: List[str]) -> List[str]:
        return ["evaluate-construction", str(pipeline), "--output_dir", str(folder), "--overwrite",
                "--num_inference_steps", str(steps), *run, *data, *extra]  # fmt: skip

    folder = out / "construction_eval_unseen"
    runs = [("unseen_cities", 1, folder, command(folder, 1, unseen, ["--direct_model", str(direct)]))]
    for steps in CONSTRUCTION_STEPS[1:]:
        folder = out / f"construction_eval_steps_{steps}"
        runs.append((f"steps_{steps}", steps, folder, command(folder, steps, unseen, fit + ["--no_figure"])))
    if args.raytraced_dir:
        folder = out / "construction_eval_raytraced"
        data = ["--data_dir", args.raytraced_dir, "--simulation", args.raytraced_simulation, "--resolution",
                str(resolution)]  # fmt: skip
        runs.append(("raytraced", 1, folder, command(folder, 1, data, fit + ["--direct_model", str(direct)])))
    return runs


def run_construction(args: argparse.Namespace, out: Path) -> Dict[str, object]:
    seconds = 600.0 if args.dry_run else args.construction_seconds  # the dry run stops by steps
    vae, vae_source = construction_vae(args, out)
    result: Dict[str, object] = {
        "vae": str(vae), "vae_source": vae_source, "construction_seconds": seconds,
        "resolution": 32 if args.dry_run else 320,
    }  # fmt: skip
    progress = out / "construction.json"  # what is done so far: a failed evaluation keeps the trainings' records

    def save() -> None:
        progress.write_text(json.dumps(result, indent=1), encoding="utf-8")

    runs = {}
    for name, step_seconds, flags in (
        ("pipeline", args.construction_step_seconds, construction_toy_flags(args)),
        ("direct", args.direct_step_seconds, ["--direct"] + (construction_toy_flags(args, True) or DIRECT_UNET)),
    ):
        steps = 4 if args.dry_run else max(100, int(seconds / step_seconds))
        run = out / f"construction_{name}"
        if run.is_dir():  # an earlier call's run: its checkpoints would be read as this one's
            shutil.rmtree(run)
        start = time.perf_counter()
        # the toy sizes and the direct flags come after the plan, the VAE last: later flags win
        flags = construction_plan(steps, seconds) + flags + ["--pretrained_vae", str(vae)]
        train(run, flags, out / f"construction_{name}.log", script="train_radiodiff.py", config=CONSTRUCTION_CONFIG)
        result[f"{name}_run"] = construction_run_record(run, steps, time.perf_counter() - start)
        runs[name] = run
        save()

    evaluations = construction_evaluations(args, out, runs["pipeline"], runs["direct"])
    command = [sys.executable, "-c", RUN_COMMANDS, json.dumps([argv for *_, argv in evaluations])]
    log = out / "construction_eval.log"
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("".join("# radiodiff-vae " + " ".join(argv) + "\n" for *_, argv in evaluations))
        handle.flush()
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, check=True)
    scores = {name: read_construction(folder) for name, _, folder, _ in evaluations}
    result["unseen_cities"] = scores["unseen_cities"]
    result["steps"] = []
    for name, steps, _, _ in evaluations[: len(CONSTRUCTION_STEPS)]:
        row = scores[name]["methods"]["pipeline"]
        result["steps"].append({"num_inference_steps": steps, **row})
    if "raytraced" in scores:
        result["raytraced"] = scores["raytraced"]
    save()
    draw_construction_curves(result, out / "construction_curves.png")
    write_construction_md(result, out / "construction.md")
    return result


def draw_construction_curves(result: Dict[str, object], path: Path) -> None:
    """Validation RMSE of the pipeline and of the direct baseline against training time (step x the run's mean step
    time): where the two cross, if they do."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for name, label in (("pipeline", "RadioDiffPipeline (latent, 1 step)"), ("direct", "direct UNet (pixels)")):
        record = result[f"{name}_run"]
        if record["validation_rmse_db"]:
            steps, values = zip(*record["validation_rmse_db"])
            axis.plot([step * record["seconds_per_step"] for step in steps], values, marker="o", label=label)
    axis.set_xlabel("training seconds (step x the run's mean step time)")
    axis.set_ylabel("validation RMSE (dB of path gain)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("Construction at the same training time, validation cities")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_construction_md(result: Dict[str, object], path: Path) -> None:
    """The part's tables: the trainings, each data set's methods, the steps against quality and throughput."""
    import torch

    machine = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "the CPU"
    side = result["resolution"]
    lines = [f"# The construction stage at {side}x{side} on {machine}", ""]
    lines += [f"VAE: {result['vae']} ({result['vae_source']}); at most {result['construction_seconds']:g} s of "
              "training each.", "",
              "| run | steps (planned) | stopped by | training s | s / step | final validation RMSE dB |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name in ("pipeline", "direct"):
        record = result[f"{name}_run"]
        final = record["validation_rmse_db"][-1][1] if record["validation_rmse_db"] else float("nan")
        lines.append(
            f"| {name} | {record['steps']} ({record['planned_steps']}) | {record['stopped_by']} | "
            f"{record['training_seconds']:.1f} | {record['seconds_per_step']:.4f} | {final:.2f} |"
        )
    for key in ("unseen_cities", "raytraced"):
        if key not in result:
            continue
        scores = result[key]
        steps = scores["num_inference_steps"]
        lines += ["", f"{scores['maps']} maps: {scores['data']}; the pipeline at {steps} step(s), {scores['device']}.",
                  "", TABLE_HEADER.format(first="method"), TABLE_RULE]  # fmt: skip
        for method, row in scores["methods"].items():
            lines.append(f"| {method} | {table_cells(row)} |")
    lines += ["", "Steps against quality (unseen synthetic cities):", "", TABLE_HEADER.format(first="steps"),
              TABLE_RULE]  # fmt: skip
    for row in result["steps"]:
        lines.append(f"| {row['num_inference_steps']} | {table_cells(row)} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def table_cells(row: Dict[str, object]) -> str:
    """RMSE dB | NMSE | RMSE | PSNR | SSIM | maps/s of one method (strings for non-finite values pass through)."""
    cells = []
    for key, form in (("rmse_db", ".2f"), ("nmse", ".4f"), ("rmse", ".4f"), ("psnr", ".2f"), ("ssim", ".3f"),
                      ("maps_per_second", ".1f")):  # fmt: skip
        value = row.get(key)
        cells.append("" if value is None else format(value, form) if isinstance(value, (int, float)) else str(value))
    return " | ".join(cells)


def main(input_args: Optional[List[str]] = None) -> int:
    args = parse_args(input_args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    parts = {"recipe": run_recipe, "compare": run_compare, "precision": run_precision, "construction": run_construction}
    failed = False
    for name in args.parts:
        print(f"[gpu_recipe] {name}", flush=True)
        start = time.perf_counter()
        try:
            summary[name] = parts[name](args, out)
        except (RuntimeError, subprocess.CalledProcessError, OSError, KeyError, ValueError) as error:
            summary[name] = {"error": f"{type(error).__name__}: {error}"}
            failed = True
        summary[name]["part_seconds"] = round(time.perf_counter() - start, 1)
        summary_path.write_text(json.dumps(summary, indent=1), encoding="utf-8")  # after every part
        shown = {key: value for key, value in summary[name].items() if key in SUMMARY_KEYS}
        print(f"[gpu_recipe] {name}: {json.dumps(shown)[:2000]}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
