#!/usr/bin/env python
"""Memory and FLOPs of one VAE-GAN training step per gradient-checkpointing mode, counted on the CPU.

The step is the training script's own (:class:`radiodiff_vae.training.VAEGANStep` prepared by one ``Accelerator``,
:class:`radiodiff_vae.RadioVAELoss` with LPIPS-VGG16, the discriminator from phase 2 on, foreach Adam as on CUDA),
run on fake tensors (``torch._subclasses.FakeTensorMode``): every operator, autocast cast and autograd node runs
with its real shapes and dtypes, and no data is computed. So the report's size (320 x 320, batch 8, bf16) is
counted in seconds on a CPU where the real step would take minutes.

Memory: every tensor storage the step creates is followed from its allocation until it is freed (each storage
once, views and in-place results included); the predicted peak is the most bytes alive at once, weights, gradients
and Adam states included, as ``torch.cuda.max_memory_allocated`` measures it (without the CUDA allocator's rounding
and cuDNN's workspaces). Activations kept per map are the bytes each network's forward left alive when a backward
starts (the bf16 copies of its weights that its convolutions keep included), divided by the batch size. The same
counter on real tensors gives the same numbers (``tests/test_benchmark_memory.py``).

FLOPs: convolutions and matmuls by ``torch.utils.flop_counter``'s formulas (what ``FlopCounterMode`` counts,
a multiply-add = 2), plus an estimate of the element-wise work (normalisations, activations, additions; a few FLOPs
per element, ``ELEMENTWISE_FLOPS``). Recomputation is every operator a module's forward runs again inside a
backward (checkpointing), and the GroupNorm that the fused GroupNorm + SiLU repeats in its backward.

Calibration: at the report's size the script also counts the configuration measured on an H200 (unfused, channels-
last) and prints how far each prediction is from the measured peak. The JSON holds, per mode, ``predicted_peak_gib``
(the larger of the phases) and ``recompute_flop_fraction``, with the fused GroupNorm + SiLU (``modes``) and without
(``modes_unfused``), every phase's details, and the calibration rows.

The LPIPS trunk is built with random weights when torchvision's VGG16 file is not on the machine: weights change
no byte and no FLOP. Never train with it.

Usage::

    # the report's step, every mode, with and without the fused GroupNorm + SiLU, and the calibration
    # (about 1.5 minutes on the project's 2-core CPU box)
    python benchmarks/benchmark_memory.py --preset radiodiff-vae --resolution 320 --batch_size 8 --precision bf16 \\
        --output_json memory.json
"""

import argparse
import contextlib
import copy
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensor, FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from radiodiff_vae import PRESETS, RadioVAE, RadioVAELoss
from radiodiff_vae.atomic import atomic_write_json
from radiodiff_vae.errors import InvalidArgumentError, OneLineArgumentParser, one_line
from radiodiff_vae.losses.perceptual import vgg16_trunk_for_measuring
from radiodiff_vae.models.normalization import group_norm_in_autocast_dtype
from radiodiff_vae.training import NonFiniteGuard, VAEGANStep

MODES = ("none", "selective", "full_resolution", "all")
COMPONENTS = ("autoencoder", "LPIPS", "discriminator")
GIB = 2**30
MIB = 2**20

# `torch.cuda.max_memory_allocated` of benchmark_train_step.py on one H200 (docs/benchmarks.md, "On a GPU";
# docs/results/h200-2026-12-04/step_bf16*.json): the report's preset, 320 x 320, batch 8, bf16 autocast with
# AutocastGroupNorm, LPIPS-VGG16 in bf16, channels-last, unfused GroupNorm + SiLU, phases 1 and 2.
H200_PEAK_GIB = {
    ("none", 1): 13.605381965637207,
    ("none", 2): 13.712603092193604,
    ("full_resolution", 1): 9.478956699371338,
    ("full_resolution", 2): 9.510395526885986,
}
H200_CONFIGURATION = dict(preset="radiodiff-vae", resolution=320, batch_size=8, precision="bf16")

