"""Throughput, memory and FLOPs of RadioVAE presets, side by side with ``diffusers.AutoencoderKL``.

For every model and batch size it times ``encode`` (posterior mean), ``decode`` and one full training step (forward
with a posterior sample, L1 + MSE + 1e-6 KL, backward, Adam step; the LPIPS and GAN terms of the real loss are left
out so that the number measures the autoencoder itself), and reports images per second, the peak memory above the
model's own, FLOPs per image counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls and
fused attention, one multiply-add = 2 FLOPs), and the fraction of the machine's measured peak: the better of a large
matmul (FLOP/s = 2 n^3 / t) and a large 3x3 convolution timed on the same device and dtype.

torch's counter knows the CUDA attention kernels only; the CPU's fused ``scaled_dot_product_attention`` (and its
backward) are counted here with torch's own SDPA formulas (``CPU_ATTENTION_FLOPS``): without them the
``radiodiff-ldm-f4`` rows lose 83.8 GFLOP per 320x320 map in encode and in decode.

The reference is ``diffusers.AutoencoderKL`` built with the ``radiodiff-ldm-f4`` numbers (1 -> 3 channels, blocks
128/256/512, 3 Down/UpDecoder blocks, 2 layers per block); compare it with the ``radiodiff-ldm-f4`` preset row.

Usage::

    # CPU, a few minutes
    python benchmarks/benchmark_vae.py --presets tiny radiodiff-vae --batch_sizes 1 4 --resolution 320 --steps 3
    # FLOPs and parameters only (no timing)
    python benchmarks/benchmark_vae.py --flops_only
    # a GPU: bf16, channels-last, optionally torch.compile
    python benchmarks/benchmark_vae.py --device cuda --dtype bf16 --channels_last --batch_sizes 1 8 32 --compile

The output is a markdown table (machine, command and matmul peak in its header), ready for docs/benchmarks.md;
``--output_json`` also writes the raw numbers.
"""

import argparse
import contextlib
import ctypes
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from tqdm.auto import tqdm

from radiodiff_vae import PRESETS, RadioVAE
from radiodiff_vae.atomic import atomic_write_json
from radiodiff_vae.baseline import downsample_factor_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_train_step import synchronize, time_step_samples  # noqa: E402  (this folder's script: the timer)

AUTOENCODER_KL = "AutoencoderKL"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# Attention ops that FlopCounterMode's registry lacks on the CPU: the fused kernel (seen under no_grad and in
# training) and the composite op itself (seen under inference_mode, where it reaches the counter undecomposed).
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
    torch.ops.aten.scaled_dot_product_attention: _sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops,
}


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter, with the CPU attention kernels counted."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)


def parse_args(input_args: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["tiny", "radiodiff-vae", "radiodiff-ldm-f4"],
        help=f"RadioVAE presets to measure, from {sorted(PRESETS)}.",
    )
    parser.add_argument(
        "--no_autoencoder_kl", action="store_true", help="Leave out the diffusers.AutoencoderKL reference."
    )
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 4], help="Inference batch sizes.")
    parser.add_argument(
        "--train_batch_sizes",
        nargs="*",
        type=int,
        default=None,
        help="Training-step batch sizes (default: --batch_sizes; give none to skip training).",
    )
    parser.add_argument("--resolution", type=int, default=320, help="Square map size in pixels (default 320).")
    parser.add_argument(
        "--steps", type=int, default=3, help="Timed rounds: one call of every model's task each (median taken)."
    )
    parser.add_argument("--warmup", type=int, default=1, help="Untimed iterations after the FLOP-counting one.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="Inference weights; training autocasts.")
    parser.add_argument("--channels_last", action="store_true", help="NHWC memory format for model and inputs.")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encode, decode and train functions.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU).")
    parser.add_argument("--matmul_size", type=int, default=2048, help="n of the n x n x n peak matmul (default 2048).")
    parser.add_argument("--flops_only", action="store_true", help="Count parameters and FLOPs per image; no timing.")
    parser.add_argument("--output_json", default=None, help="Also write the raw results to this JSON file.")
    args = parser.parse_args(input_args)

    unknown = sorted(set(args.presets) - set(PRESETS))
    if unknown:
        parser.error(f"--presets: unknown {unknown}; expected some of {sorted(PRESETS)}")
    if args.train_batch_sizes is None:
        args.train_batch_sizes = list(args.batch_sizes)
    for flag, values in (("--batch_sizes", args.batch_sizes), ("--train_batch_sizes", args.train_batch_sizes)):
        if any(value < 1 for value in values):
            parser.error(f"{flag} must be positive, got {values}")
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be at least 1 and --warmup at least 0, got {args.steps} and {args.warmup}")
    if args.resolution < 8 or args.resolution % 8:
        parser.error(f"--resolution must be a positive multiple of 8, got {args.resolution}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device on this machine")
    if args.output_json and os.path.dirname(args.output_json) and not os.path.isdir(os.path.dirname(args.output_json)):
        parser.error(f"--output_json: folder {os.path.dirname(args.output_json)} does not exist")
    return args


