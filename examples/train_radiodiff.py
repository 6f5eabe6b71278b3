#!/usr/bin/env python
"""Train the construction stage of RadioDiff: a latent diffusion model that turns a city (building mask + transmitter)
into its radio map, on a frozen RadioVAE's latent (``RadioDiffPipeline``); or, with ``--direct``, the direct baseline
(``RadioUNetPipeline``: a UNet from the same city features to the map in pixel space) on the same data.

Each map's latent is computed once with the frozen VAE (cached in ``--latent_cache``) and scaled by its
``scaling_factor``; the UNet learns the scheduler's ``--prediction_type`` target from ``[noisy latent, city features]``.
The final pipeline (EMA weights with ``--use_ema``) is written to ``--output_dir`` with a model card.

Launch lines (docs/construction.md explains the recipe and its numbers):

    # CPU quick recipe, after the VAE quick start:
    #   python examples/train_vae.py --config examples/configs/quickstart.yaml
    python examples/train_radiodiff.py --config examples/configs/radiodiff_quickstart.yaml

    # the direct baseline on the same data, for the training time the run above reports
    python examples/train_radiodiff.py --config examples/configs/radiodiff_quickstart.yaml --direct \
        --unet_block_out_channels 32 64 128 --output_dir outputs/radiodiff_direct --max_train_seconds 551

    # RadioMapSeer on one GPU, bf16, with a VAE from the Hub
    accelerate launch examples/train_radiodiff.py --pretrained_vae user/radiodiff-vae --data_dir /data/RadioMapSeer \
        --mixed_precision bf16 --train_batch_size 32 --use_ema --output_dir runs/radiodiff

    # 8 GPUs (DDP); resume the newest complete checkpoint of a run (a fresh start when there is none)
    accelerate launch --multi_gpu --num_processes 8 examples/train_radiodiff.py ... --resume_from_checkpoint latest

``--max_train_seconds`` stops at the first optimizer step after that much training time (steps and data loading;
start-up, validation and checkpoints are not counted), saves a checkpoint there and the pipeline as usual. The
checkpoints carry the time spent, so a resumed run counts on from it: ``--max_train_seconds`` is the budget of the
whole run across resumes (raise it, and ``--max_train_steps``, to extend a finished run).

Bad flags, configuration files, data folders, VAE folders and checkpoints are refused before any work with one line
``train_radiodiff.py: error: ...`` and exit code 2; a non-finite loss stops the run with exit code 3, the newest
checkpoint intact.
"""

import argparse
import os
import sys
from functools import partial
from typing import Any, Dict, Optional, Sequence

import torch
from accelerate.logging import get_logger
from diffusers import UNet2DModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from radiodiff_vae import CityEncoder, RadioDiffPipeline, RadioUNetPipeline
from radiodiff_vae.atomic import atomic_directory
from radiodiff_vae.cli.arguments import (
    add_data_arguments,
    check_training_data_arguments,
    data_source_from_args,
    load_model,
)
from radiodiff_vae.data.batches import build_datasets, collate_maps
from radiodiff_vae.data.latents import LatentRadioMaps
from radiodiff_vae.errors import CheckpointError, InvalidArgumentError
from radiodiff_vae.models.checks import check_size_divisible
from radiodiff_vae.models.city_encoder import FEATURE_NAMES
from radiodiff_vae.pipelines.radiodiff import PREDICTION_TYPES, default_scheduler
from radiodiff_vae.training import (
    LogWindow,
    NonFiniteLossError,
    ThroughputMeter,
    TrainingClock,
    TrainingProgress,
    add_auto_switch,
    add_training_arguments,
    build_lr_scheduler,
    check_training_arguments,
    checkpointing,
    parse_args_with_config,
    save_png,
    step_generator,
    training_parser,
)
from radiodiff_vae.training.construction import (
    CityFeatureMaps,
    ConstructionValidator,
    diffusion_loss,
    direct_loss,
    read_vae_config,
    read_vae_training_args,
    vae_synthetic_seed,
)
from radiodiff_vae.training.script import (
    check_paths,
    hold_output_dir,
    make_accelerator,
    resume_from,
    run_command_line,
    start_trackers,
)

logger = get_logger(__name__, log_level="INFO")