# Estimated FLOPs per element of the output (per element of the input for the reductions and pools) of the ops
# that torch's FLOP counter leaves out; other floating-point ops tagged pointwise count 1.
ELEMENTWISE_FLOPS = {
    "native_group_norm": 8,  # mean, variance, normalise, scale and shift
    "native_group_norm_backward": 12,
    "native_batch_norm": 8,
    "_native_batch_norm_legit": 8,
    "_native_batch_norm_legit_functional": 8,
    "native_batch_norm_backward": 12,
    "silu": 4,  # exp, add, divide, multiply
    "silu_backward": 6,
    "max_pool2d_with_indices": 1,
    "max_pool2d_with_indices_backward": 1,
    "sum": 1,
    "mean": 1,
    "var_mean": 3,
}
INPUT_SIZED = {"max_pool2d_with_indices", "sum", "mean", "var_mean", "native_batch_norm"}


def parse_args(input_args: Optional[List[str]] = None) -> argparse.Namespace:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="radiodiff-vae", choices=sorted(PRESETS), help="RadioVAE preset.")
    parser.add_argument("--resolution", type=int, default=320, help="Map side in pixels.")
    parser.add_argument("--batch_size", type=int, default=8, help="Maps per step.")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="fp32, or bf16 autocast.")
    parser.add_argument(
        "--autocast_group_norm",
        default="auto",
        choices=["auto", "on", "off"],
        help="GroupNorms in the autocast dtype (auto: on with bf16, as examples/train_vae.py).",
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="Checkpointing modes.")
    parser.add_argument(
        "--fused_group_norm",
        default="both",
        choices=["on", "off", "both"],
        help="Count with RadioVAE.fuse_group_norm_silu() (on), without (off) or both; the JSON's `modes` hold the "
        "fused counts when they were made.",
    )
    parser.add_argument("--phases", type=int, nargs="+", default=[1, 2], choices=[1, 2], help="1: no discriminator.")
    parser.add_argument("--perceptual_weight", type=float, default=1.0, help="0 leaves LPIPS out.")
    parser.add_argument("--disc_base_channels", type=int, default=64, help="Filters of the PatchGAN's first layer.")
    parser.add_argument("--output_json", default=None, help="Also write the counts to this JSON file.")
    args = parser.parse_args(input_args)
    for name in ("resolution", "batch_size", "disc_base_channels"):
        if getattr(args, name) < 1:
            raise InvalidArgumentError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.perceptual_weight < 0:
        raise InvalidArgumentError(f"--perceptual_weight must be >= 0, got {args.perceptual_weight}")
    return args


