#!/usr/bin/env python
"""Seconds, FLOPs and memory of one full VAE-GAN optimizer step (phase 1 and phase 2), as the training script runs it.

Three formulations of the same loss on the same network and maps, timed interleaved:

* ``package``: :class:`radiodiff_vae.training.VAEGANStep`, what ``examples/train_vae.py`` runs: one autoencoder
  forward, the LPIPS and GAN backwards once each, the adaptive weight from them, one backward.
* ``previous``: this package's step before issue 13: ``RadioVAELoss.generator_loss`` (the adaptive weight
  backpropagates the nll and the GAN loss to the decoder's last layer, through LPIPS and the discriminator) and one
  backward of the sum, which runs both again.
* ``original``: what the original RadioDiff trainer computes per step, rebuilt from this package's modules: two
  passes (autoencoder, then discriminator), each with its own autoencoder forward; the discriminator and the adaptive
  weight run in phase 1 as well (multiplied by a factor of 0).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls; a multiply-add is two
FLOPs) over one whole step. LPIPS needs torchvision's VGG16 trunk; without the file a randomly initialised trunk is
saved to a temporary TORCH_HOME (same FLOPs and time as the real weights).

Usage::

    # the issue-13 network: radiodiff-ldm-f4 layout at 32/64/128 channels, 64x64 maps, batch 4, LPIPS on
    python examples/benchmark_train_step.py --preset radiodiff-ldm-f4 --block_out_channels 32 64 128 \\
        --resolution 64 --batch_size 4 --repeats 5
    # memory per map of the report's preset at 320x320, phase 1, with and without gradient checkpointing
    python examples/benchmark_train_step.py --preset radiodiff-vae --resolution 320 --batch_size 1 --memory
    python examples/benchmark_train_step.py --preset radiodiff-vae --resolution 320 --batch_size 1 --memory \\
        --gradient_checkpointing
"""

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from typing import Callable, Dict, Hashable, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from radiodiff_vae import PRESETS, RadioVAE, RadioVAELoss
from radiodiff_vae.losses.adversarial import adaptive_generator_weight, generator_gan_loss
from radiodiff_vae.losses.perceptual import vgg16_trunk_path

ORIGINAL_TRAINER_GFLOP = 134.2  # issue 13: the original trainer's step on the network
FORMULATIONS = ("package", "previous", "original")


def parse_args(input_args: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="radiodiff-ldm-f4", choices=sorted(PRESETS), help="RadioVAE preset.")
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=None, help="Override the preset's.")
    parser.add_argument("--resolution", type=int, default=64, help="Map side in pixels.")
    parser.add_argument("--batch_size", type=int, default=4, help="Maps per step (no accumulation).")
    parser.add_argument("--perceptual_weight", type=float, default=1.0, help="0 leaves LPIPS out.")
    parser.add_argument("--disc_base_channels", type=int, default=64, help="Filters of the PatchGAN's first layer.")
    parser.add_argument("--formulations", nargs="+", default=list(FORMULATIONS), choices=FORMULATIONS)
    parser.add_argument("--phases", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="Timed steps per formulation and phase (median).")
    parser.add_argument("--channels_last", action="store_true", help="Models and maps in channels-last layout.")
    parser.add_argument("--gradient_checkpointing", action="store_true", help="Checkpoint the autoencoder + VGG.")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the autoencoder's blocks and the LPIPS trunk (not the decoder's last layer, so that the "
        "adaptive weight's pull-back to it stays one convolution).",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
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
    return args


@contextlib.contextmanager
def vgg16_trunk_available():
    """The real VGG16 trunk if torch has it, else a random one in a temporary TORCH_HOME (same cost)."""
    if vgg16_trunk_path().is_file():
        yield "torchvision VGG16 weights"
        return
    import torchvision

    previous = os.environ.get("TORCH_HOME")
    with tempfile.TemporaryDirectory() as home:
        folder = os.path.join(home, "hub", "checkpoints")
        os.makedirs(folder)
        features = torchvision.models.vgg16(weights=None).features
        state = {f"features.{key}": value for key, value in features.state_dict().items()}
        torch.save(state, os.path.join(folder, os.path.basename(str(vgg16_trunk_path()))))
        os.environ["TORCH_HOME"] = home
        try:
            yield "a random VGG16 trunk"
        finally:
            if previous is None:
                os.environ.pop("TORCH_HOME", None)
            else:
                os.environ["TORCH_HOME"] = previous


def build(args: argparse.Namespace):
    overrides = {"block_out_channels": tuple(args.block_out_channels)} if args.block_out_channels else {}
    torch.manual_seed(0)
    vae = RadioVAE.from_preset(args.preset, sample_size=args.resolution, **overrides)
    loss_fn = RadioVAELoss(
        perceptual_weight=args.perceptual_weight, disc_start=1, disc_base_channels=args.disc_base_channels,
        allow_download=False,
    )  # fmt: skip
    if args.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
        loss_fn.enable_gradient_checkpointing()
    if args.channels_last:
        vae.to(memory_format=torch.channels_last)
        loss_fn.to(memory_format=torch.channels_last)
    if args.compile:
        blocks = [vae.encoder, vae.decoder.conv_in, vae.decoder.mid_block, *vae.decoder.up_blocks]
        if loss_fn.perceptual is not None:
            blocks.append(loss_fn.perceptual.lpips.net)
        for block in blocks:
            block.compile()
    optimizer_ae = torch.optim.Adam([*vae.parameters(), loss_fn.logvar], lr=1e-5)
    optimizer_disc = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=1e-5)
    return vae, loss_fn, optimizer_ae, optimizer_disc