TRACKER_PROJECT_NAME = "radiodiff-construction"
HUB_MODEL_ID_EXAMPLE = "user/radiodiff"
# Model sizes the flags leave open: the latent pipeline's, and the direct predictor's (RadioUNetPipeline.from_sizes).
MODE_DEFAULTS = {
    "latent": dict(unet_block_out_channels=[64, 128, 256], layers_per_block=2, attention=True, city_channels=32),
    "direct": dict(
        unet_block_out_channels=[32, 64, 128], layers_per_block=2, attention=False, city_channels=None,
        city_block_out_channels=[32],
    ),
}  # fmt: skip
# --cache_city_features auto: cache when the features of all training maps take at most this much memory.
FEATURE_CACHE_AUTO_BYTES = 2 << 30
LATENT_CACHE_NAME = "latents.safetensors"


# ------------------------------------------------------------------------------------------------------------------
# arguments
def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(
        "Train RadioDiff's construction stage (latent diffusion on a frozen RadioVAE) or, with --direct, the direct "
        "pixel-space baseline, with accelerate."
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--pretrained_vae",
        type=str,
        default=None,
        help="The frozen first stage (required): a train_vae.py output folder, one of its checkpoint-N folders, a "
        "RadioDiffPipeline folder (its vae/), or a Hub id.",
    )
    model.add_argument(
        "--direct",
        action="store_true",
        help="Train the direct baseline (RadioUNetPipeline: UNet from the city features to the map in pixel space, "
        "loss MSE on the map) on the same data with the same inputs, instead of the latent diffusion model.",
    )
    model.add_argument(
        "--prediction_type", type=str, default="v_prediction", choices=PREDICTION_TYPES, help="Denoiser target."
    )
    model.add_argument("--num_train_timesteps", type=int, default=1000, help="Diffusion timesteps of the scheduler.")
    model.add_argument(
        "--default_num_inference_steps",
        type=int,
        default=4,
        help="Sampling steps the saved pipeline takes by default (model_index.json); also those of validation.",
    )
    model.add_argument(
        "--unet_block_out_channels",
        type=int,
        nargs="+",
        default=None,
        metavar="C",
        help="Channels of each UNet level (default: 64 128 256; --direct: 32 64 128).",
    )
    model.add_argument("--layers_per_block", type=int, default=None, help="Resnets per UNet level (default 2).")
    model.add_argument(
        "--attention",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Self-attention at the UNet's lowest level and mid block (default: on; --direct: off).",
    )
    model.add_argument(
        "--unet_norm_num_groups",
        type=int,
        default=None,
        help="GroupNorm groups of the UNet (default: the largest of 32, 16, ..., 1 dividing every level's channels).",
    )
    model.add_argument(
        "--city_channels",
        type=int,
        default=None,
        help="Output channels of the city encoder, its appended physics features included (default 32; --direct: "
        "the number of --in_features, i.e. the features alone without a learned stem); at least that number.",
    )
    model.add_argument(
        "--city_block_out_channels",
        type=int,
        nargs="+",
        default=None,
        metavar="C",
        help="Channels of the city encoder's stem levels (default: one level per VAE downsampling, 32 doubling up to "
        "128; --direct: 32); multiples of 8.",
    )
    model.add_argument(
        "--in_features",
        type=str,
        nargs="+",
        default=list(FEATURE_NAMES),
        choices=FEATURE_NAMES,
        metavar="NAME",
        help=f"Physics features of the city the encoder sees, among {', '.join(FEATURE_NAMES)}.",
    )
    model.add_argument("--ray_samples", type=int, default=64, help="Points per transmitter -> pixel ray (walls).")

    data = add_data_arguments(parser, training=True)  # the flags of train_vae.py and the radiodiff-vae commands
    data.add_argument(
        "--latent_cache",
        type=str,
        default=None,
        help=f"File of the maps' latents, computed once and reused while the VAE and maps are the same (default: "
        f"{LATENT_CACHE_NAME} in --output_dir).",
    )
    add_auto_switch(
        data,
        "--cache_city_features",
        "Compute the city features of every training map once and keep them in memory (the ray sampling costs more "
        "than a small UNet's step on a CPU); auto: on when they take at most 2 GiB and --random_flip is off.",
    )

    groups = add_training_arguments(
        parser,
        defaults=dict(
            output_dir="radiodiff-construction", train_batch_size=16, gradient_accumulation_steps=1,
            max_train_steps=10_000, learning_rate=1e-4, lr_scheduler="constant", lr_end=0.0, max_grad_norm=1.0,
            logging_steps=50, tracker_project_name=TRACKER_PROJECT_NAME, validation_steps=500,
            checkpointing_steps=1000,
        ),
        help_texts=dict(
            output_dir="Pipeline, checkpoints, logs.",
            use_ema="Keep an EMA of the weights; the saved pipeline uses it.",
            push_to_hub="Upload the final pipeline with its model card.",
        ),
        optimizer="AdamW",
        hub_model_id_example=HUB_MODEL_ID_EXAMPLE,
    )  # fmt: skip
    groups.training.add_argument(
        "--max_train_seconds",
        type=float,
        default=None,
        help="Stop at the first optimizer step after this much training time, counted across resumes (module "
        "docstring); the equal-time comparison of the latent pipeline and --direct.",
    )
    return parser