# ----------------------------------------------------------------------------------------------------------------
# the counter
class StepCounter(TorchDispatchMode):
    """Follows every storage the operators create until it is freed, and counts FLOPs (on fake or real tensors).

    ``resident``: tensors alive before the step, by kind (weights, Adam states, maps); ``parameters``: those whose
    ``.grad`` is counted as gradients. ``owner`` (kept up to date by the forward hooks of
    :func:`attach_component_hooks`) names the network whose forward is running; storages made in a backward are
    ``"backward"``, elsewhere ``"loss and optimizer"``. ``module_depth`` counts the modules whose forward is running,
    so that a module forward inside a backward is recomputation.
    """

    def __init__(self, resident: Dict[str, List[torch.Tensor]], parameters: List[torch.Tensor]):
        super().__init__()
        self.fixed: Dict[str, int] = defaultdict(int)
        seen = set()
        for kind, tensors in resident.items():
            for tensor in tensors:
                storage = tensor.untyped_storage()
                if storage._cdata not in seen:
                    seen.add(storage._cdata)
                    self.fixed[kind] += storage.nbytes()
        self.fixed_ids = seen
        self.parameters = parameters
        self.live: Dict[int, tuple] = {}  # storage id -> (weak reference, bytes, owner)
        self.by_owner: Dict[str, int] = defaultdict(int)  # live bytes per owner
        self.current = sum(self.fixed.values())
        self.peak, self.peak_breakdown = self.current, dict(self.fixed)
        self.owner: List[str] = []
        self.module_depth = 0
        self.flops: Dict[str, int] = defaultdict(int)  # "<phase of the step>/<counted by>"
        self.backward_snapshots: List[Dict[str, int]] = []
        self._graph_tasks = set()

    # storages -------------------------------------------------------------------------------------------------
    def _sweep(self) -> None:
        for key in [key for key, (reference, _, _) in self.live.items() if reference.expired()]:
            _, size, owner = self.live.pop(key)
            self.current -= size
            self.by_owner[owner] -= size

    def _breakdown(self, in_backward: bool) -> Dict[str, int]:
        """Live bytes by kind: the resident ones, each network's, the gradients, the backward's other tensors."""
        totals = {**self.fixed, **{owner: size for owner, size in self.by_owner.items() if size}}
        grads = 0
        # a gradient is made in the backward (owner "backward"), then held as `.grad`
        for parameter in self.parameters if in_backward else ():
            entry = None if parameter.grad is None else self.live.get(parameter.grad.untyped_storage()._cdata)
            if entry is not None and entry[2] == "backward":
                grads += entry[1]
        if grads:
            totals["gradients"] = grads
            totals["backward"] -= grads
        return totals

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            tensor = args[0]
            if isinstance(tensor, FakeTensor) and tensor.constant is None:
                # A value no fake tensor holds. The step reads one: its count of non-finite micro-batches (0).
                return False if tensor.dtype == torch.bool else 0
        in_backward = torch._C._current_graph_task_id() != -1
        if in_backward:
            task = torch._C._current_graph_task_id()
            if task not in self._graph_tasks:  # the first operator of a backward: what the forwards left alive
                self._graph_tasks.add(task)
                self._sweep()
                self.backward_snapshots.append(dict(self.by_owner))
        output = func(*args, **kwargs)
        self._count_flops(func, args, kwargs, output, in_backward)
        owner = self.owner[-1] if self.owner and not in_backward else ("backward" if in_backward else "loss and optimizer")
        for tensor in tree_leaves(output):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key not in self.live and key not in self.fixed_ids:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes(), owner)
                    self.current += storage.nbytes()
                    self.by_owner[owner] += storage.nbytes()
        if self.current > self.peak:
            # `current` counts freed storages until a sweep, so it can only overstate: sweep before believing it
            self._sweep()
            if self.current > self.peak:
                self.peak, self.peak_breakdown = self.current, self._breakdown(in_backward)
        return output
        return output

    # FLOPs ----------------------------------------------------------------------------------------------------
    def _count_flops(self, func, args, kwargs, output, in_backward: bool) -> None:
        packet = func._overloadpacket
        name = packet.__name__.rstrip("_")
        recompute = in_backward and (self.module_depth > 0 or name == "native_group_norm")
        where = "recompute" if recompute else ("backward" if in_backward else "forward")
        if packet in flop_registry:
            self.flops[f"{where}/matmul"] += int(flop_registry[packet](*args, **kwargs, out_val=output))
            return
        floating = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if not floating:
            return
        if name in ELEMENTWISE_FLOPS:
            source = args[0] if name in INPUT_SIZED and isinstance(args[0], torch.Tensor) else floating[0]
            self.flops[f"{where}/elementwise"] += ELEMENTWISE_FLOPS[name] * source.numel()
        elif torch.Tag.pointwise in func.tags:
            self.flops[f"{where}/elementwise"] += floating[0].numel()


