#!/usr/bin/env python
"""Seconds per optimizer step of the ORIGINAL RadioDiff VAE trainer against this package's VAEGANStep, same network.

The original code is imported at run time from an extracted checkout of https://github.com/UNIC-Lab/RadioDiff
(``--radiodiff_dir``); nothing of it is copied here. Used from it, unchanged: ``AutoencoderKL`` and its
``training_step`` (denoising_diffusion_pytorch/encoder_decoder.py), ``LPIPSWithDiscriminator``
(denoising_diffusion_pytorch/loss.py, with taming's ``LPIPS`` and ``NLayerDiscriminator``) and ``EMA``
(denoising_diffusion_pytorch/ema.py). The loop body of ``Trainer.train`` (train_vae.py) cannot be imported on its
own (the module needs albumentations, scikit-image, pandas, matplotlib for its data sets), so `OriginalTrainerStep`
below replays it call for call, with configs/first_radio.yaml's settings (gradient_accumulate_every 2, AdamW at
lr 5e-6, disc_start 50001, kl_weight 1e-6, disc_weight 0.5, EMA every 10 steps, fp32).

One optimizer step of the original trainer (``Trainer.train``, one iteration of its ``while`` loop), both phases:

* pass ``ga_ind = 0`` (autoencoder): ``model.training_step`` runs the autoencoder forward (1st), then
  ``LPIPSWithDiscriminator.forward``: L1 + MSE + LPIPS (VGG16 on the maps and on the reconstructions, 1st),
  nll with ``logvar``, KL, the discriminator on the reconstructions (1st), and the adaptive weight with two
  ``torch.autograd.grad(..., decoder.conv_out.weight, retain_graph=True)``: one back through LPIPS (1st LPIPS
  backward), one back through the discriminator (1st discriminator backward, input gradients). This runs in
  phase 1 as well: the code tests the configured ``disc_factor`` (1.0), not the scheduled one, and multiplies the
  GAN term by a factor of 0 before ``disc_start``. Then ``loss.item()``, ``zero_grad`` of both optimizers,
  ``accelerator.backward`` of ``nll + kl_weight * kl + d_weight * factor * g_loss`` (2nd LPIPS backward, 2nd
  discriminator backward, now with parameter gradients, the autoencoder backward) and ``opt_ae.step()`` (AdamW;
  encoder, decoder, quant convs; not ``logvar``).
* pass ``ga_ind = 1`` (discriminator): ``model.training_step`` again: a 2nd autoencoder forward (fresh posterior
  noise, with its graph, never backpropagated) and the reconstruction terms again (2nd LPIPS forward, with its
  graph, unused), then the discriminator on the maps and on the detached reconstructions (2nd and 3rd
  discriminator forwards), the hinge loss times the scheduled factor (0 in phase 1), ``loss.item()``,
  ``opt_disc.zero_grad()``, the backward through both discriminator forwards (3rd and 4th discriminator
  backwards, also in phase 1, of a loss multiplied by 0) and ``opt_disc.step()`` (AdamW).
* then ``accelerator.clip_grad_norm_(model.parameters(), 1.0)`` (after both optimizer steps: it changes no
  update, but computes the norm), both schedulers' ``step()``, ten ``writer.add_scalar`` calls (eight of them on
  0-dim tensors: a host transfer each; here the values are only converted to Python floats, unless
  ``--tensorboard``), ``ema.to(device)`` and ``ema.update()`` (one ``.item()``; on every 10th step an
  ``lerp_`` over every float parameter and buffer of the whole model, which includes the three loss modules
  ``AutoencoderKL`` builds: three LPIPS-VGG16 copies and three discriminators, of which only ``model.loss`` is
  used). The EMA update is timed on its own and added at a tenth of its time (``ema_update_every = 10``).

In total, per step, in both phases alike: 2 autoencoder forwards, 1 autoencoder backward; 2 LPIPS forwards (4
VGG16 trunk passes), 2 LPIPS backwards (reconstruction side, input gradients only: the VGG is frozen); 3
discriminator forwards, 4 discriminator backwards (1 input-gradient only, 3 with parameter gradients, of a batch
each); 2 optimizer steps; 2 + 1 + 8 ``.item()``-like host transfers. ``accelerator.autocast()`` is a no-op
(``mixed_precision='no'``, ``amp`` False). The trainer's per-100-step text log and per-5000-step checkpoint and
sample are left out. The model is in ``train()`` mode, as after the trainer's first checkpoint (step 5000): the
dropout in LPIPS' linear heads is then active, as it is in the original for every later step.

This package's step (``radiodiff_vae.training.VAEGANStep``, built by ``benchmarks/benchmark_train_step.py``'s helpers):
phase 1: 1 autoencoder forward + backward, 1 LPIPS forward (2 VGG16 trunk passes) + backward, no discriminator and
no adaptive weight; phase 2: + 3 discriminator forwards (reconstructions with detached parameters, maps, detached
reconstructions) and 3 backwards of a batch (1 input-gradient only, 2 with parameter gradients), the adaptive
weight as two weight-gradient convolutions at the decoder's last layer. One host sync per optimizer step. Its
optimizers are those of benchmarks/benchmark_train_step.py's ``build`` (Adam, lr 1e-5, ``logvar`` trained), the
original's are AdamW (weight decay 0.01) without ``logvar``: a difference of a few element-wise passes over the
parameters, kept as each side has it.

Both networks get the same weights: the original AutoencoderKL is built with the matching config (ch = the first
of ``--block_out_channels``, ch_mult their ratios, 2 res blocks, z_channels = embed_dim = 3, no attention but the
mid blocks'), its parameter count is checked against ``RadioVAE.from_preset('radiodiff-ldm-f4', ...)``'s, its
weights are converted into the RadioVAE (radiodiff_vae.conversion.original) and the reconstructions of the
posterior mode are compared; the original discriminator's weights are loaded into the package's.

Files: the LPIPS heads of the original are ``taming/modules/autoencoder/lpips/vgg.pth`` in the checkout (the
original resolves that path relative to the working directory; this script changes into ``--radiodiff_dir``
while it builds the model; it never downloads). The VGG16 trunk is ``vgg16-397923af.pth`` under
``torch.hub.get_dir()/checkpoints``; if that file is missing, both LPIPS are built on random VGG16 trunks
(same FLOPs and time): the original's through a features-only stand-in for ``torchvision.models.vgg16``, the
package's as benchmarks/benchmark_train_step.py does it. Stubbed imports: ``einops``, only if it is not installed
and only while the original modules import (the original uses it in ``LinearAttention``, which this config
does not build; the stub raises if called).

Usage::

    git --git-dir=<mirror of UNIC-Lab/RadioDiff> archive HEAD | tar -x -C /work/radiodiff_orig
    OMP_NUM_THREADS=1 python benchmarks/benchmark_original_step.py --radiodiff_dir /work/radiodiff_orig \\
        --resolution 64 --batch 4 --repeats 5 --threads 1
"""

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import os
import platform
import statistics
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_train_step as package_bench  # noqa: E402  (this folder's script: build, runner, timing helpers)