def parse_args(input_args: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses flags (and ``--config``), fills the defaults that depend on the mode and on the VAE, and checks every
    value and path before any work starts."""
    parser = build_parser()
    args = parse_args_with_config(parser, input_args)
    validate_args(args, parser)
    vae_config = read_vae_config(args.pretrained_vae)  # None for a Hub id: checked once loaded
    resolve_defaults(args, vae_config)
    if vae_config is not None and args.resolution is not None:
        if not args.direct:  # the VAE's own factor first: the message names the part that does not fit
            factor = 2 ** int(vae_config["num_downsamples"])
            check_size_divisible(args.resolution, None, factor, "--resolution", owner="the VAE's")
        check_size_divisible(args.resolution, None, size_divisor(args, vae_config), "--resolution", owner=owner(args))
    resume_path = check_paths(args)
    if resume_path is not None:
        check_resume_checkpoint(args, resume_path, vae_config)
    return args


def validate_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Raises an InvalidArgumentError naming the flag for any value the run could only fail on later."""
    if args.pretrained_vae is None:
        raise InvalidArgumentError("--pretrained_vae is required: the RadioVAE folder or Hub id of the first stage")
    check_training_arguments(
        args, parser, positive=["num_train_timesteps", "default_num_inference_steps", "ray_samples"],
        hub_model_id_example=HUB_MODEL_ID_EXAMPLE,
    )  # fmt: skip
    for name in ["layers_per_block", "city_channels", "unet_norm_num_groups"]:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InvalidArgumentError(f"--{name} must be >= 1 when given, got {getattr(args, name)}")
    for name in ["unet_block_out_channels", "city_block_out_channels"]:
        if getattr(args, name) is not None and min(getattr(args, name)) < 1:
            raise InvalidArgumentError(f"--{name} must be positive channel counts, got {getattr(args, name)}")
    if args.max_train_seconds is not None and not args.max_train_seconds > 0:
        raise InvalidArgumentError(f"--max_train_seconds must be > 0 when given, got {args.max_train_seconds}")
    check_training_data_arguments(args, parser)
    if args.default_num_inference_steps > args.num_train_timesteps:
        raise InvalidArgumentError(
            f"--default_num_inference_steps must be at most --num_train_timesteps {args.num_train_timesteps}, got "
            f"{args.default_num_inference_steps}"
        )
    if len(set(args.in_features)) != len(args.in_features):
        raise InvalidArgumentError(f"--in_features must name each feature once, got {args.in_features}")
    if args.cache_city_features == "on" and args.random_flip:
        raise InvalidArgumentError("--cache_city_features on cannot be combined with --random_flip (flipped maps)")


def resolve_defaults(args: argparse.Namespace, vae_config: Optional[Dict[str, Any]]) -> None:
    """Fills what the flags left to the mode (model sizes), to the VAE (the seed of its synthetic cities, the map
    size) and to the output folder (the latent cache): ``training_args.json`` records the values the run used."""
    for name, value in MODE_DEFAULTS["direct" if args.direct else "latent"].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.city_channels is None:  # --direct: the features alone
        args.city_channels = len(args.in_features)
    if args.city_channels < len(args.in_features):
        raise InvalidArgumentError(
            f"--city_channels must be at least the number of --in_features ({len(args.in_features)}, appended to the "
            f"learned channels), got {args.city_channels}"
        )
    channels = args.unet_block_out_channels
    if args.unet_norm_num_groups is None:
        args.unet_norm_num_groups = next(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in channels))
    elif any(c % args.unet_norm_num_groups for c in channels):
        raise InvalidArgumentError(
            f"--unet_block_out_channels {channels} must be multiples of --unet_norm_num_groups "
            f"{args.unet_norm_num_groups}"
        )
    synthetic = args.data_dir is None and args.dataset_name is None
    if synthetic and args.synthetic_seed is None:
        # the VAE's training cities: the construction stage is trained on the maps the VAE's latent was fitted to
        args.synthetic_seed = vae_synthetic_seed(read_vae_training_args(args.pretrained_vae))
    if synthetic and args.resolution is None and vae_config is not None:
        args.resolution = int(vae_config.get("sample_size") or 64)
    if args.latent_cache is None:
        args.latent_cache = os.path.join(args.output_dir, LATENT_CACHE_NAME)