# ----------------------------------------------------------------------------------------------------------------
# the machine
def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = platform.processor() or "CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
            cpu = names[0] if names else cpu
    return f"{cpu}, {torch.get_num_threads()} torch threads of {os.cpu_count()} cores (torch {torch.__version__})"


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n x n matmul on ``device`` in ``dtype`` (2 n^3 FLOPs each)."""
    generator = torch.Generator(device=device).manual_seed(0)
    left = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    right = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    left @ right  # warm-up: library initialisation and clocks
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        left @ right
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def measure_conv_peak(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best FLOP/s of a 3x3 convolution, 256 -> 256 channels on a 160x160 map: the kind of layer the VAE is made of.

    The second reference next to the matmul (see `reference_peak`): on some CPUs (MKL's sgemm on AMD) the
    convolution library is faster than the BLAS matmul.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    maps = torch.randn(1, 256, 160, 160, device=device, dtype=dtype, generator=generator)
    weight = torch.randn(256, 256, 3, 3, device=device, dtype=dtype, generator=generator)
    flops = 2 * 256 * 256 * 9 * 160 * 160
    with torch.inference_mode():
        torch.nn.functional.conv2d(maps, weight, padding=1)
        synchronize(device)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.nn.functional.conv2d(maps, weight, padding=1)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return flops / best


class PeakMemory:
    """Peak memory of a block above what was allocated when it started, in MiB.

    CUDA: the caching allocator's peak. CPU: the process's peak resident set (VmHWM) above its resident set at the
    start, after ``malloc_trim`` and a reset of the peak through ``/proc/self/clear_refs`` (Linux; ``nan`` elsewhere).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib = float("nan")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            # Give freed heap memory back to the OS first, so that the block's allocations show up in the RSS.
            _malloc_trim()
            self._start = _proc_status_kib("VmRSS") if _reset_peak_rss() else None
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        elif self._start is not None:
            self.mib = (_proc_status_kib("VmHWM") - self._start) / 1024


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")  # "5" resets the peak RSS counter (Linux >= 4.0)
        return True
    except OSError:
        return False


def _proc_status_kib(key: str) -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return float("nan")


# ----------------------------------------------------------------------------------------------------------------
# models
def build_model(name: str) -> torch.nn.Module:
    if name == AUTOENCODER_KL:
        from diffusers import AutoencoderKL

        # The radiodiff-ldm-f4 numbers: same layout and state-dict keys as that preset.
        return AutoencoderKL(
            in_channels=1,
            out_channels=1,
            latent_channels=3,
            block_out_channels=(128, 256, 512),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            layers_per_block=2,
            sample_size=320,
        )
    return RadioVAE.from_preset(name)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@dataclass
class Measurement:
    """One model at one batch size: ``{task: value}`` for task in encode / decode / train."""

    model: str
    batch_size: int
    images_per_second: Dict[str, float] = field(default_factory=dict)
    gflop_per_image: Dict[str, float] = field(default_factory=dict)
    achieved_flops: Dict[str, float] = field(default_factory=dict)
    peak_memory_mib: Dict[str, float] = field(default_factory=dict)