from radiodiff_vae.losses.perceptual import vgg16_trunk_for_measuring, vgg16_trunk_path  # noqa: E402
from radiodiff_vae.conversion.original import convert_vae_state_dict  # noqa: E402

PRESET = "radiodiff-ldm-f4"
# configs/first_radio.yaml of the original (the radio VAE run)
ORIGINAL_LOSS_CONFIG = dict(disc_start=50001, kl_weight=0.000001, disc_weight=0.5, disc_in_channels=1)
ORIGINAL_EMBED_DIM = 3
ORIGINAL_TRAINER = dict(gradient_accumulate_every=2, lr=5e-6, min_lr=5e-7, train_num_steps=150000)
ORIGINAL_EMA = dict(beta=0.995, update_every=10)  # Trainer.__init__ defaults (ema_decay, ema_update_every)
LPIPS_HEADS = Path("taming/modules/autoencoder/lpips/vgg.pth")
ORIGINAL_FILES = (
    Path("denoising_diffusion_pytorch/encoder_decoder.py"),
    Path("denoising_diffusion_pytorch/loss.py"),
    Path("denoising_diffusion_pytorch/ema.py"),
    Path("taming/modules/losses/vqperceptual.py"),
    Path("taming/modules/losses/lpips.py"),
    Path("taming/modules/discriminator/model.py"),
    LPIPS_HEADS,
)
ORIGINAL_PACKAGES = ("denoising_diffusion_pytorch", "taming")