def size_divisor(args: argparse.Namespace, vae_config: Dict[str, Any]) -> int:
    """Map sides must be multiples of this: the VAE's factor times the UNet's (the UNet's alone with --direct)."""
    unet_factor = 2 ** (len(args.unet_block_out_channels) - 1)
    return unet_factor if args.direct else 2 ** int(vae_config["num_downsamples"]) * unet_factor


def owner(args: argparse.Namespace) -> str:
    return "the direct UNet's" if args.direct else "the pipeline's (VAE x UNet)"


def objective(args: argparse.Namespace) -> str:
    return "direct" if args.direct else args.prediction_type


def check_resume_checkpoint(args: argparse.Namespace, resume_path: str, vae_config: Optional[Dict[str, Any]]) -> None:
    """Refuses a --resume_from_checkpoint folder trained for another objective or holding other models."""
    saved = (checkpointing.read_checkpoint_marker(resume_path) or {}).get("metadata", {})
    if saved.get("objective", objective(args)) != objective(args):
        raise CheckpointError(
            f"--resume_from_checkpoint {resume_path} was trained for {saved['objective']!r}, this run for "
            f"{objective(args)!r} (--direct / --prediction_type); resume with the flags of the run that wrote it"
        )
    unet = dict(
        block_out_channels=args.unet_block_out_channels, layers_per_block=args.layers_per_block,
        norm_num_groups=args.unet_norm_num_groups, add_attention=args.attention,
    )  # fmt: skip
    if args.direct:
        unet["out_channels"] = 1
    elif vae_config is not None:
        unet["out_channels"] = vae_config["latent_channels"]
    expected = {"unet": unet}
    if args.city_channels > len(args.in_features):  # an encoder with a learned stem, saved in the checkpoint
        expected["city_encoder"] = dict(
            in_features=args.in_features, out_channels=args.city_channels, ray_samples=args.ray_samples
        )
    checkpointing.check_checkpoint_architecture(resume_path, expected)


# ------------------------------------------------------------------------------------------------------------------
# the parts of a run
def build_pipeline(args: argparse.Namespace, device: torch.device):
    """The untrained pipeline of the flags: RadioDiffPipeline around the frozen VAE, or RadioUNetPipeline with
    --direct (whose VAE is only read for its config: the same data, at a size it divides)."""
    sizes = dict(
        unet_block_out_channels=args.unet_block_out_channels, layers_per_block=args.layers_per_block,
        attention=args.attention, unet_norm_num_groups=args.unet_norm_num_groups, city_channels=args.city_channels,
        in_features=args.in_features, ray_samples=args.ray_samples,
    )  # fmt: skip
    if args.city_block_out_channels is not None:
        sizes["city_block_out_channels"] = args.city_block_out_channels
    if args.direct:
        return RadioUNetPipeline.from_sizes(sample_size=args.resolution or 256, **sizes).to(device)
    vae = load_model(args.pretrained_vae, device=device)
    scheduler = default_scheduler(args.prediction_type, args.num_train_timesteps)
    pipeline = RadioDiffPipeline.from_vae(
        vae, scheduler=scheduler, default_num_inference_steps=args.default_num_inference_steps, **sizes
    )
    return pipeline.to(device)


