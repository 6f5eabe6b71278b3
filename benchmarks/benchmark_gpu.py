#!/usr/bin/env python
"""The whole GPU check of the training step and inference, in one call of a few minutes, every number to files.

Each part runs in its own process (accelerate's precision state is process-wide) under its own time limit, and
writes its output as it goes, so that a part that fails or runs out of time keeps the others' results:

* ``step_<variant>``: ``benchmark_train_step.py``'s VAE-GAN step (phase 1 and 2) of the report's preset at 320x320,
  batch 8, LPIPS on: bf16 with the GroupNorms in bf16, as ``train_vae.py`` runs it on torch 2.11 (with a
  torch.profiler top 20 and the host syncs per step), the same channels-last, with gradient checkpointing of the
  full-resolution levels, with fp32 GroupNorms (autocast's own choice), fp32, and bf16 with ``--compile``; the
  step of the other layouts of ``gpu_recipe.py``'s comparison (``radiodiff-ldm-f4``, 8 latent channels), so that
  their training runs can be given the same GPU time;
* ``original_fp32``: ``benchmark_original_step.py``, the original RadioDiff trainer against this package on the
  ``radiodiff-ldm-f4`` network at 128/256/512 channels, 320x320, batch 8, fp32 with TF32 off (needs
  ``--radiodiff_dir``, an extracted checkout of UNIC-Lab/RadioDiff; skipped without it);
* ``inference``: ``benchmark_vae.py``, encode and decode against ``diffusers.AutoencoderKL`` at batch 8 and 32,
  bf16, channels-last.

Writes ``OUTPUT_DIR/<part>.log`` and ``.json``, ``OUTPUT_DIR/profile_bf16.txt``, and ``OUTPUT_DIR/summary.json`` and
``summary.md`` (one row per part: status, seconds, the key numbers). ``--dry_run`` does the same on the CPU at toy
sizes (the ``tiny`` preset, 32x32 maps, batch 2), which is how the tests run it.

Usage::

    python benchmarks/benchmark_gpu.py --output_dir gpu-check --radiodiff_dir /path/to/RadioDiff
    python benchmarks/benchmark_gpu.py --output_dir /tmp/dry --dry_run
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent


@dataclass
class Part:
    """One measurement: a script of this folder with its arguments, a time limit, and what to read back."""

    name: str
    script: str
    arguments: List[str]
    timeout: float
    writes_json: bool = True
    extra: Dict[str, str] = field(default_factory=dict)


def parse_args(input_args: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="Folder for the logs, JSON files and the summary.")
    parser.add_argument("--device", default="cuda", help="The GPU (default cuda); --dry_run uses the CPU.")
    parser.add_argument("--radiodiff_dir", default=None, help="Extracted UNIC-Lab/RadioDiff checkout (original step).")
    parser.add_argument("--repeats", type=int, default=10, help="Timed steps per phase (median; default 10).")
    parser.add_argument(
        "--parts", nargs="+", default=None, help="Run only these parts (names as in summary.md); default: all."
    )
    parser.add_argument("--skip_compile", action="store_true", help="Leave out the --compile step (slow to compile).")
    parser.add_argument(
        "--time_budget",
        type=float,
        default=None,
        help="Seconds for all parts: each part's limit is cut to what is left, and a part is skipped when under 20 s "
        "are left (its row says so); the parts run in order of importance.",
    )
    parser.add_argument("--dry_run", action="store_true", help="CPU, toy sizes: checks the plumbing, not the GPU.")
    args = parser.parse_args(input_args)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def plan(args: argparse.Namespace) -> List[Part]:
    """The parts in the order they run: the numbers the issue's targets need first, the slow compile last."""
    out = Path(args.output_dir)
    if args.dry_run:
        device, size, repeats = "cpu", ["--resolution", "32", "--batch_size", "2"], "1"
        report = ["--preset", "tiny"]
        layouts = {
            "ldm_f4": ["--preset", "radiodiff-ldm-f4", "--block_out_channels", "32", "64", "128"],
            "latent8": report + ["--latent_channels", "8"],
        }
    else:
        device, size, repeats = args.device, ["--resolution", "320", "--batch_size", "8"], str(args.repeats)
        report = ["--preset", "radiodiff-vae"]
        layouts = {"ldm_f4": ["--preset", "radiodiff-ldm-f4"], "latent8": report + ["--latent_channels", "8"]}
    common = [*size, "--device", device, "--formulations", "package", "--repeats", repeats]
    bf16 = ["--precision", "bf16", "--autocast_group_norm"]  # what train_vae.py runs with --mixed_precision bf16
    # The order: the targets and what gpu_recipe.py needs first, the comparisons after.
    # NCHW is what train_vae.py runs on CUDA while torch's GroupNorm copies channels-last maps (the 2026-12-04 H200
    # profile: 38% of the step in those copies); the channels-last step is measured beside it.
    parts = [
        Part("step_bf16", "benchmark_train_step.py",
             [*report, *common, *bf16, "--profile", str(out / "profile_bf16.txt")], 90),
        Part("step_bf16_channels_last", "benchmark_train_step.py", [*report, *common, *bf16, "--channels_last"], 60),
        Part("step_bf16_checkpointing", "benchmark_train_step.py",
             [*report, *common, *bf16, "--gradient_checkpointing"], 60),
        Part("step_ldm_f4_bf16", "benchmark_train_step.py",
             [*layouts["ldm_f4"], *common, *bf16, "--phases", "1"], 60),
        Part("step_latent8_bf16", "benchmark_train_step.py",
             [*layouts["latent8"], *common, *bf16, "--phases", "1"], 60),
    ]  # fmt: skip
    if args.radiodiff_dir is not None:
        original = [
            "--radiodiff_dir",
            args.radiodiff_dir,
            "--device",
            device,
            "--repeats",
            "1" if args.dry_run else "3",
        ]
        original += ["--resolution", "32", "--batch", "2"] if args.dry_run else ["--resolution", "320", "--batch", "8"]
        original += (
            ["--block_out_channels", "32", "64", "128"]
            if args.dry_run
            else ["--block_out_channels", "128", "256", "512"]
        )
        parts.append(Part("original_fp32", "benchmark_original_step.py", original, 120, writes_json=False))
    inference = ["--device", device, "--batch_sizes", *(["2"] if args.dry_run else ["8", "32"])]
    inference += ["--presets", "radiodiff-vae", "radiodiff-ldm-f4", "--train_batch_sizes"]  # inference only
    if args.dry_run:
        inference += ["--resolution", "32", "--steps", "1"]
    else:
        inference += ["--dtype", "bf16", "--steps", repeats]
    parts.append(Part("inference", "benchmark_vae.py", inference, 90))
    parts += [
        Part("step_bf16_fp32_group_norm", "benchmark_train_step.py", [*report, *common, "--precision", "bf16"], 60),
        Part("step_fp32", "benchmark_train_step.py", [*report, *common, "--precision", "fp32"], 90),
    ]  # fmt: skip
    if not args.skip_compile and not args.dry_run:
        parts.append(Part("step_bf16_compile", "benchmark_train_step.py", [*report, *common, *bf16, "--compile"], 240))
    if args.parts:
        unknown = sorted(set(args.parts) - {part.name for part in parts})
        if unknown:
            raise SystemExit(f"benchmark_gpu.py: error: --parts {unknown}: expected some of {[p.name for p in parts]}")
        parts = [part for part in parts if part.name in args.parts]
    return parts