def attach_component_hooks(counter: StepCounter, components: Dict[str, torch.nn.Module]) -> Callable[[], None]:
    """Forward hooks that keep ``counter.owner`` and ``counter.module_depth`` current; returns their removal.

    ``always_call``: a checkpoint's early stop ends a recomputation by raising inside a module's forward."""
    handles = []
    for name, module in components.items():
        handles.append(module.register_forward_pre_hook(lambda *_, name=name: counter.owner.append(name)))
        handles.append(module.register_forward_hook(lambda *_: counter.owner.pop() and None, always_call=True))

    def enter(*_):
        counter.module_depth += 1

    def leave(*_):
        counter.module_depth -= 1

    handles.append(torch.nn.modules.module.register_module_forward_pre_hook(enter))
    handles.append(torch.nn.modules.module.register_module_forward_hook(leave, always_call=True))
    return lambda: [handle.remove() for handle in handles]


# ----------------------------------------------------------------------------------------------------------------
# the step
class RealModels:
    """The autoencoder and the loss (LPIPS, discriminator) with real weights on the CPU, built once; every count
    works on a copy (of fake tensors, or real ones for :func:`count_step`'s ``fake=False``)."""

    def __init__(self, args: argparse.Namespace):
        torch.manual_seed(0)
        self.vae = RadioVAE.from_preset(args.preset, sample_size=args.resolution)
        with vgg16_trunk_for_measuring() as trunk:
            self.loss_fn = RadioVAELoss(
                perceptual_weight=args.perceptual_weight, disc_start=1, disc_base_channels=args.disc_base_channels,
                allow_download=False,
            )  # fmt: skip
        self.trunk = trunk
        self._channels_last = None

    def get(self, channels_last: bool):
        if not channels_last:
            return self.vae, self.loss_fn
        if self._channels_last is None:  # converted before the fake copy, which keeps the strides
            layout = torch.channels_last
            self._channels_last = tuple(copy.deepcopy(m).to(memory_format=layout) for m in (self.vae, self.loss_fn))
        return self._channels_last


@dataclass(frozen=True)
class Variant:
    """What one count runs: ``mode`` ("none" or a checkpointing mode), the fused GroupNorm + SiLU, the phase (1, or
    2 with the discriminator), the memory layout, and the LPIPS checkpointing when not the one ``mode`` picks
    (``"trunk"``: the step as measured on the H200, before the selective mode)."""

    mode: str
    fused: bool
    phase: int
    channels_last: bool = False
    lpips_mode: Optional[str] = None