class BenchmarkError(Exception):
    """A problem reported as one line."""


def parse_args(input_args: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds per optimizer step of the original RadioDiff VAE trainer (imported from a checkout) "
        "against this package's VAEGANStep, on the same radiodiff-ldm-f4 network, maps and weights, LPIPS-VGG16 "
        "on; phase 1 (before disc_start) and phase 2 (after). Steps are timed in rounds (original, package, "
        "EMA update; every other round in reverse order); the table gives the medians, their ratio, and the median "
        "and quartiles of the per-round ratios. See the module docstring for what each step does.",
        epilog="Example: OMP_NUM_THREADS=1 python benchmarks/benchmark_original_step.py --radiodiff_dir "
        "/work/radiodiff_orig --resolution 64 --batch 4 --repeats 5 --threads 1",
    )
    parser.add_argument(
        "--radiodiff_dir",
        type=Path,
        required=True,
        help="Extracted checkout of github.com/UNIC-Lab/RadioDiff (holds denoising_diffusion_pytorch/ and taming/).",
    )
    parser.add_argument("--resolution", type=int, default=64, help="Map side in pixels (multiple of 4; default 64).")
    parser.add_argument("--batch", type=int, default=4, help="Maps per step (default 4).")
    parser.add_argument(
        "--block_out_channels",
        type=int,
        nargs="+",
        default=[32, 64, 128],
        help="Channels per level of the radiodiff-ldm-f4 network (default 32 64 128; the original's ch * ch_mult).",
    )
    parser.add_argument("--repeats", type=int, default=5, help="Timed steps per side and phase (median; default 5).")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda, cuda:1, ...: both trainers run there in fp32 with TF32 off (the report's precision); CUDA "
        "times are synchronised, and cuDNN autotuning is on for both.",
    )
    parser.add_argument("--phases", type=int, nargs="+", default=[1, 2], choices=[1, 2], help="Default: 1 2.")
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="Write the original's ten per-step scalars with a real SummaryWriter (into a temporary folder) "
        "instead of only converting them to floats.",
    )
    parser.add_argument(
        "--flops", action="store_true", help="Also count GFLOP per step of both (torch FlopCounterMode; one more step)."
    )
    args = parser.parse_args(input_args)
    for name in ("resolution", "batch", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device on this machine")
    if args.resolution % 4:
        parser.error(f"--resolution must be a multiple of 4 (two downsamplings), got {args.resolution}")
    if args.resolution < 24:
        parser.error(f"--resolution must be >= 24 (the PatchGAN needs 3 * 2**3 pixels), got {args.resolution}")
    channels = args.block_out_channels
    if len(channels) != 3 or any(c < 1 or c % channels[0] or c % 32 for c in channels):
        parser.error(
            f"--block_out_channels needs 3 multiples of 32 (GroupNorm of 32 groups), each a multiple of the first, "
            f"got {channels}"
        )
    return args


# ------------------------------------------------------------------------------------------------------------------
# the original code
def _einops_stub() -> types.ModuleType:
    stub = types.ModuleType("einops")
    stub.__spec__ = importlib.machinery.ModuleSpec("einops", None)

    def rearrange(*_args, **_kwargs):
        raise RuntimeError("einops is stubbed by benchmark_original_step.py (only LinearAttention uses it)")

    stub.rearrange = rearrange
    return stub


def import_original(radiodiff_dir: Path) -> types.SimpleNamespace:
    """The original modules, imported from ``radiodiff_dir`` (which leaves ``sys.path`` again afterwards)."""
    root = radiodiff_dir.resolve()
    missing = [str(path) for path in ORIGINAL_FILES if not (root / path).is_file()]
    if missing:
        raise BenchmarkError(
            f"{root} is not a checkout of UNIC-Lab/RadioDiff: it lacks {', '.join(missing)} (extract one with "
            f"`git --git-dir=<mirror> archive HEAD | tar -x -C {root}`)"
        )
    for name in ORIGINAL_PACKAGES:
        loaded = sys.modules.get(name)
        if loaded is not None and not str(getattr(loaded, "__file__", "") or "").startswith(str(root)):
            raise BenchmarkError(f"a module {name!r} from elsewhere ({loaded.__file__}) is already imported")
    stubbed = []
    if importlib.util.find_spec("einops") is None:
        sys.modules["einops"] = _einops_stub()
        stubbed.append("einops")
    sys.path.insert(0, str(root))
    dont_write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # leave the checkout as it is
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoder_decoder = importlib.import_module("denoising_diffusion_pytorch.encoder_decoder")
            ema = importlib.import_module("denoising_diffusion_pytorch.ema")
            lpips = importlib.import_module("taming.modules.losses.lpips")
    except ModuleNotFoundError as error:
        raise BenchmarkError(
            f"the original code imports {error.name!r}, which is not installed here (pip install {error.name})"
        ) from error
    finally:
        sys.path.remove(str(root))
        sys.dont_write_bytecode = dont_write_bytecode
        for name in stubbed:
            del sys.modules[name]  # the original modules keep what they bound at import
    for module in (encoder_decoder, ema, lpips):
        if not str(module.__file__).startswith(str(root)):
            raise BenchmarkError(f"{module.__name__} was imported from {module.__file__}, not from {root}")
    return types.SimpleNamespace(
        root=root, encoder_decoder=encoder_decoder, ema=ema, lpips=lpips, stubbed=stubbed
    )


def _trunk_state() -> Optional[Dict[str, torch.Tensor]]:
    path = vgg16_trunk_path()
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _vgg16_features_only(*_args, **_kwargs):
    """Stand-in for ``torchvision.models.vgg16(pretrained=True)`` when the trunk file is not torchvision's whole
    VGG16: the same ``features`` layers (the original LPIPS uses nothing else of the model), with the file's weights
    when it holds them (a features-only file, which is all this package's LPIPS needs), else randomly initialised."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)
    state = _trunk_state()
    if state is not None:
        prefix = "features."
        features.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return types.SimpleNamespace(features=features)


def original_ddconfig(args: argparse.Namespace) -> Dict[str, object]:
    channels = args.block_out_channels
    return dict(
        double_z=True,
        z_channels=ORIGINAL_EMBED_DIM,
        resolution=[args.resolution, args.resolution],
        in_channels=1,
        out_ch=1,
        ch=channels[0],
        ch_mult=[c // channels[0] for c in channels],
        num_res_blocks=2,
        attn_resolutions=[],
        dropout=0.0,
    )


def build_original(original: types.SimpleNamespace, args: argparse.Namespace, whole_vgg16: bool):
    """``AutoencoderKL`` as train_vae.py builds it (three loss modules included), quiet, without downloads."""
    heads = original.root / LPIPS_HEADS
    if heads.stat().st_size < 1000:
        raise BenchmarkError(f"{heads} is {heads.stat().st_size} bytes, not the LPIPS heads (a Git LFS pointer?)")
    lpips_module = original.lpips
    torchvision_models = lpips_module.models
    if not whole_vgg16:
        lpips_module.models = types.SimpleNamespace(vgg16=_vgg16_features_only)
    previous_dir = os.getcwd()
    os.chdir(original.root)  # the original opens taming/modules/autoencoder/lpips/vgg.pth relative to the cwd
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            model = original.encoder_decoder.AutoencoderKL(
                ddconfig=original_ddconfig(args),
                lossconfig=dict(ORIGINAL_LOSS_CONFIG),
                embed_dim=ORIGINAL_EMBED_DIM,
                ckpt_path=None,
            )
    except Exception as error:
        raise BenchmarkError(f"building the original AutoencoderKL failed: {type(error).__name__}: {error}") from error
    finally:
        os.chdir(previous_dir)
        lpips_module.models = torchvision_models
    return model.train()  # the trainer's state from its first checkpoint (step 5000) on: LPIPS dropout active


def autoencoder_parameters(model) -> List[torch.nn.Parameter]:
    """What the original trainer's ``opt_ae`` trains."""
    modules = (model.encoder, model.decoder, model.quant_conv, model.post_quant_conv)
    return [parameter for module in modules for parameter in module.parameters()]


class OriginalTrainerStep:
    """One iteration of the original ``Trainer.train`` loop (train_vae.py), with its optimizers, schedulers,
    accelerator and EMA, on a fixed batch; ``global_step`` is the trainer's ``self.step``."""

    def __init__(self, model, ema_class, tensorboard_dir: Optional[str], device: torch.device):
        from accelerate import Accelerator, DistributedDataParallelKwargs

        trainer = ORIGINAL_TRAINER
        self.accelerator = Accelerator(
            split_batches=True,
            mixed_precision="no",
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            cpu=device.type == "cpu",
        )
        self.accelerator.native_amp = False
        self.gradient_accumulate_every = trainer["gradient_accumulate_every"]
        opt_ae = torch.optim.AdamW(autoencoder_parameters(model), lr=trainer["lr"])
        opt_disc = torch.optim.AdamW(model.loss.discriminator.parameters(), lr=trainer["lr"])

        def lr_lambda(iteration):
            return max((1 - iteration / trainer["train_num_steps"]) ** 0.95, trainer["min_lr"])

        sched_ae = torch.optim.lr_scheduler.LambdaLR(opt_ae, lr_lambda=lr_lambda)
        sched_disc = torch.optim.lr_scheduler.LambdaLR(opt_disc, lr_lambda=lr_lambda)
        self.ema = ema_class(model, ema_model=None, **ORIGINAL_EMA)
        self.model, self.opt_ae, self.opt_disc, self.sched_ae, self.sched_disc = self.accelerator.prepare(
            model, opt_ae, opt_disc, sched_ae, sched_disc
        )
        self.writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(tensorboard_dir)
        # The timed steps take the EMA's early return (9 steps in 10); its update is timed by `ema_update`.
        self.ema.update_every = 10**15
        self.ema.step.fill_(1)

    def __call__(self, img: torch.Tensor, global_step: int) -> None:
        accelerator, model = self.accelerator, self.model
        device = accelerator.device
        total_loss = 0.0
        logged: Dict[str, torch.Tensor] = {}
        for ga_ind in range(self.gradient_accumulate_every):
            with accelerator.autocast():
                loss, log_dict = model.training_step(img, ga_ind, global_step)
                loss = loss / self.gradient_accumulate_every
                total_loss += loss.item()
                if ga_ind == 0:
                    self.opt_ae.zero_grad()
                    self.opt_disc.zero_grad()
                    accelerator.backward(loss)
                    self.opt_ae.step()
                    for key in ("rec_loss", "kl_loss", "d_weight", "disc_factor", "g_loss"):
                        logged[key] = log_dict[f"train/{key}"]
                else:
                    self.opt_disc.zero_grad()
                    accelerator.backward(loss)
                    self.opt_disc.step()
                    for key in ("disc_loss", "logits_real", "logits_fake"):
                        logged[key] = log_dict[f"train/{key}"]
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        accelerator.wait_for_everyone()
        self.sched_ae.step()
        self.sched_disc.step()
        scalars = {"Learning_Rate": self.opt_ae.param_groups[0]["lr"], "total_loss": total_loss, **logged}
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, global_step)
        else:
            for value in scalars.values():
                float(value)  # what add_scalar does first with a 0-dim tensor: a host transfer
        accelerator.wait_for_everyone()
        self.ema.to(device)
        self.ema.update()

    def ema_update(self) -> None:
        """What ``ema.update()`` does on every 10th step past ``update_after_step``."""
        self.ema.step.item()
        self.ema.update_moving_average(self.ema.ema_model, self.ema.model)


