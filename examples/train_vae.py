#!/usr/bin/env python
"""Train a RadioVAE with the two-phase VAE-GAN schedule of the RadioDiff report (sections 4-5).

Phase 1 (steps < --disc_start): reconstruction (L1 + MSE + LPIPS under a learned variance) + KL only; the
discriminator does not run. Phase 2: the PatchGAN discriminator joins with an adaptive weight. One autoencoder
forward per micro-batch feeds both the generator and the discriminator objectives.

Launch lines (docs/training.md explains every flag):

    # quick start: tiny model, synthetic maps, CPU, ~5 minutes
    accelerate launch --cpu examples/train_vae.py --config examples/configs/quickstart.yaml

    # the report's configuration on RadioMapSeer, one GPU
    accelerate launch examples/train_vae.py --config examples/configs/radiodiff_vae.yaml \
        --data_dir /data/RadioMapSeer --output_dir runs/radiodiff-vae

    # 8 GPUs on one node (DDP), or 2 nodes x 8 GPUs
    accelerate launch --multi_gpu --num_processes 8 examples/train_vae.py --config ... --data_dir ...
    accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank $RANK \
        --main_process_ip $MASTER --main_process_port 29500 examples/train_vae.py --config ... --data_dir ...

    # resume the newest complete checkpoint of a run (starts fresh when there is none)
    accelerate launch examples/train_vae.py --config ... --resume_from_checkpoint latest

Bad flags, configuration files, data folders and checkpoints are refused before any work with one line
``train_vae.py: error: ...`` and exit code 2 (``accelerate launch -q`` keeps the launcher's own traceback out).
"""

import argparse
import os
import sys
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from radiodiff_vae.baseline import baseline_for_model
from radiodiff_vae.cli.arguments import add_data_arguments, check_training_data_arguments, data_source_from_args
from radiodiff_vae.data.batches import RunData, build_datasets, collate_maps
from radiodiff_vae.errors import DataError, InvalidArgumentError
from radiodiff_vae.losses.vae_gan import RadioVAELoss
from radiodiff_vae.models.autoencoder_radio import PRESETS, RadioVAE
from radiodiff_vae.models.checks import check_size_divisible
from radiodiff_vae.models.discriminator import NLayerDiscriminator
from radiodiff_vae.models.normalization import group_norm_in_autocast_dtype, group_norm_keeps_channels_last
from radiodiff_vae.training import (
    LogWindow,
    NonFiniteGuard,
    ThroughputMeter,
    TrainingProgress,
    Validator,
    VAEGANStep,
    add_auto_switch,
    add_training_arguments,
    build_lr_scheduler,
    check_training_arguments,
    checkpointing,
    compile_for_training,
    measure_scaling_factor,
    parse_args_with_config,
    peak_memory_mib,
    save_png,
    training_parser,
)
from radiodiff_vae.training.script import (
    check_paths,
    hold_output_dir,
    make_accelerator,
    out_of_memory_message,
    push_output_folder,
    resume_from,
    run_command_line,
    save_final_model,
    start_trackers,
)
from radiodiff_vae.training.validation import BASELINE_KEYS

logger = get_logger(__name__, log_level="INFO")

TRACKER_PROJECT_NAME = "radiodiff-vae"
HUB_MODEL_ID_EXAMPLE = "user/radiodiff-vae"