def run_part(part: Part, out: Path) -> Dict[str, object]:
    """Runs one part with its log and time limit; returns its summary row (status, seconds, JSON if any)."""
    json_path = out / f"{part.name}.json"
    command = [sys.executable, str(HERE / part.script), *part.arguments]
    if part.writes_json:
        command += ["--output_json", str(json_path)]
    start = time.perf_counter()
    with open(out / f"{part.name}.log", "w", encoding="utf-8") as log:
        log.write("# " + " ".join(command) + "\n")
        log.flush()
        try:
            completed = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, timeout=part.timeout, cwd=HERE.parent
            )
            status = "ok" if completed.returncode == 0 else f"failed (exit {completed.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {part.timeout:.0f} s"
    row: Dict[str, object] = {"part": part.name, "status": status, "seconds": round(time.perf_counter() - start, 1)}
    if json_path.is_file():
        row["result"] = json.loads(json_path.read_text(encoding="utf-8"))
    return row


def key_numbers(row: Dict[str, object]) -> str:
    """The part's numbers in a few words for summary.md."""
    result = row.get("result")
    if isinstance(result, dict) and "rows" in result:
        numbers = [
            f"phase {r['phase']}: {r['seconds'] * 1e3:.1f} ms, {r['gflop'] / 1e3 / r['seconds']:.0f} TFLOP/s, "
            f"peak {r['peak_gib']:.2f} GiB"
            for r in result["rows"]
        ]
        if "host_syncs" in result:
            numbers.append(f"host syncs/step {result['host_syncs']}")
        return "; ".join(numbers)
    if isinstance(result, dict) and "results" in result:  # benchmark_vae.py: maps per second
        return "; ".join(
            f"{r['model']} b{r['batch_size']}: encode {r['images_per_second']['encode']:.0f}/s, decode "
            f"{r['images_per_second']['decode']:.0f}/s"
            for r in result["results"]
        )
    return "see the log"


def write_summary(out: Path, rows: List[Dict[str, object]], header: Dict[str, object]) -> None:
    (out / "summary.json").write_text(json.dumps({"header": header, "parts": rows}, indent=1), encoding="utf-8")
    lines = [f"# GPU check {header['date']}: {header['machine']}", "", "| part | status | seconds | numbers |"]
    lines.append("|---|---|---|---|")
    lines += [f"| {row['part']} | {row['status']} | {row['seconds']} | {key_numbers(row)} |" for row in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def describe_machine(dry_run: bool) -> str:
    import torch

    if dry_run or not torch.cuda.is_available():
        return f"CPU dry run, torch {torch.__version__}"
    name = torch.cuda.get_device_name(0)
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        driver = "unknown"
    return f"{name}, driver {driver}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main(input_args: Optional[List[str]] = None) -> int:
    args = parse_args(input_args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = plan(args)
    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(args.dry_run),
        "command": " ".join(sys.argv),
    }
    rows: List[Dict[str, object]] = []
    start = time.perf_counter()
    for part in parts:
        if args.time_budget is not None:
            left = args.time_budget - (time.perf_counter() - start)
            if left < 20:
                rows.append({"part": part.name, "status": "skipped (time budget spent)", "seconds": 0.0})
                write_summary(out, rows, header)
                continue
            part.timeout = min(part.timeout, left)
        print(f"[benchmark_gpu] {part.name} (limit {part.timeout:.0f} s)", flush=True)
        rows.append(run_part(part, out))
        print(f"[benchmark_gpu] {part.name}: {rows[-1]['status']} in {rows[-1]['seconds']} s", flush=True)
        write_summary(out, rows, header)  # after every part: a later failure keeps what is done
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