def count_step(args: argparse.Namespace, models: RealModels, variant: Variant, fake: bool = True) -> dict:
    """One counted optimizer step, after an uncounted one that creates Adam's states (as a measured step has them).
    ``fake=False`` runs the same count on real tensors (small sizes only: it computes)."""
    from accelerate import Accelerator

    real_vae, real_loss = models.get(variant.channels_last)
    fake_mode = FakeTensorMode() if fake else contextlib.nullcontext()
    with FakeCopyMode(fake_mode) if fake else contextlib.nullcontext():
        vae, loss_fn = copy.deepcopy(real_vae).train(), copy.deepcopy(real_loss).train()
    if variant.fused:
        vae.fuse_group_norm_silu()
    bf16 = args.precision == "bf16"
    if args.autocast_group_norm == "on" or (args.autocast_group_norm == "auto" and bf16):
        group_norm_in_autocast_dtype(vae)
    if variant.mode != "none":
        vae.enable_gradient_checkpointing(mode=variant.mode)
        loss_fn.enable_gradient_checkpointing(mode=variant.mode)
        if variant.lpips_mode is not None and loss_fn.perceptual is not None:
            loss_fn.perceptual.checkpoint_mode = variant.lpips_mode

    accelerator = Accelerator(cpu=True, mixed_precision="bf16" if bf16 else "no")
    # foreach: CUDA's default implementation, whose temporaries are part of the optimizer step's memory
    trained_ae = [*vae.parameters(), *loss_fn.trainable_autoencoder_parameters()]
    optimizer_ae = torch.optim.Adam(trained_ae, foreach=True)
    optimizer_disc = torch.optim.Adam(loss_fn.discriminator.parameters(), foreach=True)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for o in (optimizer_ae, optimizer_disc)]
    with fake_mode:
        # no device placement: the weights are on the CPU already (`.to` cannot swap fake parameters)
        objects = (vae, loss_fn.discriminator, optimizer_ae, optimizer_disc, *schedulers)
        prepared = accelerator.prepare(*objects, device_placement=[False] * len(objects))
        step = VAEGANStep(
            accelerator, *prepared[:2], loss_fn, *prepared[2:], NonFiniteGuard(10**9),
            channels_last=variant.channels_last,
        )  # fmt: skip
        generator = torch.Generator().manual_seed(0)
        maps = torch.rand(args.batch_size, 1, args.resolution, args.resolution, generator=generator) * 2 - 1
    global_step = 0 if variant.phase == 1 else loss_fn.config.disc_start

    weights = [*vae.parameters(), *vae.buffers(), *loss_fn.parameters(), *loss_fn.buffers()]
    parameters = [*vae.parameters(), *loss_fn.parameters()]
    reader = StepCounter({}, [])  # answers the step's one host read (`.item()`) during the uncounted step
    with fake_mode, reader:
        step(maps, global_step)
    states = [t for o in (optimizer_ae, optimizer_disc) for s in o.state.values() for t in s.values()]
    resident = {"weights": weights, "Adam states": [t for t in states if t.numel() > 1], "maps": [maps]}
    counter = StepCounter(resident, parameters)
    components = {"autoencoder": vae, "LPIPS": loss_fn.perceptual, "discriminator": loss_fn.discriminator}
    remove_hooks = attach_component_hooks(counter, {k: v for k, v in components.items() if v is not None})
    try:
        with fake_mode, counter:
            step(maps, global_step)
    finally:
        remove_hooks()

    kept = {name: max((s.get(name, 0) for s in counter.backward_snapshots), default=0) for name in COMPONENTS}
    matmul = sum(v for k, v in counter.flops.items() if k.endswith("/matmul"))
    total = sum(counter.flops.values())
    recomputed = sum(v for k, v in counter.flops.items() if k.startswith("recompute/"))
    trained = trained_ae + (list(loss_fn.discriminator.parameters()) if variant.phase == 2 else [])
    return {
        "predicted_peak_gib": counter.peak / GIB,
        "recompute_flop_fraction": recomputed / total if total else 0.0,
        "recompute_matmul_flop_fraction": counter.flops["recompute/matmul"] / matmul if matmul else 0.0,
        "step_tflop": total / 1e12,
        "step_matmul_tflop": matmul / 1e12,
        "flops": dict(counter.flops),
        "kept_mib_per_map": {name: kept[name] / MIB / args.batch_size for name in COMPONENTS},
        "weights_gib": counter.fixed["weights"] / GIB,
        "adam_states_gib": counter.fixed["Adam states"] / GIB,
        "gradients_gib": sum(p.numel() * p.element_size() for p in trained) / GIB,
        "at_peak_gib": {kind: size / GIB for kind, size in sorted(counter.peak_breakdown.items())},
    }


# ----------------------------------------------------------------------------------------------------------------
def calibration(args: argparse.Namespace, models: RealModels) -> List[dict]:
    """The H200 measurements against counts of the measured configuration: unfused GroupNorm + SiLU, channels-last,
    and with full-resolution checkpointing the LPIPS trunk recomputed slice by slice (as the code then did)."""
    if any(getattr(args, key) != value for key, value in H200_CONFIGURATION.items()) or args.perceptual_weight <= 0:
        return []
    rows = []
    for (mode, phase), measured in H200_PEAK_GIB.items():
        if phase not in args.phases:
            continue
        variant = Variant(mode, False, phase, channels_last=True, lpips_mode="trunk" if mode != "none" else None)
        predicted = count_step(args, models, variant)["predicted_peak_gib"]
        rows.append(dict(mode=mode, phase=phase, measured_gib=measured, predicted_gib=predicted,
                         difference_gib=predicted - measured, relative=(predicted - measured) / measured))  # fmt: skip
    return rows