# ------------------------------------------------------------------------------------------------------------------
# arguments
def build_parser() -> argparse.ArgumentParser:
    parser = training_parser("Train a RadioVAE (VAE-GAN, two phases) with accelerate.")

    model = parser.add_argument_group("model")
    model.add_argument("--preset", type=str, default="radiodiff-vae", choices=sorted(PRESETS), help="Architecture.")
    model.add_argument(
        "--latent_channels",
        type=int,
        default=None,
        help="Channels of the latent instead of the preset's 3 (the report's section 7.2 suggests 4-8, more detail).",
    )
    model.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        default=None,
        help="Continue from a saved RadioVAE (folder or Hub id) instead of a freshly initialised --preset.",
    )
    model.add_argument(
        "--load_training_state",
        action="store_true",
        help="With a local --pretrained_model_name_or_path written by `radiodiff-vae convert-original`: also load its "
        "discriminator and logvar (discriminator.safetensors, logvar.safetensors).",
    )
    model.add_argument("--gradient_checkpointing", action="store_true", help="Trade compute for activation memory.")
    model.add_argument(
        "--gradient_checkpointing_scope",
        type=str,
        default="selective",
        choices=["selective", "full_resolution", "all"],
        help="With --gradient_checkpointing: selective keeps every convolution output and recomputes only the "
        "GroupNorms, SiLUs and additions (no convolution recomputed); full_resolution recomputes the full-resolution "
        "levels (encoder's first, decoder's last); all recomputes every level (the least memory). Which for which "
        "card: docs/training.md.",
    )

    add_data_arguments(parser, training=True)  # shared with the radiodiff-vae commands

    loss = parser.add_argument_group("VAE-GAN loss")
    loss.add_argument("--disc_start", type=int, default=50_001, help="First step of phase 2 (discriminator on).")
    loss.add_argument("--disc_factor", type=float, default=0.5, help="Adversarial factor in phase 2.")
    loss.add_argument("--disc_ramp_steps", type=int, default=0, help="Ramp the factor up over these steps.")
    loss.add_argument("--disc_weight", type=float, default=0.5, help="Multiplier of the adaptive GAN weight.")
    loss.add_argument("--kl_weight", type=float, default=1e-6, help="Weight of the KL term.")
    loss.add_argument(
        "--perceptual_weight", type=float, default=1.0, help="LPIPS weight; 0 needs no VGG16 weights (CPU, offline)."
    )
    loss.add_argument("--logvar_init", type=float, default=0.0, help="Initial log-variance of the likelihood.")
    loss.add_argument(
        "--freeze_logvar", action="store_true", help="Keep logvar fixed (what the original trainer did in effect)."
    )
    loss.add_argument("--gan_loss", type=str, default="hinge", choices=["hinge", "vanilla"], help="GAN objective.")
    loss.add_argument("--disc_num_layers", type=int, default=3, help="Stride-2 layers of the PatchGAN.")
    loss.add_argument("--disc_base_channels", type=int, default=64, help="Filters of the PatchGAN's first layer.")
    loss.add_argument("--disc_use_actnorm", action="store_true", help="ActNorm instead of BatchNorm in the PatchGAN.")

    groups = add_training_arguments(
        parser,
        defaults=dict(
            output_dir="radiodiff-vae-output", train_batch_size=8, gradient_accumulation_steps=2,
            max_train_steps=150_000, learning_rate=5e-6, lr_scheduler="polynomial", lr_end=5e-7, max_grad_norm=0.0,
            logging_steps=100, tracker_project_name=TRACKER_PROJECT_NAME, validation_steps=5000,
            checkpointing_steps=5000,
        ),
        help_texts=dict(
            learning_rate="Initial learning rate (both models).",
            max_grad_norm="Clip the gradient norm of each group (autoencoder, logvar, discriminator) to this; 0: off "
            "(the report).",
            mixed_precision="Autocast precision (weights stay fp32); default: the accelerate config's. The report "
            "trains in fp32.",
            checkpoints_total_limit="Keep the newest N checkpoints, plus the last one before --disc_start; 0 keeps "
            "all.",
        ),
        hub_model_id_example=HUB_MODEL_ID_EXAMPLE,
    )  # fmt: skip
    training = groups.training
    training.add_argument(
        "--disc_learning_rate", type=float, default=None, help="Discriminator learning rate (default: --learning_rate)."
    )
    add_auto_switch(
        training,
        "--channels_last",
        "Autoencoder, LPIPS and discriminator in channels-last memory layout (no NCHW <-> NHWC transposes around "
        "cuDNN's convolutions); auto: on with CUDA when torch's GroupNorm keeps channels-last there (not in torch "
        "2.11: its copies cost more than channels-last saves, docs/benchmarks.md), off on a CPU.",
    )
    add_auto_switch(
        training,
        "--autocast_group_norm",
        "The autoencoder's GroupNorms normalise in the autocast dtype (bf16/fp16; statistics still accumulated in "
        "fp32) instead of fp32, which CUDA autocast picks: less activation memory and traffic; auto: on with "
        "--mixed_precision bf16 or fp16.",
    )
    add_auto_switch(
        training,
        "--fused_group_norm",
        "Each GroupNorm + SiLU of the autoencoder as one autograd function that keeps only its input for the backward "
        "(one full-size tensor instead of two; the same outputs and gradients, the same checkpoints); on CUDA it also "
        "keeps channels-last through the normalisation; auto: on.",
    )
    add_auto_switch(
        training,
        "--cudnn_benchmark",
        "torch.backends.cudnn.benchmark: time cuDNN's algorithms once per input shape; auto: on with CUDA when "
        "every training batch has the same size.",
    )
    training.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the autoencoder's levels, the LPIPS trunk and the discriminator (fuses GroupNorm + SiLU "
        "and the element-wise work; the first steps take longer while it compiles).",
    )
    training.add_argument(
        "--max_nonfinite_steps",
        type=int,
        default=10,
        help="Stop after this many consecutive optimizer steps with a non-finite loss or gradient (each is skipped).",
    )
    groups.logging.add_argument(
        "--scaling_factor_maps", type=int, default=64, help="Training maps whose latents set scaling_factor = 1/std."
    )
    return parser