def open_training_maps(args, accelerator, pipeline):
    """The run's maps (main process first: it writes the caches the others read): training items with their latents
    (scaled) or maps, and city features when cached; validation maps; the map size, checked against the pipeline."""
    with accelerator.main_process_first():
        data = build_datasets(
            data_source_from_args(args), args.num_validation_maps, args.validation_split, args.max_train_samples,
            random_flip=args.random_flip and args.direct,  # latents are flipped by LatentRadioMaps instead
        )  # fmt: skip
        height, width = data.train[0]["pixel_values"].shape[-2:]
        what = f"{data.source}: the map size"
        check_size_divisible(height, width, pipeline.size_divisor, what, owner(args), "pass --resolution")
        train = data.train
        if not args.direct:
            train = LatentRadioMaps(
                data.train, pipeline.vae, batch_size=args.train_batch_size, cache_file=args.latent_cache,
                flip=args.random_flip, device=accelerator.device, show_progress=accelerator.is_local_main_process,
            )  # fmt: skip
            std = float(train.latents.std()) * train.scaling_factor
            logger.info(f"latents of {len(train)} maps, scaled by {train.scaling_factor:.4g}: std {std:.3f}")
            if not 0.5 < std < 2:  # the noise schedule assumes unit-variance latents
                logger.warning(
                    f"the VAE's scaling_factor {train.scaling_factor:.4g} gives the training latents a standard "
                    f"deviation of {std:.3f}, not about 1; train_vae.py measures it at the end of a run (1 / std)"
                )
    features = len(args.in_features)
    cache = args.cache_city_features == "on" or (
        args.cache_city_features == "auto" and not args.random_flip
        and CityFeatureMaps.size_bytes(len(train), features, height, width) <= FEATURE_CACHE_AUTO_BYTES
    )  # fmt: skip
    if cache:
        train = CityFeatureMaps(train, pipeline.city_encoder, device=accelerator.device)
    keys = ("pixel_values" if args.direct else "latents", "buildings", "transmitter")
    return data, train, partial(collate_maps, keys=keys + (("city_features",) if cache else ()))


def build_optimizer(args: argparse.Namespace, parameters, num_processes: int):
    """AdamW and its learning-rate schedule (diffusers' ``get_scheduler``; ``lr_end`` for the polynomial one)."""
    optimizer = torch.optim.AdamW(
        parameters, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        weight_decay=args.adam_weight_decay,
    )  # fmt: skip
    # a prepared scheduler steps once per process per optimizer step, hence the factor
    lr_scheduler = build_lr_scheduler(
        args.lr_scheduler, optimizer, args.lr_warmup_steps * num_processes, args.max_train_steps * num_processes,
        lr_end=args.lr_end, power=args.lr_power, num_cycles=args.lr_num_cycles,
    )  # fmt: skip
    return optimizer, lr_scheduler


def training_record(summary, lr_scheduler, meter, clock, epoch) -> Dict[str, float]:
    """What the trackers get every --logging_steps: the window's mean loss (and gradient norm), the learning rate,
    maps per second, the training time so far (--max_train_seconds counts it) and the epoch."""
    record = {f"train/{key}": value for key, value in summary.items()}
    record.update({"train/lr": lr_scheduler.get_last_lr()[0], "train/maps_per_second": meter.images_per_second})
    record.update({"train/training_seconds": clock.seconds, "train/epoch": epoch})
    return record