def package_step_runner(vae, loss_fn, optimizer_ae, optimizer_disc) -> Callable[[torch.Tensor, int], None]:
    from accelerate import Accelerator

    from radiodiff_vae.training import NonFiniteGuard, VAEGANStep

    accelerator = Accelerator(cpu=True)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for o in (optimizer_ae, optimizer_disc)]
    step = VAEGANStep(
        accelerator, vae, loss_fn.discriminator, loss_fn, optimizer_ae, optimizer_disc, *schedulers,
        NonFiniteGuard(10**9),
    )  # fmt: skip
    return lambda maps, global_step: step(maps, global_step)


def previous_step(vae, loss_fn, optimizer_ae, optimizer_disc, maps, global_step) -> None:
    """The package's step before issue 13 (one forward; generator_loss's adaptive weight, then one backward)."""
    out = vae(maps, sample_posterior=True, return_posterior=True)
    loss, _ = loss_fn.generator_loss(maps, out.sample, out.latent_dist, global_step, last_layer=vae.get_last_layer())
    if loss_fn.disc_factor(global_step) > 0:
        loss = loss + loss_fn.discriminator_loss(maps, out.sample, global_step)[0]
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
    d_weight = adaptive_generator_weight(nll, g_loss, vae.get_last_layer(), loss_fn.config.disc_weight)
    (nll + loss_fn.config.kl_weight * kl + d_weight * factor * g_loss).backward()
    optimizer_ae.step()
    optimizer_ae.zero_grad(set_to_none=True)
    optimizer_disc.zero_grad(set_to_none=True)
    # pass 2: the discriminator's, on a second autoencoder forward
    out, _, _ = forward_and_reconstruction_terms()
    d_loss = loss_fn.discriminator_loss(maps, out.sample, max(global_step, loss_fn.config.disc_start))[0]
    (d_loss * (factor / loss_fn.config.disc_factor_max)).backward()
    optimizer_disc.step()
    optimizer_disc.zero_grad(set_to_none=True)


def count_gflop(run: Callable[[], None]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return counter.get_total_flops() / 1e9


def time_step_samples(
    runs: Dict[Hashable, Callable[[], object]], repeats: int, warmup: bool = True
) -> Dict[Hashable, List[float]]:
    """Seconds of each call of each run, ``repeats`` rounds of one call per run (interleaved: a machine that slows
    down for a while slows the runs of that round alike, so the per-round ratios stay comparable). Every other round
    runs them in reverse order, so that no run always follows the same one (whose freed memory and cache state it
    would inherit). ``warmup`` first calls each run once, untimed."""
    if warmup:
        for run in runs.values():
            run()  # allocator, oneDNN primitives
    seconds = defaultdict(list)
    for round_index in range(repeats):
        order = list(runs.items()) if round_index % 2 == 0 else list(runs.items())[::-1]
        for name, run in order:
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return dict(seconds)


def time_steps(runs: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, float]:
    """Median seconds per call of each run, timed interleaved (`time_step_samples`)."""
    return {name: statistics.median(values) for name, values in time_step_samples(runs, repeats).items()}


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
    with vgg16_trunk_available() as trunk:
        vae, loss_fn, optimizer_ae, optimizer_disc = build(args)
    maps = torch.rand(args.batch_size, 1, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0))
    maps = maps * 2 - 1
    if args.channels_last:
        maps = maps.contiguous(memory_format=torch.channels_last)
    switches = ("channels_last", "compile", "gradient_checkpointing")
    options = [
        f"LPIPS {'on (' + trunk + ')' if loss_fn.perceptual is not None else 'off'}",
        *[flag.replace("_", " ") for flag in switches if vars(args)[flag]],
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
    ]
    size = f"{args.resolution}x{args.resolution}, batch {args.batch_size}"
    print(f"# {args.preset} {list(vae.config.block_out_channels)}, {size}, " + ", ".join(options))
    print("# command: python " + " ".join(sys.argv))
    if args.memory:
        for name, mib in measure_memory(args, vae, loss_fn, optimizer_ae, optimizer_disc, maps).items():
            print(f"| {name} | {mib:8.0f} MiB |")
        return 0

    package = package_step_runner(vae, loss_fn, optimizer_ae, optimizer_disc)
    steps = {
        "package": package,
        "previous": lambda maps, step: previous_step(vae, loss_fn, optimizer_ae, optimizer_disc, maps, step),
        "original": lambda maps, step: original_step(vae, loss_fn, optimizer_ae, optimizer_disc, maps, step),
    }
    print("| phase | formulation | GFLOP / step | x original's 134.2 | seconds / step | x original's time |")
    print("|---|---|---|---|---|---|")
    for phase in args.phases:
        global_step = 0 if phase == 1 else 1
        runs = {name: (lambda run=steps[name]: run(maps, global_step)) for name in args.formulations}
        gflop = {name: count_gflop(run) for name, run in runs.items()}
        seconds = time_steps(runs, args.repeats)
        for name in args.formulations:
            time_ratio = f"{seconds[name] / seconds['original']:.3f}" if "original" in seconds else "-"
            print(
                f"| {phase} | {name} | {gflop[name]:.1f} | {gflop[name] / ORIGINAL_TRAINER_GFLOP:.3f} | "
                f"{seconds[name]:.3f} | {time_ratio} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
