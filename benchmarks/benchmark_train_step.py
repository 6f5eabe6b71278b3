#!/usr/bin/env python
"""Seconds, FLOPs and memory of one full VAE-GAN optimizer step (phase 1 and phase 2), as the training script runs it.

Three formulations of the same loss on the same network and maps, timed interleaved:

* ``package``: :class:`radiodiff_vae.training.VAEGANStep`, what ``examples/train_vae.py`` runs: one autoencoder
  forward, the LPIPS and GAN backwards once each, the adaptive weight from them, one backward.
* ``previous``: this package's step before issue 13: the loss differentiated directly (``generator_loss`` of
  ``radiodiff_vae.losses.reference``, the package's API then: the adaptive weight backpropagates the nll and the GAN loss to
  the decoder's last layer, through LPIPS and the discriminator) and one backward of the sum, which runs both again.
* ``original``: what the original RadioDiff trainer computes per step, rebuilt from this package's modules: two
  passes (autoencoder, then discriminator), each with its own autoencoder forward; the discriminator and the adaptive
  weight run in phase 1 as well (multiplied by a factor of 0).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls; a multiply-add is two
FLOPs) over one whole step. LPIPS needs torchvision's VGG16 trunk; without the file a randomly initialised trunk is
saved to a temporary TORCH_HOME (same FLOPs and time as the real weights).

Usage::

    # the issue-13 network: radiodiff-ldm-f4 layout at 32/64/128 channels, 64x64 maps, batch 4, LPIPS on
    python benchmarks/benchmark_train_step.py --preset radiodiff-ldm-f4 --block_out_channels 32 64 128 \\
        --resolution 64 --batch_size 4 --repeats 5
    # the report's preset at its size on a GPU: bf16, channels-last, CUDA-synchronised times and peak memory per phase
    python benchmarks/benchmark_train_step.py --device cuda --precision bf16 --channels_last --preset radiodiff-vae \
        --resolution 320 --batch_size 8 --formulations package --repeats 10 --output_json step.json
    # memory per map of the report's preset at 320x320, phase 1, with and without gradient checkpointing
    python benchmarks/benchmark_train_step.py --preset radiodiff-vae --resolution 320 --batch_size 1 --memory
    python benchmarks/benchmark_train_step.py --preset radiodiff-vae --resolution 320 --batch_size 1 --memory \\
        --gradient_checkpointing
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from typing import Callable, Dict, Hashable, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from radiodiff_vae import PRESETS, RadioVAE, RadioVAELoss
from radiodiff_vae.losses.adversarial import generator_gan_loss
from radiodiff_vae.losses.perceptual import vgg16_trunk_for_measuring
from radiodiff_vae.losses.reference import adaptive_weight_through_losses, generator_loss  # the loss before issue 13
from radiodiff_vae.models.normalization import group_norm_in_autocast_dtype
from radiodiff_vae.training import compile_for_training


ORIGINAL_TRAINER_GFLOP = 134.2  # issue 13: the original trainer's step on the network
FORMULATIONS = ("package", "previous", "original")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")  # tf32: fp32 weights and maths with TF32 matmuls and convolutions


def parse_args(input_args: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="radiodiff-ldm-f4", choices=sorted(PRESETS), help="RadioVAE preset.")
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=None, help="Override the preset's.")
    parser.add_argument("--latent_channels", type=int, default=None, help="Override the preset's.")
    parser.add_argument("--resolution", type=int, default=64, help="Map side in pixels.")
    parser.add_argument("--batch_size", type=int, default=4, help="Maps per step (no accumulation).")
    parser.add_argument("--perceptual_weight", type=float, default=1.0, help="0 leaves LPIPS out.")
    parser.add_argument("--disc_base_channels", type=int, default=64, help="Filters of the PatchGAN's first layer.")
    parser.add_argument("--formulations", nargs="+", default=list(FORMULATIONS), choices=FORMULATIONS)
    parser.add_argument("--phases", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="Timed steps per formulation and phase (median).")
    parser.add_argument("--channels_last", action="store_true", help="Models and maps in channels-last layout.")
    parser.add_argument(
        "--autocast_group_norm",
        action="store_true",
        help="The autoencoder's GroupNorms in the autocast dtype instead of fp32 (train_vae.py's default with bf16).",
    )
    parser.add_argument("--gradient_checkpointing", action="store_true", help="Checkpoint the autoencoder + VGG.")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the autoencoder's blocks and the LPIPS trunk (not the decoder's last layer, so that the "
        "adaptive weight's pull-back to it stays one convolution).",
    )
    parser.add_argument(
        "--gradient_checkpointing_scope",
        default="selective",
        choices=["selective", "full_resolution", "all"],
        help="With --gradient_checkpointing: recompute normalisations and activations only (selective, train_vae.py's "
        "default), the full-resolution levels, or every level.",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (CUDA times are synchronised).")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (TF32 off), tf32, or bf16 / fp16 autocast through accelerate as examples/train_vae.py runs it.",
    )
    parser.add_argument(
        "--cudnn_benchmark",
        default="auto",
        choices=["auto", "on", "off"],
        help="torch.backends.cudnn.benchmark (auto: on with CUDA, as the training script).",
    )
    parser.add_argument("--output_json", default=None, help="Also write the results to this JSON file.")
    parser.add_argument(
        "--profile",
        default=None,
        help="After timing: profile 3 phase-1 `package` steps with torch.profiler and write the top-20 table and "
        "the host-sync counts (cudaStreamSynchronize, device-to-host copies per step) to this file.",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="Instead of timing: one phase-1 `package` step; activation memory kept for the backward per component "
        "(autoencoder, LPIPS-VGG16, discriminator) and the peak resident memory above the models', per map.",
    )
    args = parser.parse_args(input_args)
    for name in ("resolution", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device on this machine")
    if args.precision in ("tf32", "fp16") and torch.device(args.device).type != "cuda":
        parser.error(f"--precision {args.precision} needs a CUDA --device, got {args.device}")
    return args


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA); timings and peak memory are read after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_precision_switches(args: argparse.Namespace, device: torch.device) -> None:
    """TF32 on only for ``tf32`` (and in the autocast modes, for the ops that stay fp32); cuDNN autotuning."""
    if device.type == "cuda":
        tf32 = args.precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on" or args.cudnn_benchmark == "auto"
    else:
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"


def build(args: argparse.Namespace):
    overrides = {"block_out_channels": tuple(args.block_out_channels)} if args.block_out_channels else {}
    if getattr(args, "latent_channels", None):
        overrides["latent_channels"] = args.latent_channels
    torch.manual_seed(0)
    vae = RadioVAE.from_preset(args.preset, sample_size=args.resolution, **overrides)
    loss_fn = RadioVAELoss(
        perceptual_weight=args.perceptual_weight, disc_start=1, disc_base_channels=args.disc_base_channels,
        allow_download=False,
    )  # fmt: skip
    if args.gradient_checkpointing:
        mode = getattr(args, "gradient_checkpointing_scope", "all")
        vae.enable_gradient_checkpointing(mode=mode)
        loss_fn.enable_gradient_checkpointing(mode=mode)
    if getattr(args, "autocast_group_norm", False):
        group_norm_in_autocast_dtype(vae)
    device = torch.device(getattr(args, "device", "cpu"))
    vae.to(device)
    loss_fn.to(device)
    if args.channels_last:
        vae.to(memory_format=torch.channels_last)
        loss_fn.to(memory_format=torch.channels_last)
    if args.compile:
        compile_for_training(vae, loss_fn)
    optimizer_ae = torch.optim.Adam([*vae.parameters(), loss_fn.logvar], lr=1e-5)
    optimizer_disc = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=1e-5)
    return vae, loss_fn, optimizer_ae, optimizer_disc


def package_step_runner(
    vae, loss_fn, optimizer_ae, optimizer_disc, precision: str = "fp32", channels_last: bool = False
) -> Callable[[torch.Tensor, int], None]:
    """:class:`VAEGANStep` with one ``accelerator.prepare`` as ``examples/train_vae.py`` does: the autoencoder's and
    the discriminator's forwards under accelerate's autocast for bf16 / fp16 (and its GradScaler for fp16)."""
    from accelerate import Accelerator

    from radiodiff_vae.training import NonFiniteGuard, VAEGANStep

    device = next(vae.parameters()).device
    mixed_precision = precision if precision in ("bf16", "fp16") else "no"
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for o in (optimizer_ae, optimizer_disc)]
    prepared = accelerator.prepare(vae, loss_fn.discriminator, optimizer_ae, optimizer_disc, *schedulers)
    step = VAEGANStep(
        accelerator, *prepared[:2], loss_fn, *prepared[2:], NonFiniteGuard(10**9), channels_last=channels_last
    )
    return lambda maps, global_step: step(maps, global_step)


def previous_step(vae, loss_fn, optimizer_ae, optimizer_disc, maps, global_step) -> None:
    """The package's step before issue 13 (one forward; generator_loss's adaptive weight, then one backward)."""
    out = vae(maps, sample_posterior=True, return_posterior=True)
    loss, _ = generator_loss(loss_fn, maps, out.sample, out.latent_dist, global_step, vae.get_last_layer())
    if loss_fn.disc_factor(global_step) > 0:
        loss = loss + loss_fn.discriminator_objective(maps, out.sample, global_step)[0]
    loss.backward()
    for optimizer in (optimizer_ae, optimizer_disc):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def original_step(vae, loss_fn, optimizer_ae, optimizer_disc, maps, global_step) -> None:
    """The original trainer's computation per step: an autoencoder pass and a discriminator pass, each with its own
    autoencoder forward and with the reconstruction terms (its loss computes them before it branches on the
    optimizer), and the discriminator and adaptive weight also in phase 1 (times a factor of 0)."""
    factor = loss_fn.disc_factor(global_step)
    discriminator = loss_fn.discriminator

    def forward_and_reconstruction_terms():
        out = vae(maps, sample_posterior=True, return_posterior=True)
        rec = (maps - out.sample).abs() + (maps - out.sample).square()
        if loss_fn.perceptual is not None:
            rec = rec + loss_fn.config.perceptual_weight * loss_fn.perceptual(maps, out.sample)
        nll = (rec / torch.exp(loss_fn.logvar) + loss_fn.logvar).sum() / maps.shape[0]
        return out, nll, out.latent_dist.kl().sum() / maps.shape[0]

    # pass 1: the autoencoder's objective
    out, nll, kl = forward_and_reconstruction_terms()
    g_loss = generator_gan_loss(discriminator(out.sample), loss_fn.config.gan_loss)
    d_weight = adaptive_weight_through_losses(nll, g_loss, vae.get_last_layer(), loss_fn.config.disc_weight)
    (nll + loss_fn.config.kl_weight * kl + d_weight * factor * g_loss).backward()
    optimizer_ae.step()
    optimizer_ae.zero_grad(set_to_none=True)
    optimizer_disc.zero_grad(set_to_none=True)
    # pass 2: the discriminator's, on a second autoencoder forward
    out, _, _ = forward_and_reconstruction_terms()
    d_loss = loss_fn.discriminator_objective(maps, out.sample, max(global_step, loss_fn.config.disc_start))[0]
    (d_loss * (factor / loss_fn.config.disc_factor_max)).backward()
    optimizer_disc.step()
    optimizer_disc.zero_grad(set_to_none=True)


def count_gflop(run: Callable[[], None]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return counter.get_total_flops() / 1e9


def time_step_samples(
    runs: Dict[Hashable, Callable[[], object]],
    repeats: int,
    warmup: bool = True,
    synchronize: Callable[[], None] = lambda: None,
) -> Dict[Hashable, List[float]]:
    """Seconds of each call of each run, ``repeats`` rounds of one call per run (interleaved: a machine that slows
    down for a while slows the runs of that round alike, so the per-round ratios stay comparable). Every other round
    runs them in reverse order, so that no run always follows the same one (whose freed memory and cache state it
    would inherit). ``warmup`` first calls each run once, untimed. ``synchronize`` waits for the device before
    each clock reading (``torch.cuda.synchronize`` for CUDA), so that a time is the work's, not its launch's."""
    if warmup:
        for run in runs.values():
            run()  # allocator, oneDNN primitives, cuDNN autotuning
    seconds = defaultdict(list)
    for round_index in range(repeats):
        order = list(runs.items()) if round_index % 2 == 0 else list(runs.items())[::-1]
        for name, run in order:
            synchronize()
            start = time.perf_counter()
            run()
            synchronize()
            seconds[name].append(time.perf_counter() - start)
    return dict(seconds)


def time_steps(
    runs: Dict[str, Callable[[], None]], repeats: int, synchronize: Callable[[], None] = lambda: None
) -> Dict[str, float]:
    """Median seconds per call of each run, timed interleaved (`time_step_samples`)."""
    samples = time_step_samples(runs, repeats, synchronize=synchronize)
    return {name: statistics.median(values) for name, values in samples.items()}


def profile_steps(step: Callable[[torch.Tensor, int], None], maps: torch.Tensor, path: str, steps: int = 3) -> dict:
    """torch.profiler over ``steps`` phase-1 steps: the top-20 operators by device time (by CPU time on a CPU) to
    ``path``, and the host syncs per step: ``cudaStreamSynchronize`` / ``cudaDeviceSynchronize`` calls and
    device-to-host copies."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if maps.device.type == "cuda" else [])
    synchronize(maps.device)
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            step(maps, 0)
        synchronize(maps.device)
    events = profiler.events()
    syncs = sum(1 for event in events if event.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize"))
    copies = sum(1 for event in events if "DtoH" in event.name or "Device -> Pageable" in event.name)
    sort_by = "self_cuda_time_total" if maps.device.type == "cuda" else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=sort_by, row_limit=20, max_name_column_width=60)
    # the synchronize() that closes the profiled region is one cudaDeviceSynchronize of the benchmark's own
    counts = {"stream_or_device_syncs_per_step": (syncs - (maps.device.type == "cuda")) / steps,
              "device_to_host_copies_per_step": copies / steps}  # fmt: skip
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"# {steps} phase-1 steps; host syncs per step: {json.dumps(counts)}\n{table}\n")
    return counts


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_memory(args, vae, loss_fn, optimizer_ae, optimizer_disc, maps) -> Dict[str, float]:
    """One phase-1 step: MiB per map of the activations each component keeps for the backward (parameters, which
    convolutions also save, left out), and the process's resident memory before the step and at its peak."""
    components = {"autoencoder": vae, "LPIPS-VGG16": loss_fn.perceptual, "discriminator": loss_fn.discriminator}
    current: List[str] = []
    for name, module in components.items():
        if module is not None:
            module.register_forward_pre_hook(lambda *_, name=name: current.append(name) and None)
            module.register_forward_hook(lambda *_: current.pop() and None)  # None: the output stays as it is
    parameters = {p.untyped_storage().data_ptr() for m in (vae, loss_fn) for p in m.parameters()}
    kept: Dict[str, Dict[int, int]] = defaultdict(dict)

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            owner = current[-1] if current else "loss (outside the networks)"
            kept[owner][storage.data_ptr()] = storage.nbytes()  # a storage saved twice counts once
        return tensor

    step = package_step_runner(vae, loss_fn, optimizer_ae, optimizer_disc)
    before = _rss_mib()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step(maps, 0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = {f"activations kept for the backward, per map: {name}": sum(sizes.values()) / 2**20 / args.batch_size
            for name, sizes in kept.items()}  # fmt: skip
    rows["resident memory before the step (models, optimizers, libraries)"] = before
    rows[f"peak resident memory during the step (batch {args.batch_size})"] = peak
    return rows


def main(input_args: Optional[List[str]] = None) -> int:
    args = parse_args(input_args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    set_precision_switches(args, device)
    with vgg16_trunk_for_measuring() as trunk:
        vae, loss_fn, optimizer_ae, optimizer_disc = build(args)
    maps = torch.rand(args.batch_size, 1, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0))
    maps = (maps * 2 - 1).to(device)
    if args.channels_last:
        maps = maps.contiguous(memory_format=torch.channels_last)
    switches = ("channels_last", "autocast_group_norm", "compile", "gradient_checkpointing")
    machine = platform.processor() or platform.machine()
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    options = [
        f"LPIPS {'on (' + trunk + ')' if loss_fn.perceptual is not None else 'off'}",
        f"precision {args.precision}",
        *[flag.replace("_", " ") for flag in switches if vars(args)[flag]],
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}",
    ]
    size = f"{args.resolution}x{args.resolution}, batch {args.batch_size}"
    print(f"# {args.preset} {list(vae.config.block_out_channels)}, {size}, " + ", ".join(options))
    print("# command: python " + " ".join(sys.argv))
    if args.memory:
        for name, mib in measure_memory(args, vae, loss_fn, optimizer_ae, optimizer_disc, maps).items():
            print(f"| {name} | {mib:8.0f} MiB |")
        return 0

    package = package_step_runner(vae, loss_fn, optimizer_ae, optimizer_disc, args.precision, args.channels_last)
    steps = {
        "package": package,
        "previous": lambda maps, step: previous_step(vae, loss_fn, optimizer_ae, optimizer_disc, maps, step),
        "original": lambda maps, step: original_step(vae, loss_fn, optimizer_ae, optimizer_disc, maps, step),
    }
    print("| phase | formulation | GFLOP / step | x original's 134.2 | seconds / step | x original's time | "
          "TFLOP/s | peak allocated GiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    results = {"header": options, "command": sys.argv, "rows": []}
    for phase in args.phases:
        global_step = 0 if phase == 1 else 1
        runs = {name: (lambda run=steps[name]: run(maps, global_step)) for name in args.formulations}
        gflop = {name: count_gflop(run) for name, run in runs.items()}  # also the warm-up (cuDNN autotuning)
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_steps(runs, args.repeats, synchronize=lambda: synchronize(device))
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        for name in args.formulations:
            time_ratio = f"{seconds[name] / seconds['original']:.3f}" if "original" in seconds else "-"
            print(
                f"| {phase} | {name} | {gflop[name]:.1f} | {gflop[name] / ORIGINAL_TRAINER_GFLOP:.3f} | "
                f"{seconds[name]:.4f} | {time_ratio} | {gflop[name] / 1e3 / seconds[name]:.1f} | {peak:.2f} |"
            )
            row = dict(phase=phase, formulation=name, gflop=gflop[name], seconds=seconds[name], peak_gib=peak)
            results["rows"].append(row)
        sys.stdout.flush()
    if args.profile:
        results["host_syncs"] = profile_steps(package, maps, args.profile)
        print(f"# torch.profiler: {args.profile}; host syncs per step {results['host_syncs']}")
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