def save_final_pipeline(args, accelerator, pipeline, validate, data, global_step, clock, hub_repo_id) -> None:
    """The end of a run (main process): final validation, the pipeline written atomically into --output_dir (the
    component folders first, model_index.json last), its sample grid and model card; the upload."""
    metrics, grid = validate(global_step, logger)
    with atomic_directory(args.output_dir, merge=True, last=("config.json", "model_index.json")) as staging:
        pipeline.save_pretrained(staging, safe_serialization=True)
    sample = os.path.join(args.output_dir, "sample.png")
    if grid is not None:
        save_png(grid, sample)
    steps = None if args.direct else args.default_num_inference_steps
    plural = "" if steps == 1 else "s"
    what = "the direct predictor" if args.direct else f"the pipeline at {steps} sampling step{plural}"
    card = dict(
        metrics=metrics, training_args=vars(args), sample_image=sample if grid is not None else None,
        description=(
            f"Trained with `examples/train_radiodiff.py` for {global_step} steps ({clock.seconds:.0f} s of training) "
            f"on {data.source}, first stage `{args.pretrained_vae}`{' (EMA weights)' if args.use_ema else ''}. The "
            f"metrics are those of {what} on {len(data.validation)} {data.validation_kind}."
        ),
        eval_dataset=data.label, eval_split="validation", eval_steps=steps,
    )  # fmt: skip
    pipeline.save_model_card(args.output_dir, repo_id=hub_repo_id, **card)
    scores = f"validation RMSE {metrics['rmse_db']:.2f} dB of path gain, PSNR {metrics['psnr']:.2f} dB"
    logger.info(
        f"saved the pipeline to {args.output_dir} after {global_step} steps ({clock.seconds:.0f} s of training): "
        f"{scores}"
    )
    if args.push_to_hub:
        pipeline.push_to_hub(
            hub_repo_id, commit_message="Upload a pipeline trained with examples/train_radiodiff.py",
            private=args.hub_private_repo or None, **card,
        )  # fmt: skip
        logger.info(f"uploaded the pipeline to the Hub repository {hub_repo_id}")