def print_table(title: str, counts: Dict[str, Dict[int, dict]]) -> None:
    print(f"\n{title}\n")
    print("| mode | phase | kept MiB / map: autoencoder | LPIPS | discriminator | weights GiB | gradients GiB | "
          "Adam GiB | **predicted peak GiB** | step TFLOP (conv+matmul) | recomputed % of step FLOPs | "
          "recomputed conv % |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, phases in counts.items():
        for phase, row in phases.items():
            kept = row["kept_mib_per_map"]
            print(
                f"| {mode} | {phase} | {kept['autoencoder']:.0f} | {kept['LPIPS']:.0f} | {kept['discriminator']:.0f} | "
                f"{row['weights_gib']:.2f} | {row['gradients_gib']:.2f} | {row['adam_states_gib']:.2f} | "
                f"**{row['predicted_peak_gib']:.2f}** | {row['step_tflop']:.2f} ({row['step_matmul_tflop']:.2f}) | "
                f"{100 * row['recompute_flop_fraction']:.1f} | {100 * row['recompute_matmul_flop_fraction']:.1f} |"
            )
    sys.stdout.flush()


def main(input_args: Optional[List[str]] = None) -> int:
    args = parse_args(input_args)
    started = time.perf_counter()
    models = RealModels(args)
    fused_variants = {"on": [True], "off": [False], "both": [True, False]}[args.fused_group_norm]
    lpips = f"on ({models.trunk})" if models.loss_fn.perceptual is not None else "off"
    header = (
        f"# {args.preset}, {args.resolution}x{args.resolution}, batch {args.batch_size}, {args.precision}, LPIPS "
        f"{lpips}, NCHW; counted on fake tensors, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(header)
    print("# command: python " + " ".join(sys.argv))
    results = {"header": header, "command": sys.argv, "modes": {}}
    for fused in fused_variants:
        table = {
            mode: {phase: count_step(args, models, Variant(mode, fused, phase)) for phase in args.phases}
            for mode in args.modes
        }
        print_table(f"GroupNorm + SiLU {'fused' if fused else 'unfused'}:", table)
        key = "modes" if fused or len(fused_variants) == 1 else "modes_unfused"
        results[key] = {
            mode: {
                "predicted_peak_gib": max(row["predicted_peak_gib"] for row in phases.values()),
                "recompute_flop_fraction": max(row["recompute_flop_fraction"] for row in phases.values()),
                "fused_group_norm": fused,
                "phases": {str(phase): row for phase, row in phases.items()},
            }
            for mode, phases in table.items()
        }
    rows = calibration(args, models)
    results["calibration"] = rows
    if rows:
        print("\nAgainst the H200's peak allocated memory (benchmark_train_step.py, 2026-12-04; counted as measured: "
              "unfused GroupNorm + SiLU, channels-last, LPIPS trunk recomputed with full_resolution):\n")  # fmt: skip
        print("| mode | phase | measured GiB | predicted GiB | prediction - measurement |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['mode']} | {row['phase']} | {row['measured_gib']:.2f} | {row['predicted_gib']:.2f} | "
                  f"{row['difference_gib']:+.2f} GiB ({100 * row['relative']:+.1f}%) |")  # fmt: skip
    else:
        print("\n(no GPU measurement of this configuration to calibrate against)")
    print(f"\n# counted in {time.perf_counter() - started:.0f} s")
    if args.output_json:
        atomic_write_json(args.output_json, results)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InvalidArgumentError as error:
        print(f"benchmark_memory.py: error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