# ------------------------------------------------------------------------------------------------------------------
# the same network and weights on both sides
def share_weights(model, vae, loss_fn, maps: torch.Tensor) -> Dict[str, object]:
    """Copies the original's autoencoder and discriminator weights into the package's and checks them."""
    original_ae = sum(parameter.numel() for parameter in autoencoder_parameters(model))
    package_ae = sum(parameter.numel() for parameter in vae.parameters())
    original_disc = sum(parameter.numel() for parameter in model.loss.discriminator.parameters())
    package_disc = sum(parameter.numel() for parameter in loss_fn.discriminator.parameters())
    if original_ae != package_ae or original_disc != package_disc:
        raise BenchmarkError(
            f"not the same network: autoencoder parameters original {original_ae:,} vs package {package_ae:,}, "
            f"discriminator {original_disc:,} vs {package_disc:,}"
        )
    prefixes = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
    ae_state = {key: value for key, value in model.state_dict().items() if key.startswith(prefixes)}
    expected = vae.state_dict()
    converted = convert_vae_state_dict(ae_state, len(vae.config.block_out_channels))
    try:
        vae.load_state_dict({key: value.reshape(expected[key].shape) for key, value in converted.items()}, strict=True)
        loss_fn.discriminator.load_state_dict(model.loss.discriminator.state_dict(), strict=True)
    except (KeyError, RuntimeError) as error:
        raise BenchmarkError(f"the original weights do not load into the package's models: {error}") from error
    with torch.no_grad():
        model.eval(), vae.eval(), loss_fn.discriminator.eval()
        original_rec = model(maps, sample_posterior=False)[0]
        package_rec = vae(maps, sample_posterior=False).sample
        original_logits = model.loss.discriminator(maps)
        package_logits = loss_fn.discriminator(maps)
        model.train(), vae.train(), loss_fn.discriminator.train()
    rec_diff = (original_rec - package_rec).abs().max().item()
    logit_diff = (original_logits - package_logits).abs().max().item()
    scale = original_rec.abs().max().item() + 1e-12
    if rec_diff > 1e-3 * scale or logit_diff > 1e-3 * (original_logits.abs().max().item() + 1e-12):
        raise BenchmarkError(
            f"same weights, different outputs: max |reconstruction difference| {rec_diff:.3g}, "
            f"max |logit difference| {logit_diff:.3g}"
        )
    whole = sum(parameter.numel() for parameter in model.parameters())
    return dict(ae=original_ae, disc=original_disc, whole=whole, rec_diff=rec_diff, logit_diff=logit_diff)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    original = import_original(args.radiodiff_dir)
    trunk_state = _trunk_state()
    real_trunk = trunk_state is not None
    whole_vgg16 = real_trunk and any(key.startswith("classifier.") for key in trunk_state)
    package_args = argparse.Namespace(
        preset=PRESET, block_out_channels=list(args.block_out_channels), resolution=args.resolution,
        perceptual_weight=1.0, disc_base_channels=64, gradient_checkpointing=False, channels_last=False,
        compile=False, batch_size=args.batch,
    )  # fmt: skip
    with vgg16_trunk_for_measuring():
        vae, loss_fn, optimizer_ae, optimizer_disc = package_bench.build(package_args)
    model = build_original(original, args, whole_vgg16)
    maps = torch.rand(args.batch, 1, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0))
    maps = maps * 2 - 1
    device = torch.device(args.device)
    if device.type == "cuda":  # fp32 on both sides, as the report trains; the same cuDNN settings for both
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    model.to(device), vae.to(device), loss_fn.to(device)
    maps = maps.to(device)
    check = share_weights(model, vae, loss_fn, maps)

    with contextlib.ExitStack() as stack:
        tensorboard_dir = stack.enter_context(tempfile.TemporaryDirectory()) if args.tensorboard else None
        original_step = OriginalTrainerStep(model, original.ema.EMA, tensorboard_dir, device)
        package_step = package_bench.package_step_runner(vae, loss_fn, optimizer_ae, optimizer_disc)
        ema_every = ORIGINAL_EMA["update_every"]

        trunk = "torchvision VGG16 weights" if real_trunk else "random VGG16 trunks (weights file missing; same cost)"
        ddconfig = original_ddconfig(args)
        size = f"{args.resolution}x{args.resolution}, batch {args.batch}"
        threads = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        if device.type == "cuda":
            threads += f", {torch.cuda.get_device_name(device)} (fp32, TF32 off)"
        threads += f" (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
        print(f"# {PRESET} {list(args.block_out_channels)}, {size}, LPIPS-VGG16 on ({trunk}), {threads}, "
              f"{platform.processor() or platform.machine()}")  # fmt: skip
        print(f"# original: {original.root} AutoencoderKL(ch={ddconfig['ch']}, ch_mult={ddconfig['ch_mult']}, "
              f"num_res_blocks=2, z_channels=embed_dim=3), loss LPIPSWithDiscriminator{ORIGINAL_LOSS_CONFIG}"
              + (f"; stubbed imports: {', '.join(original.stubbed)}" if original.stubbed else ""))  # fmt: skip
        print(f"# same network: autoencoder {check['ae']:,} parameters, discriminator {check['disc']:,}, on both "
              f"sides; original weights loaded into the package's (max |diff|: reconstruction "
              f"{check['rec_diff']:.1e}, logits {check['logit_diff']:.1e}); the original model object holds "
              f"{check['whole']:,} parameters (3 loss modules), all in its EMA")  # fmt: skip
        print("# command: python " + " ".join(sys.argv))
        flops_header = " original GFLOP | package GFLOP |" if args.flops else ""
        print(f"| phase | original s/step | package s/step | ratio package/original | ratio per round, median "
              f"[quartiles] |{flops_header} original: trainer loop s | original: EMA s / {ema_every} |")  # fmt: skip
        print("|---|---|---|---|---|" + ("---|---|" if args.flops else "") + "---|---|")
        for phase in args.phases:
            original_global_step = 0 if phase == 1 else ORIGINAL_LOSS_CONFIG["disc_start"]
            package_global_step = 0 if phase == 1 else 1  # the package's loss is built with disc_start=1
            runs = {
                "original": lambda s=original_global_step: original_step(maps, s),
                "package": lambda s=package_global_step: package_step(maps, s),
                "ema": original_step.ema_update,
            }
            flops = ""
            if args.flops:
                gflop = {name: package_bench.count_gflop(runs[name]) for name in ("original", "package")}
                flops = f" {gflop['original']:.2f} | {gflop['package']:.2f} |"
            samples = package_bench.time_step_samples(
                runs, args.repeats, synchronize=lambda: package_bench.synchronize(device)
            )
            seconds = {name: statistics.median(values) for name, values in samples.items()}
            ema_share = seconds["ema"] / ema_every
            original_total = seconds["original"] + ema_share
            rounds = [p / (o + ema_share) for o, p in zip(samples["original"], samples["package"])]
            spread = statistics.quantiles(rounds, n=4) if len(rounds) > 1 else [rounds[0]] * 3
            print(
                f"| {phase} | {original_total:.4f} | {seconds['package']:.4f} | "
                f"{seconds['package'] / original_total:.3f} | {spread[1]:.3f} [{spread[0]:.3f}, {spread[2]:.3f}] |"
                f"{flops} {seconds['original']:.4f} | {ema_share:.4f} |"
            )
            sys.stdout.flush()
    return 0


def main(input_args: Optional[List[str]] = None) -> int:
    args = parse_args(input_args)
    try:
        return run(args)
    except (BenchmarkError, FileNotFoundError, ValueError) as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