def measure_task(task: Callable[[], object], device: torch.device, warmup: int, batch_size: int) -> Dict[str, float]:
    """FLOPs of one call of ``task`` (under the counter), then ``warmup`` untimed calls, then the peak memory of one
    more call."""
    counter = flop_counter()
    with counter:
        task()
    for _ in range(warmup):
        task()
    synchronize(device)
    with PeakMemory(device) as memory:
        task()
    return {"flop_per_image": counter.get_total_flops() / batch_size, "peak_memory_mib": memory.mib}


def time_in_rounds(tasks: Dict[tuple, Callable[[], object]], device: torch.device, steps: int) -> Dict[tuple, float]:
    """Median seconds per call of each task over ``steps`` interleaved rounds (`time_step_samples`: every other
    round in reverse order), each call ended by a device sync. Rounds rather than one model after the other: a
    machine whose speed drifts during the run (a shared CPU box moves by 10-20 % over minutes) then shifts every
    model alike, and their ratios hold. The tasks are warm already (`measure_task`)."""

    def synchronized(task: Callable[[], object]) -> Callable[[], None]:
        return lambda: (task(), synchronize(device))

    synchronize(device)
    runs = {key: synchronized(task) for key, task in tasks.items()}
    samples = time_step_samples(runs, steps, warmup=False)
    return {key: statistics.median(values) for key, values in samples.items()}