def parse_args(input_args: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses flags (and ``--config``) and checks every value and path before any work starts."""
    parser = build_parser()
    args = parse_args_with_config(parser, input_args)
    validate_args(args, parser)
    resume_path = check_paths(args)
    if resume_path is not None:  # a checkpoint of the architecture the flags build
        checkpointing.check_checkpoint_architecture(resume_path, expected_architecture(args))
    return args


def validate_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Raises an InvalidArgumentError naming the flag for any value the run could only fail on later."""
    check_training_arguments(
        args, parser,
        positive=["scaling_factor_maps", "max_nonfinite_steps", "disc_num_layers", "disc_base_channels"],
        non_negative=["disc_start", "disc_ramp_steps", "kl_weight", "perceptual_weight", "disc_factor", "disc_weight"],
        hub_model_id_example=HUB_MODEL_ID_EXAMPLE,
    )  # fmt: skip
    check_training_data_arguments(args, parser)
    if args.latent_channels is not None and args.pretrained_model_name_or_path is not None:
        raise InvalidArgumentError(
            "--latent_channels applies to a new --preset model, not to --pretrained_model_name_or_path"
        )
    if args.latent_channels is not None and args.latent_channels < 1:
        raise InvalidArgumentError(f"--latent_channels must be >= 1 when given, got {args.latent_channels}")
    if args.resolution is not None and args.pretrained_model_name_or_path is None:
        factor = 2 ** PRESETS[args.preset]["num_downsamples"]
        check_size_divisible(args.resolution, None, factor, "--resolution", owner=f"the {args.preset} preset's")
    discriminator_min = 3 * 2**args.disc_num_layers  # NLayerDiscriminator.min_input_size
    if args.resolution is not None and args.resolution < discriminator_min:
        raise InvalidArgumentError(
            f"--resolution {args.resolution} is below the discriminator's minimum {discriminator_min} for "
            f"--disc_num_layers {args.disc_num_layers}; pass a larger --resolution or fewer --disc_num_layers"
        )
    if args.disc_learning_rate is not None and not args.disc_learning_rate > 0:
        raise InvalidArgumentError(f"--disc_learning_rate must be > 0, got {args.disc_learning_rate}")
    if args.load_training_state and (
        args.pretrained_model_name_or_path is None or not os.path.isdir(args.pretrained_model_name_or_path)
    ):
        raise InvalidArgumentError(
            "--load_training_state needs --pretrained_model_name_or_path to be a local folder (a converted "
            f"checkpoint), got {args.pretrained_model_name_or_path!r}"
        )


def expected_architecture(args: argparse.Namespace) -> Dict[str, Dict]:
    """The config keys of the models the flags build, by checkpoint subfolder (a --pretrained_model_name_or_path on
    the Hub is not read here: its config is compared when the checkpoint loads)."""
    if args.pretrained_model_name_or_path is None:
        vae = dict(PRESETS[args.preset])
    else:
        folder = args.pretrained_model_name_or_path
        vae = RadioVAE.load_config(folder) if os.path.isfile(os.path.join(folder, "config.json")) else {}
    discriminator = dict(
        num_layers=args.disc_num_layers, base_channels=args.disc_base_channels, use_actnorm=args.disc_use_actnorm
    )
    return {"vae": vae, "discriminator": discriminator}


@dataclass
class AutoSwitches:
    channels_last: bool
    autocast_group_norm: bool
    fused_group_norm: bool
    cudnn_benchmark: bool


def resolve_auto_switches(args: argparse.Namespace, accelerator: Accelerator, train_dataloader) -> AutoSwitches:
    """``--channels_last``, ``--autocast_group_norm``, ``--fused_group_norm`` and ``--cudnn_benchmark``: ``on`` /
    ``off`` as given, ``auto`` decided here by the device, the precision and the batches (see each flag's help)."""
    on_cuda = accelerator.device.type == "cuda"
    num_maps, batch_size = len(train_dataloader.dataset), train_dataloader.batch_size
    same_size_batches = train_dataloader.drop_last or num_maps % batch_size == 0
    automatic = AutoSwitches(
        channels_last=on_cuda and group_norm_keeps_channels_last(accelerator.device),
        autocast_group_norm=accelerator.mixed_precision in ("bf16", "fp16"),
        fused_group_norm=True,
        cudnn_benchmark=on_cuda and same_size_batches,
    )
    values = {field.name: getattr(args, field.name) for field in fields(AutoSwitches)}
    return AutoSwitches(
        **{name: value == "on" or (value == "auto" and getattr(automatic, name)) for name, value in values.items()}
    )


# ------------------------------------------------------------------------------------------------------------------
# models
def build_models(
    args: argparse.Namespace, data: RunData, switches: AutoSwitches, device: torch.device
) -> Tuple[RadioVAE, RadioVAELoss]:
    """The autoencoder (``--preset`` at the maps' size, or ``--pretrained_model_name_or_path``) and the VAE-GAN loss
    of the flags (with ``--load_training_state``: the converted discriminator and logvar), set up for the device
    (checkpointing, memory layout, normalisation precision, compilation); refuses maps that they cannot take."""
    probe = collate_maps([data.train[0]])["pixel_values"]  # (1, 1, H, W)
    if args.pretrained_model_name_or_path is not None:
        vae = RadioVAE.from_pretrained(args.pretrained_model_name_or_path)
    else:
        overrides = {} if args.latent_channels is None else {"latent_channels": args.latent_channels}
        vae = RadioVAE.from_preset(args.preset, sample_size=int(probe.shape[-1]), **overrides)
    loss_fn = RadioVAELoss(
        kl_weight=args.kl_weight,
        perceptual_weight=args.perceptual_weight,
        logvar_init=args.logvar_init,
        learn_logvar=not args.freeze_logvar,
        disc_start=args.disc_start,
        disc_factor_max=args.disc_factor,
        disc_ramp_steps=args.disc_ramp_steps,
        disc_weight=args.disc_weight,
        gan_loss=args.gan_loss,
        disc_in_channels=vae.config.in_channels,
        disc_num_layers=args.disc_num_layers,
        disc_base_channels=args.disc_base_channels,
        disc_use_actnorm=args.disc_use_actnorm,
    )
    if args.load_training_state:
        from radiodiff_vae.conversion.original import load_training_state

        load_training_state(loss_fn, args.pretrained_model_name_or_path)
        logger.info(f"loaded the discriminator and logvar of {args.pretrained_model_name_or_path}")
    height, width = probe.shape[-2:]
    what = f"{data.source}: the map size"
    check_size_divisible(height, width, vae.downsample_factor, what, remedy="pass --resolution")
    if min(height, width) < loss_fn.discriminator.min_input_size:
        raise DataError(
            f"{data.source}: maps are {height}x{width}, smaller than the discriminator's minimum "
            f"{loss_fn.discriminator.min_input_size}; pass a larger --resolution or fewer --disc_num_layers"
        )
    if args.gradient_checkpointing:
        vae.enable_gradient_checkpointing(mode=args.gradient_checkpointing_scope)
        loss_fn.enable_gradient_checkpointing(mode=args.gradient_checkpointing_scope)
    if switches.fused_group_norm:
        vae.fuse_group_norm_silu()
    if switches.channels_last:
        vae.to(memory_format=torch.channels_last)
        loss_fn.to(memory_format=torch.channels_last)
    if switches.autocast_group_norm:
        group_norm_in_autocast_dtype(vae)
    if args.compile:
        compile_for_training(vae, loss_fn)
    loss_fn.to(device)
    return vae, loss_fn


def build_optimizers(args: argparse.Namespace, num_processes: int, autoencoder_parameters, discriminator_parameters):
    """Adam for the autoencoder (+ logvar) and for the discriminator, and their learning-rate schedules."""
    adam = dict(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, weight_decay=args.adam_weight_decay)
    disc_lr = args.disc_learning_rate or args.learning_rate
    optimizer_ae = torch.optim.Adam(autoencoder_parameters, lr=args.learning_rate, **adam)
    optimizer_disc = torch.optim.Adam(discriminator_parameters, lr=disc_lr, **adam)
    # A prepared scheduler steps once per process per optimizer step, hence the factor. The discriminator's
    # schedule starts at --disc_start: it enters phase 2 at its full rate and decays over the steps it trains.
    processes = num_processes
    schedule = dict(
        num_warmup_steps=args.lr_warmup_steps * processes, num_training_steps=args.max_train_steps * processes,
        power=args.lr_power, num_cycles=args.lr_num_cycles,
    )  # fmt: skip
    scheduler_ae = build_lr_scheduler(args.lr_scheduler, optimizer_ae, lr_end=args.lr_end, **schedule)
    disc_start = min(args.disc_start, args.max_train_steps - 1) * processes
    disc_lr_end = args.lr_end * disc_lr / args.learning_rate
    scheduler_disc = build_lr_scheduler(
        args.lr_scheduler, optimizer_disc, lr_end=disc_lr_end, start_step=disc_start, **schedule
    )
    return optimizer_ae, optimizer_disc, scheduler_ae, scheduler_disc


# ------------------------------------------------------------------------------------------------------------------
# the run
def main(args: argparse.Namespace) -> int:
    """Trains a RadioVAE as ``args`` (:func:`parse_args`) say; returns 0, or 3 after a streak of non-finite steps."""
    accelerator = make_accelerator(args)

    # Everything the run writes happens while it holds the output folder; a wrong checkpoint or Hub repository
    # fails here, before any expensive work.
    with hold_output_dir(accelerator, args) as (resume_path, hub_repo_id):
        # ---- data (the main process first: it fills the datasets cache the others then read)
        with accelerator.main_process_first():
            data = build_datasets(
                data_source_from_args(args), args.num_validation_maps, args.validation_split,
                args.max_train_samples, args.random_flip,
            )  # fmt: skip
        train_dataloader = DataLoader(
            data.train, batch_size=args.train_batch_size, shuffle=True, collate_fn=collate_maps,
            num_workers=args.dataloader_num_workers,
            drop_last=len(data.train) >= args.train_batch_size * accelerator.num_processes,
        )  # fmt: skip
        switches = resolve_auto_switches(args, accelerator, train_dataloader)
        torch.backends.cudnn.benchmark = switches.cudnn_benchmark

        # ---- models, loss, optimizers, schedulers
        vae, loss_fn = build_models(args, data, switches, accelerator.device)
        # The loss's trained parts are ordinary modules, prepared below like the autoencoder.
        discriminator, log_variance = loss_fn.discriminator, loss_fn.log_variance
        ema = None
        if args.use_ema:
            ema = EMAModel(vae.parameters(), decay=args.ema_decay, model_cls=RadioVAE, model_config=vae.config)
            ema.to(accelerator.device)

        optimizer_ae, optimizer_disc, scheduler_ae, scheduler_disc = build_optimizers(
            args, accelerator.num_processes, list(vae.parameters()) + loss_fn.trainable_autoencoder_parameters(),
            discriminator.parameters(),
        )  # fmt: skip

        # ---- one prepare (a frozen logvar has nothing to train, average or checkpoint: it stays as it is)
        vae, discriminator, optimizer_ae, optimizer_disc, scheduler_ae, scheduler_disc, train_dataloader = (
            accelerator.prepare(
                vae, discriminator, optimizer_ae, optimizer_disc, scheduler_ae, scheduler_disc, train_dataloader
            )
        )
        if not args.freeze_logvar:
            log_variance = accelerator.prepare(log_variance)
        raw_vae: RadioVAE = accelerator.unwrap_model(vae)

        # ---- checkpoint contents: the models (vae/ and discriminator/ as save_pretrained folders, logvar by
        # accelerate), optimizers, schedulers, random states, the step counters and the EMA
        checkpointing.register_checkpoint_hooks(accelerator, {RadioVAE: "vae", NLayerDiscriminator: "discriminator"})
        guard = NonFiniteGuard(args.max_nonfinite_steps)
        progress = TrainingProgress(guard)
        accelerator.register_for_checkpointing(progress)
        if ema is not None:
            accelerator.register_for_checkpointing(ema)

        # ---- trackers
        start_trackers(accelerator, args)

        # ---- resume: the weights, optimizers, schedulers, RNG states and step of the checkpoint
        global_step, first_epoch, batches_to_skip, num_epochs = resume_from(
            accelerator, resume_path, progress, len(train_dataloader), args.max_train_steps, ema
        )
        images_per_step = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        logger.info(describe_run(args, data, accelerator.num_processes, global_step))

        # ---- loop
        train_step = VAEGANStep(
            accelerator, vae, discriminator, loss_fn, optimizer_ae, optimizer_disc, scheduler_ae, scheduler_disc,
            guard, max_grad_norm=args.max_grad_norm, seed=args.seed, channels_last=switches.channels_last,
            log_variance=log_variance,
        )  # fmt: skip
        validate = Validator(
            accelerator, raw_vae, data.validation, collate_maps, args.train_batch_size, args.num_validation_images,
            args.output_dir, data.validation_kind, ema=ema,
        )  # fmt: skip
        window, meter = LogWindow(), ThroughputMeter()
        last_checkpoint = resume_path
        progress_bar = tqdm(
            total=args.max_train_steps, initial=global_step, desc="steps", disable=not accelerator.is_local_main_process
        )
        for epoch in range(first_epoch, num_epochs):
            if global_step >= args.max_train_steps:
                break
            train_dataloader.set_epoch(epoch)
            skip = batches_to_skip if epoch == first_epoch else 0
            loader = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
            for batch in loader:
                result = train_step(batch["pixel_values"], global_step)  # (B, 1, H, W) in [-1, 1]
                window.add_micro_batch(result.logs, result.finite)
                if not result.sync:
                    continue
                # ---- one optimizer step done
                if result.applied and ema is not None:
                    ema.step(raw_vae.parameters())
                global_step += 1
                progress.global_step = global_step
                meter.update(images_per_step)
                progress_bar.update(1)
                if guard.exhausted:  # the weights were not updated by those steps: the checkpoints hold good ones
                    progress_bar.close()
                    logger.error(
                        f"stopping: {guard.describe_streak(global_step - 1)}. The weights were not updated by those "
                        f"steps; the last good checkpoint is {last_checkpoint or '(none saved yet)'}. See "
                        "docs/training.md, 'Training instability'."
                    )
                    accelerator.end_training()
                    return 3
                window.add_step(step_records(result, args.max_grad_norm))
                phase = 2 if result.adversarial else 1

                if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
                    record = training_record(
                        window.summary(accelerator), phase, (scheduler_ae, scheduler_disc), meter, guard, epoch,
                        accelerator.device,
                    )  # fmt: skip
                    accelerator.log(record, step=global_step)
                    progress_bar.set_postfix(
                        phase=phase, loss=f"{record['train/total']:.4g}", rec=f"{record['train/rec']:.4f}",
                        skipped=guard.total, refresh=False,
                    )  # fmt: skip
                    window.reset()
                    meter.reset()

                if global_step % args.checkpointing_steps == 0:
                    last_checkpoint = checkpointing.save_checkpoint(
                        accelerator, args.output_dir, global_step, total_limit=args.checkpoints_total_limit,
                        keep_step=args.disc_start, metadata={"phase_of_last_step": phase},
                    )  # fmt: skip
                    logger.info(f"saved {last_checkpoint}")

                if global_step % args.validation_steps == 0 and global_step < args.max_train_steps:
                    if accelerator.is_main_process:
                        validate(global_step, logger)
                    accelerator.wait_for_everyone()

                if global_step >= args.max_train_steps:
                    break
        progress_bar.close()

        # ---- the end: (EMA) weights, scaling factor, final validation, model card, upload
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if ema is not None:
                ema.copy_to(raw_vae.parameters())
                validate.ema = None  # the weights are the EMA's from here on
            save_final_outputs(args, accelerator, raw_vae, data, validate, global_step, hub_repo_id)
        accelerator.wait_for_everyone()
        accelerator.end_training()
    return 0


def describe_run(args: argparse.Namespace, data: RunData, num_processes: int, global_step: int) -> str:
    """The log line of a run's start: its maps, the maps per step, the phases, where it starts."""
    accumulation = args.gradient_accumulation_steps
    images_per_step = args.train_batch_size * num_processes * accumulation
    return (
        f"{data.source}: {len(data.train)} training maps, {len(data.validation)} {data.validation_kind}; "
        f"{num_processes} process(es) x batch {args.train_batch_size} x accumulation {accumulation} "
        f"= {images_per_step} maps per step; {args.max_train_steps} steps (phase 2 from step {args.disc_start}); "
        f"starting at step {global_step}"
    )


def training_record(summary, phase, schedulers, meter, guard, epoch, device) -> Dict[str, float]:
    """What the trackers get every --logging_steps: the averaged losses and gradient norms, phase, learning rates,
    throughput, peak memory, skipped steps."""
    record = {f"train/{key}": value for key, value in summary.items()}
    record.update(
        {
            "train/phase": phase,
            "train/lr_autoencoder": schedulers[0].get_last_lr()[0],
            "train/lr_discriminator": schedulers[1].get_last_lr()[0],
            "train/images_per_second": meter.images_per_second,
            "train/seconds_per_step": meter.seconds_per_step,
            "train/peak_memory_mib": peak_memory_mib(device),
            "train/nonfinite_steps_skipped": guard.total,
            "train/epoch": epoch,
        }
    )
    return record


def step_records(result, max_grad_norm: float) -> Dict[str, torch.Tensor]:
    """The per-optimizer-step logs: gradient norms and, with clipping on, clip ratios (norm / max_norm; > 1 means
    the group was clipped)."""
    records = {f"grad_norm_{name}": norm for name, norm in result.grad_norms.items()}
    if max_grad_norm > 0:
        records.update({f"clip_ratio_{name}": norm / max_grad_norm for name, norm in result.grad_norms.items()})
    return records


def save_final_outputs(args, accelerator, raw_vae, data: RunData, validate, global_step, hub_repo_id) -> None:
    """The end of a run (main process): scaling factor, final validation (and the maps outside training), model,
    sample grid, model card, upload."""
    scaling_factor = measure_scaling_factor(
        raw_vae, data.train, collate_maps, args.scaling_factor_maps, args.train_batch_size, accelerator.device,
        args.seed,
    )  # fmt: skip
    raw_vae.register_to_config(scaling_factor=scaling_factor)
    final_metrics, grid = validate(global_step, logger)
    description = (
        f"Trained with `examples/train_vae.py` for {global_step} steps on {data.source}; the metrics are "
        f"those of {len(data.validation)} {data.validation_kind}."
    )
    if data.test is not None:
        test_metrics, _ = Validator(
            accelerator, raw_vae, data.test, collate_maps, args.train_batch_size, 0, args.output_dir,
            "maps outside training (RadioUNet's disjoint test split)", prefix="test",
        )(global_step, logger)  # fmt: skip
        scores = ", ".join(
            f"{key} {value:.4f}" for key, value in sorted(test_metrics.items()) if key not in BASELINE_KEYS
        )
        description += (
            f" On {len(data.test)} maps outside training (RadioUNet's disjoint test split, comparable with the "
            f"literature): {scores}; the resize baseline there has PSNR {test_metrics['baseline_psnr']:.2f} dB "
            f"(gap {test_metrics['psnr_gap_db']:+.2f} dB)."
        )
    save_final_model(raw_vae, args.output_dir)
    sample = os.path.join(args.output_dir, "sample.png")
    if grid is not None:
        save_png(grid, sample)
    from radiodiff_vae.hub import save_model_card

    # the maps as validation saw them (at --resolution when it is given)
    size = collate_maps([data.validation[0]])["pixel_values"].shape[-2:]
    baseline = baseline_for_model(raw_vae, *size)
    save_model_card(
        args.output_dir,
        raw_vae,
        training_args=vars(args),
        metrics={key: value for key, value in final_metrics.items() if key not in BASELINE_KEYS},
        baseline={
            "method": baseline.describe(),
            "psnr": final_metrics["baseline_psnr"],
            "ssim": final_metrics["baseline_ssim"],
        },
        sample_image=sample if grid is not None else None,
        repo_id=hub_repo_id,
        description=description,
        eval_dataset=data.label,
        eval_split="validation",
    )
    logger.info(
        f"saved the {'EMA ' if args.use_ema else ''}model to {args.output_dir} (scaling_factor "
        f"{scaling_factor:.4f})"
    )
    if args.push_to_hub:
        push_output_folder(args.output_dir, hub_repo_id, "Upload RadioVAE trained with examples/train_vae.py")
        logger.info(f"uploaded {args.output_dir} to the Hub repository {hub_repo_id}")


# ------------------------------------------------------------------------------------------------------------------
# the command line
def describe_out_of_memory(args: argparse.Namespace, device: Optional[torch.device]) -> str:
    """The one line of a CUDA out-of-memory error, with this script's remedies first."""
    remedies: List[str] = []
    if not args.gradient_checkpointing:
        remedies.append(
            "--gradient_checkpointing (selective: about 6.2 GiB counted at batch 8 and 320x320 in bf16, "
            "docs/benchmarks.md)"
        )
    elif args.gradient_checkpointing_scope != "all":
        remedies.append("--gradient_checkpointing_scope all")
    model = args.preset if args.pretrained_model_name_or_path is None else args.pretrained_model_name_or_path
    return out_of_memory_message(
        model, args.train_batch_size, args.gradient_accumulation_steps, args.mixed_precision, args.resolution,
        device, remedies,
    )  # fmt: skip


def run_from_command_line(input_args: Optional[Sequence[str]] = None) -> int:
    """:func:`main` as a command: bad input is one line ``train_vae.py: error: ...`` and exit code 2, a CUDA
    out-of-memory error one line and exit code 1; a bug keeps its traceback
    (:func:`radiodiff_vae.training.script.run_command_line`)."""
    return run_command_line(parse_args, main, "train_vae.py", input_args, out_of_memory=describe_out_of_memory)


if __name__ == "__main__":
    sys.exit(run_from_command_line())