# ------------------------------------------------------------------------------------------------------------------
# the run
def main(args: argparse.Namespace) -> int:
    """Trains as ``args`` (:func:`parse_args`) say; returns 0, or 3 when a loss was not finite."""
    accelerator = make_accelerator(args)
    with hold_output_dir(accelerator, args) as (resume_path, hub_repo_id):
        # ---- models (the frozen VAE first: the training maps' latents need it), then the data
        pipeline = build_pipeline(args, accelerator.device)
        unet, city_encoder = pipeline.unet.train(), pipeline.city_encoder.train()
        data, train_maps, collate = open_training_maps(args, accelerator, pipeline)
        train_dataloader = DataLoader(
            train_maps, batch_size=args.train_batch_size, shuffle=True, collate_fn=collate,
            num_workers=args.dataloader_num_workers,
            drop_last=len(train_maps) >= args.train_batch_size * accelerator.num_processes,
        )  # fmt: skip

        # ---- optimizer and schedule; one prepare (a stem-less city encoder has nothing to train and stays as it is)
        trained = [unet] + ([city_encoder] if any(p.requires_grad for p in city_encoder.parameters()) else [])
        parameters = [parameter for module in trained for parameter in module.parameters()]
        optimizer, lr_scheduler = build_optimizer(args, parameters, accelerator.num_processes)
        *models, optimizer, lr_scheduler, train_dataloader = accelerator.prepare(
            *trained, optimizer, lr_scheduler, train_dataloader
        )
        unet = models[0]
        city_encoder = models[1] if len(models) > 1 else city_encoder
        ema = None
        if args.use_ema:
            from diffusers.training_utils import EMAModel

            ema = EMAModel(parameters, decay=args.ema_decay)
            ema.to(accelerator.device)

        # ---- checkpoint contents: the models as save_pretrained folders, the step, the training time, the EMA
        checkpointing.register_checkpoint_hooks(accelerator, {UNet2DModel: "unet", CityEncoder: "city_encoder"})
        progress, clock = TrainingProgress(), TrainingClock()  # a non-finite loss stops the run: no streak to count
        for state in [progress, clock] + ([ema] if ema is not None else []):
            accelerator.register_for_checkpointing(state)

        start_trackers(accelerator, args)

        global_step, first_epoch, batches_to_skip, num_epochs = resume_from(
            accelerator, resume_path, progress, len(train_dataloader), args.max_train_steps, ema
        )
        maps_per_step = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        logger.info(
            f"{'direct predictor' if args.direct else 'latent diffusion (' + args.prediction_type + ')'} on "
            f"{data.source}: {len(train_maps)} training maps, {maps_per_step} per step; {args.max_train_steps} steps"
            f"{f' or {args.max_train_seconds:g} s' if args.max_train_seconds else ''}, starting at step {global_step}"
        )

        # ---- loop
        validate = ConstructionValidator(
            accelerator, pipeline, data.validation, args.train_batch_size, args.num_validation_images, args.output_dir,
            data.validation_kind, num_inference_steps=None if args.direct else args.default_num_inference_steps,
            seed=args.seed, ema=ema, parameters=parameters,
        )  # fmt: skip

        def compute_loss(batch, generator):
            if args.direct:
                return direct_loss(unet, city_encoder, batch)
            return diffusion_loss(unet, city_encoder, pipeline.scheduler, batch, generator)

        window, meter = LogWindow(), ThroughputMeter()
        last_checkpoint, micro_batch = resume_path, 0
        finite = torch.ones((), dtype=torch.bool, device=accelerator.device)
        out_of_time = args.max_train_seconds is not None and clock.seconds >= args.max_train_seconds
        progress_bar = tqdm(
            total=args.max_train_steps, initial=global_step, desc="steps", disable=not accelerator.is_local_main_process
        )
        clock.start()
        try:
            for epoch in range(first_epoch, num_epochs):
                if global_step >= args.max_train_steps or out_of_time:
                    break
                train_dataloader.set_epoch(epoch)
                skip = batches_to_skip if epoch == first_epoch else 0
                for batch in accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader:
                    with accelerator.accumulate(*models):
                        # noise and timesteps depend on (seed, step, micro-batch, process) only: a resume draws the same
                        where = (global_step, micro_batch, accelerator.process_index)
                        loss = compute_loss(batch, step_generator(accelerator.device, args.seed, *where))
                        accelerator.backward(loss)
                        window.add_micro_batch({"loss": loss.detach()}, torch.isfinite(loss.detach()))
                        finite &= torch.isfinite(loss.detach())
                        if accelerator.sync_gradients:
                            if accelerator.gather(finite.float().reshape(1)).min().item() < 1:  # one sync per step
                                raise NonFiniteLossError(f"the loss of step {global_step} was not finite")
                            if args.max_grad_norm > 0:
                                norm = accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
                                window.add_step({"grad_norm": norm})
                        optimizer.step()
                        lr_scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                    micro_batch += 1
                    if not accelerator.sync_gradients:
                        continue
                    # ---- one optimizer step done
                    micro_batch = 0
                    finite.fill_(True)
                    if ema is not None:
                        ema.step(parameters)
                    global_step += 1
                    progress.global_step = global_step
                    clock.lap()
                    meter.update(maps_per_step)
                    progress_bar.update(1)
                    if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
                        record = training_record(window.summary(accelerator), lr_scheduler, meter, clock, epoch)
                        accelerator.log(record, step=global_step)
                        progress_bar.set_postfix(loss=f"{record['train/loss']:.4g}", refresh=False)
                        window.reset()
                        meter.reset()
                    if args.max_train_seconds is not None:
                        if clock.seconds >= args.max_train_seconds:
                            accelerator.set_trigger()
                        out_of_time = accelerator.check_trigger()  # every process stops at the same step
                    if global_step % args.checkpointing_steps == 0 or out_of_time:
                        last_checkpoint = checkpointing.save_checkpoint(
                            accelerator, args.output_dir, global_step, total_limit=args.checkpoints_total_limit,
                            metadata={"objective": objective(args), "training_seconds": clock.seconds},
                        )  # fmt: skip
                        logger.info(f"saved {last_checkpoint}")
                    done = global_step >= args.max_train_steps or out_of_time
                    if global_step % args.validation_steps == 0 and not done:
                        if accelerator.is_main_process:
                            validate(global_step, logger)
                        accelerator.wait_for_everyone()
                    clock.start()  # checkpoints and validation do not count as training time
                    if done:
                        break
        except NonFiniteLossError as error:
            progress_bar.close()
            logger.error(
                f"stopping: {error}; the weights were not updated by it. The newest checkpoint is "
                f"{last_checkpoint or '(none saved yet)'}.", main_process_only=True,
            )  # fmt: skip
            accelerator.end_training()
            return 3
        progress_bar.close()
        if out_of_time:
            logger.info(f"stopped after {clock.seconds:.1f} s of training (--max_train_seconds), at step {global_step}")

        # ---- the end: EMA weights, final validation, pipeline, card, upload
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if ema is not None:
                ema.copy_to(parameters)
                validate.ema = None  # the weights are the EMA's from here on
            save_final_pipeline(args, accelerator, pipeline, validate, data, global_step, clock, hub_repo_id)
        accelerator.wait_for_everyone()
        accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(run_command_line(parse_args, main, "train_radiodiff.py"))