def make_tasks(
    model: torch.nn.Module, batch_size: int, args: argparse.Namespace, device: torch.device, train: bool
) -> Dict[str, Callable[[], object]]:
    """Closures that run one encode, one decode or one training step of a batch of random maps."""
    factor = downsample_factor_of(model)
    latent_size = args.resolution // factor
    dtype = DTYPES[args.dtype]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    generator = torch.Generator(device=device).manual_seed(0)
    maps = torch.rand(batch_size, 1, args.resolution, args.resolution, device=device, generator=generator) * 2 - 1
    latents = torch.randn(batch_size, model.config.latent_channels, latent_size, latent_size, device=device)
    tasks: Dict[str, Callable[[], object]] = {}

    if not train:
        model.to(device=device, memory_format=memory_format).eval()
        if dtype != torch.float32:
            model.to(dtype=dtype)
        maps_in = maps.to(dtype=dtype, memory_format=memory_format)
        latents_in = latents.to(dtype=dtype, memory_format=memory_format)

        def encode() -> torch.Tensor:
            return model.encode(maps_in).latent_dist.mode()

        def decode() -> torch.Tensor:
            return model.decode(latents_in).sample

        encode_fn, decode_fn = (torch.compile(encode), torch.compile(decode)) if args.compile else (encode, decode)
        tasks["encode"] = lambda: _no_grad(encode_fn)
        tasks["decode"] = lambda: _no_grad(decode_fn)
        return tasks

    # Training keeps fp32 weights and autocasts to the low-precision dtype, as accelerate's mixed precision does.
    model.to(device=device, memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    maps_in = maps.to(memory_format=memory_format)
    autocast = dtype != torch.float32

    def loss_of_step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            posterior = model.encode(maps_in).latent_dist
            reconstruction = model.decode(posterior.sample(generator=generator)).sample
            error = reconstruction.float() - maps_in
            return error.abs().mean() + error.pow(2).mean() + 1e-6 * posterior.kl().float().mean()

    loss_fn = torch.compile(loss_of_step) if args.compile else loss_of_step

    def train_step() -> None:
        loss_fn().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    tasks["train"] = train_step
    return tasks


def _no_grad(function: Callable[[], torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return function()


def benchmark(args: argparse.Namespace, device: torch.device, peak_flops: float) -> List[Measurement]:
    """Measure every model at every batch size; ``peak_flops`` (the reference measured so far) only annotates the
    progress lines. FLOPs and memory are measured task by task; the timing runs all models of one batch size in
    rounds (`time_in_rounds`)."""
    names = list(args.presets) + ([] if args.no_autoencoder_kl else [AUTOENCODER_KL])
    groups = [(batch, False) for batch in args.batch_sizes] + [(batch, True) for batch in args.train_batch_sizes]
    results: Dict[tuple, Measurement] = {}
    progress = tqdm(groups, desc="benchmark", unit="batch size")
    for batch_size, train in progress:
        progress.set_postfix_str(f"batch {batch_size} {'train' if train else 'encode/decode'}")
        tasks: Dict[tuple, Callable[[], object]] = {}
        for name in names:
            torch.manual_seed(0)
            for task_name, task in make_tasks(build_model(name), batch_size, args, device, train).items():
                tasks[(name, task_name)] = task
        numbers = {key: measure_task(task, device, args.warmup, batch_size) for key, task in tasks.items()}
        seconds = time_in_rounds(tasks, device, args.steps)
        for (name, task_name), measured in numbers.items():
            measurement = results.setdefault((name, batch_size), Measurement(name, batch_size))
            images_per_second = batch_size / seconds[(name, task_name)]
            achieved = measured["flop_per_image"] * images_per_second
            measurement.images_per_second[task_name] = images_per_second
            measurement.gflop_per_image[task_name] = measured["flop_per_image"] / 1e9
            measurement.peak_memory_mib[task_name] = measured["peak_memory_mib"]
            measurement.achieved_flops[task_name] = achieved
            tqdm.write(
                f"{name:>18} batch {batch_size:>3} {task_name:>6}: {images_per_second:8.3f} img/s, "
                f"{achieved / 1e9:8.1f} GFLOP/s ({100 * achieved / peak_flops:5.1f}% of peak)"
            )
        del tasks
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return list(results.values())


# ----------------------------------------------------------------------------------------------------------------
# reports
def _cell(values: Dict[str, float], task: str, template: str) -> str:
    value = values.get(task)
    return "–" if value is None or value != value else template.format(value)


def reference_peak(matmul_flops: float, conv_flops: float) -> float:
    """What "% of peak" divides by: the better of the two kernels. On some CPUs (MKL's sgemm on AMD) the convolution
    library beats the BLAS matmul by 2x, and a matmul-only reference would put conv-heavy models above 100 %."""
    return max(matmul_flops, conv_flops)


def format_report(
    args: argparse.Namespace, device: torch.device, matmul_flops: float, conv_flops: float, rows: List[Measurement]
) -> str:
    peak_flops = reference_peak(matmul_flops, conv_flops)
    settings = f"{args.dtype}{', channels-last' if args.channels_last else ''}{', torch.compile' if args.compile else ''}"
    command = "python benchmarks/benchmark_vae.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    lines = [
        f"Machine: {describe_machine(device)}. {settings}, {args.resolution}×{args.resolution} maps, median of "
        f"{args.steps} timed rounds over all models (alternating order) after {args.warmup} warm-up. Best of before "
        f"and after the models: matmul ({args.matmul_size}³ {args.dtype}) {matmul_flops / 1e9:.1f} GFLOP/s, 3×3 conv 256→256 at 160×160 "
        f"{conv_flops / 1e9:.1f} GFLOP/s; % of peak is against the better, {peak_flops / 1e9:.1f} GFLOP/s. "
        f"{datetime.date.today().isoformat()}.",
        f"Command: `{command.strip()}`",
        "",
        "| model | batch | encode img/s | decode img/s | train img/s | encode GFLOP/img | decode GFLOP/img "
        "| train GFLOP/img | encode % peak | decode % peak | train % peak | peak MiB enc / dec / train |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (_model_order(args, r.model), r.batch_size)):
        label = f"`{row.model}`" if row.model != AUTOENCODER_KL else "diffusers `AutoencoderKL` (ldm-f4 numbers)"
        cells = [_cell(row.images_per_second, task, "{:.3g}") for task in ("encode", "decode", "train")]
        cells += [_cell(row.gflop_per_image, task, "{:.1f}") for task in ("encode", "decode", "train")]
        fractions = {task: flops / peak_flops for task, flops in row.achieved_flops.items()}
        cells += [_cell(fractions, task, "{:.0%}") for task in ("encode", "decode", "train")]
        memory = " / ".join(_cell(row.peak_memory_mib, task, "{:.0f}") for task in ("encode", "decode", "train"))
        lines.append(f"| {label} | {row.batch_size} | " + " | ".join(cells) + f" | {memory} |")

    # The target: RadioVAE's ldm-f4 layout must infer at least as fast as AutoencoderKL with the same numbers.
    by_key = {(row.model, row.batch_size): row for row in rows}
    comparisons = []
    for batch_size in args.batch_sizes:
        ours, reference = by_key.get(("radiodiff-ldm-f4", batch_size)), by_key.get((AUTOENCODER_KL, batch_size))
        if ours and reference:
            ratios = [
                f"{task} ×{ours.images_per_second[task] / reference.images_per_second[task]:.2f}"
                for task in ("encode", "decode")
            ]
            comparisons.append(f"batch {batch_size}: " + ", ".join(ratios))
    if comparisons:
        lines += ["", "`radiodiff-ldm-f4` speed relative to `AutoencoderKL`: " + "; ".join(comparisons) + "."]
    return "\n".join(lines) + "\n"


def _model_order(args: argparse.Namespace, name: str) -> int:
    order = list(args.presets) + [AUTOENCODER_KL]
    return order.index(name)


def flops_report(args: argparse.Namespace, device: torch.device) -> str:
    """Parameters and FLOPs per image, batch 1, fp32, no timing."""
    lines = [
        f"FLOPs per {args.resolution}×{args.resolution} image (FlopCounterMode with CPU attention, batch 1, fp32).",
        "",
        "| model | latent | encoder params | decoder params | encode GFLOP | decode GFLOP | total GFLOP |",
        "|---|---|---|---|---|---|---|",
    ]
    names = list(args.presets) + ([] if args.no_autoencoder_kl else [AUTOENCODER_KL])
    for name in tqdm(names, desc="flops", unit="model"):
        model = build_model(name).to(device).eval()
        maps = torch.zeros(1, 1, args.resolution, args.resolution, device=device)
        with torch.inference_mode():
            with flop_counter() as encode_counter:
                latents = model.encode(maps).latent_dist.mode()
            with flop_counter() as decode_counter:
                model.decode(latents)
        encode, decode = encode_counter.get_total_flops() / 1e9, decode_counter.get_total_flops() / 1e9
        latent = "×".join(str(size) for size in latents.shape[1:])
        label = f"`{name}`" if name != AUTOENCODER_KL else "diffusers `AutoencoderKL` (ldm-f4 numbers)"
        lines.append(
            f"| {label} | {latent} | {parameter_count(model.encoder) / 1e6:.2f} M | "
            f"{parameter_count(model.decoder) / 1e6:.2f} M | {encode:.1f} | {decode:.1f} | {encode + decode:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(input_args: Optional[List[str]] = None) -> int:
    args = parse_args(input_args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.flops_only:
        print(flops_report(args, device))
        return 0
    # Both references are measured before and after the models and the larger values kept: on a shared machine one
    # of the two may fall in a busy moment, and a low peak would inflate every fraction.
    dtype = DTYPES[args.dtype]
    matmul_before = measure_matmul_peak(device, dtype, args.matmul_size)
    conv_before = measure_conv_peak(device, dtype)
    tqdm.write(
        f"peak before the runs: matmul {matmul_before / 1e9:.1f} GFLOP/s ({args.matmul_size}³, {args.dtype}, "
        f"{device}), 3x3 conv {conv_before / 1e9:.1f} GFLOP/s"
    )
    rows = benchmark(args, device, reference_peak(matmul_before, conv_before))
    matmul_after = measure_matmul_peak(device, dtype, args.matmul_size)
    conv_after = measure_conv_peak(device, dtype)
    tqdm.write(
        f"peak after the runs: matmul {matmul_after / 1e9:.1f} GFLOP/s, 3x3 conv {conv_after / 1e9:.1f} GFLOP/s"
    )
    matmul_flops, conv_flops = max(matmul_before, matmul_after), max(conv_before, conv_after)
    report = format_report(args, device, matmul_flops, conv_flops, rows)
    print(report)
    if args.output_json:
        payload = {
            "machine": describe_machine(device),
            "settings": vars(args),
            "reference_peak_flops": reference_peak(matmul_flops, conv_flops),
            "matmul_peak_flops": matmul_flops,
            "matmul_peak_flops_before_and_after": [matmul_before, matmul_after],
            "conv3x3_flops": conv_flops,
            "conv3x3_flops_before_and_after": [conv_before, conv_after],
            "results": [asdict(row) for row in rows],
            "table": report,
        }
        atomic_write_json(args.output_json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
