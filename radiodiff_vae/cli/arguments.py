"""Flags shared by the ``radiodiff-vae`` commands and the training scripts: the model, the device, and the data.

The data flags (:func:`add_data_arguments`, one name per flag in every command and script) become a
:class:`radiodiff_vae.data.sources.DataSource`, the one place that turns "a RadioMapSeer folder, a 🤗 dataset or
synthetic maps" into a dataset.
"""

import argparse
from typing import Any, Tuple
from ..errors import InputNotFoundError, InvalidArgumentError

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SPLITS = ("train", "validation", "test", "all")
SPLIT_SCHEMES = ("radiodiff", "disjoint")
# Synthetic cities are numbered; training runs use 1..N (and N+1.. for validation), so by default evaluation and
# encoding read cities from here on, which no run with fewer synthetic cities has trained on.
HELD_OUT_FIRST_MAP = 10001


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The positional MODEL of every command that loads a RadioVAE (see :func:`load_model`)."""
    parser.add_argument("model", help="A save_pretrained folder (or a training checkpoint with vae/) or a Hub id.")


def load_model(name: str, device: Any = None, dtype: Any = None) -> Any:
    """``RadioVAE.from_pretrained`` of MODEL, on ``device`` in ``dtype`` (default float32), in eval mode.

    A training checkpoint (``checkpoint-N``, which holds the model under ``vae/``) is found without naming the
    subfolder. Errors are diffusers' (a folder without the files, a Hub id that does not exist) and RadioVAE's (a
    mistyped local path, the config of another class).
    """
    import os

    import torch

    from radiodiff_vae.models.autoencoder_radio import RadioVAE

    checkpoint = not os.path.isfile(os.path.join(name, "config.json")) and os.path.isfile(
        os.path.join(name, "vae", "config.json")
    )
    model = RadioVAE.from_pretrained(name, subfolder="vae" if checkpoint else None, torch_dtype=dtype or torch.float32)
    return model.to(device) if device is not None else model


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available).")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="Model weights dtype (default fp32).")
    parser.add_argument("--batch_size", type=int, default=8, help="Maps per forward pass (default 8).")


def resolve_device(name: str) -> Any:
    """``auto`` -> cuda when available; reject a CUDA device this machine does not have."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InvalidArgumentError(f"--device {name!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"--device {name} asked for CUDA, but torch sees no CUDA device on this machine")
    return device


def check_resolution_fits_model(vae: Any, resolution: Any) -> None:
    """Reject ``--resolution`` before any map is read when the model cannot take maps of that size."""
    from radiodiff_vae.baseline import downsample_factor_of
    from radiodiff_vae.models.checks import check_size_divisible

    if resolution is not None:
        check_size_divisible(resolution, None, downsample_factor_of(vae), "--resolution")


class DeprecatedAlias(argparse.Action):
    """An old name of a flag: stores into the new flag's ``dest`` and says, in one line on stderr, which name to use
    instead. Hidden from ``--help``; removed in the next version."""

    def __init__(self, option_strings, dest, new_name: str, **kwargs) -> None:
        self.new_name = new_name
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        import sys

        sys.stderr.write(
            f"{parser.prog}: warning: {option_string} is deprecated and will be removed in the next version; use "
            f"{self.new_name}\n"
        )
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser, old: str, new: str, **kwargs: Any) -> None:
    """Adds ``old`` as a deprecated alias of the flag ``new`` (same ``dest``; ``kwargs``: its ``type``...)."""
    parser.add_argument(old, dest=new.lstrip("-"), action=DeprecatedAlias, new_name=new, **kwargs)


def add_data_arguments(parser: argparse.ArgumentParser, training: bool = False) -> argparse._ArgumentGroup:
    """The data flags: a RadioMapSeer-layout folder, a 🤗 dataset, or synthetic maps; one name per flag everywhere.

    Args:
        parser: the command's parser (``evaluate``, ``encode``, ...) or a training script's.
        training (`bool`, defaults to False): the training scripts' variant: one ``--simulation``, the
            ``radiodiff`` split scheme by default, 256 synthetic cities seeded by the run's ``--seed`` unless
            ``--synthetic_seed`` is given, and ``--validation_split``, ``--synthetic_num_workers``,
            ``--random_flip``, ``--max_train_samples``, ``--dataloader_num_workers``. Without it (the commands):
            several ``--simulation``s, ``--split``, ``--synthetic_first_map``, 8 synthetic cities, seed 0, and the
            old names ``--synthetic_maps``, ``--synthetic_tx``, ``--data_seed`` as deprecated aliases.

    Returns:
        The argument group (a script adds its own data flags to it).
    """
    title = "data (RadioMapSeer with --data_dir, a Hugging Face dataset, or synthetic)"
    group = parser.add_argument_group(title if training else "data (default: synthetic maps)")
    # Training checks the pair itself (a configuration file can set both); the commands let argparse refuse it.
    source = group if training else group.add_mutually_exclusive_group()
    source.add_argument("--data_dir", default=None, help="A folder in RadioMapSeer's layout (holds gain/, png/).")
    source.add_argument(
        "--dataset_name", default=None, help="A 🤗 dataset id, a save_to_disk folder, or a RadioMapSeer-layout folder."
    )
    if training:
        group.add_argument("--simulation", default="IRT4", help="RadioMapSeer simulation folder under gain/.")
        group.add_argument(
            "--split_scheme", default="radiodiff", choices=SPLIT_SCHEMES, help="RadioMapSeer split rule."
        )
        group.add_argument(
            "--validation_split", default="validation", help="Split of --dataset_name used for validation."
        )
    else:
        group.add_argument(
            "--simulation",
            nargs="+",
            default=["IRT4"],
            help="RadioMapSeer simulation(s) under gain/, e.g. IRT4 DPM (default IRT4); several are scored "
            "separately.",
        )
        group.add_argument(
            "--split",
            default=None,
            choices=SPLITS,
            help="Which split to read; 'all': every map of a --data_dir folder (default: 'test' for RadioMapSeer as "
            "distributed, maps 1-700, and for --dataset_name; 'all' for any other folder, e.g. make-raytraced's).",
        )
        group.add_argument(
            "--split_scheme",
            default=None,
            choices=SPLIT_SCHEMES,
            help="RadioMapSeer split rule (default: the loader's, 'radiodiff'); 'disjoint' compares with RadioUNet "
            "papers.",
        )
    group.add_argument("--num_tx", type=int, default=None, help="Transmitters per map of --data_dir (default: all).")
    group.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="Resize maps to this size (default: native size; synthetic maps: "
        + ("64)." if training else "256)."),
    )
    group.add_argument(
        "--synthetic_num_maps", type=int, default=256 if training else 8, help="Synthetic cities (without data flags)."
    )
    group.add_argument("--synthetic_num_tx", type=int, default=4, help="Transmitters per synthetic city.")
    group.add_argument(
        "--synthetic_seed",
        type=int,
        default=None if training else 0,
        help="Seed of the synthetic cities" + (" (default: --seed)." if training else " (default 0)."),
    )
    if training:
        group.add_argument(
            "--synthetic_num_workers",
            type=int,
            default=0,
            help="Processes that generate the synthetic maps at start-up (0: the main process; the maps are the same).",
        )
        group.add_argument("--random_flip", action="store_true", help="Random horizontal flips of the training maps.")
        group.add_argument(
            "--max_train_samples", type=int, default=None, help="Truncate the training set (debugging)."
        )
        group.add_argument("--dataloader_num_workers", type=int, default=0, help="Data-loading worker processes.")
    else:
        group.add_argument(
            "--synthetic_first_map",
            type=int,
            default=HELD_OUT_FIRST_MAP,
            help=f"Number of the first synthetic city (default {HELD_OUT_FIRST_MAP}: cities no training run with fewer "
            "synthetic cities has seen, whatever its seed).",
        )
        add_deprecated_alias(group, "--synthetic_maps", "--synthetic_num_maps", type=int)
        add_deprecated_alias(group, "--synthetic_tx", "--synthetic_num_tx", type=int)
        add_deprecated_alias(group, "--data_seed", "--synthetic_seed", type=int)
    return group


def check_training_data_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Raises an InvalidArgumentError (InputNotFoundError for a missing folder) naming the flag for data flags of
    :func:`add_data_arguments` ``(training=True)`` that contradict each other or name no folder."""
    import os

    for name in ["synthetic_num_maps", "synthetic_num_tx"]:
        if getattr(args, name) < 1:
            raise InvalidArgumentError(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ["synthetic_num_workers", "dataloader_num_workers"]:
        if getattr(args, name) < 0:
            raise InvalidArgumentError(f"--{name} must be >= 0, got {getattr(args, name)}")
    for name in ["max_train_samples", "num_tx", "resolution"]:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InvalidArgumentError(f"--{name} must be >= 1 when given, got {value}")
    if args.data_dir is not None and args.dataset_name is not None:
        raise InvalidArgumentError("give either --data_dir (RadioMapSeer) or --dataset_name (Hugging Face), not both")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise InputNotFoundError(f"--data_dir {args.data_dir!r} is not a folder (expected the RadioMapSeer root)")
    if args.data_dir is None and args.dataset_name is None:
        if args.random_flip:
            raise InvalidArgumentError(
                "--random_flip applies to RadioMapSeer (--data_dir) or --dataset_name maps, not to the synthetic "
                "generator"
            )
        for name in ["simulation", "split_scheme", "validation_split"]:
            if getattr(args, name) != parser.get_default(name):
                raise InvalidArgumentError(
                    f"--{name} {getattr(args, name)!r} applies to --data_dir or --dataset_name maps; without either "
                    "the run trains on synthetic maps"
                )
    if args.num_tx is not None and args.data_dir is None:
        given = f"--dataset_name {args.dataset_name}" if args.dataset_name else "synthetic maps (--synthetic_num_tx)"
        raise InvalidArgumentError(f"--num_tx applies to RadioMapSeer (--data_dir) only, got it with {given}")


def data_source_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~radiodiff_vae.data.sources.DataSource` the data flags name (checked, nothing read yet): those of
    :func:`add_data_arguments`, with or without ``training`` (then synthetic maps are 64 x 64 unless
    ``--resolution`` says otherwise, seeded by ``--seed`` unless ``--synthetic_seed`` is given)."""
    from radiodiff_vae.data.sources import DataSource

    training = not hasattr(args, "synthetic_first_map")
    synthetic = args.data_dir is None and args.dataset_name is None
    resolution = (args.resolution or 64) if training and synthetic else args.resolution
    seed = args.synthetic_seed if args.synthetic_seed is not None else args.seed
    options = dict(num_workers=args.synthetic_num_workers, show_progress=False) if training else {}
    if not training:
        options["first_map_id"] = args.synthetic_first_map
    return DataSource(
        data_dir=args.data_dir,
        dataset_name=args.dataset_name,
        simulations=args.simulation if isinstance(args.simulation, str) else tuple(args.simulation),
        split_scheme=args.split_scheme,
        num_tx=args.num_tx,
        resolution=resolution,
        synthetic_maps=args.synthetic_num_maps,
        synthetic_tx=args.synthetic_num_tx,
        seed=seed,
        **options,
    )


def dataset_from_args(args: argparse.Namespace) -> Tuple[Any, str]:
    """Open the maps the data flags name: -> (dataset, one line describing them for the report).

    Sets ``args.split`` when it was not given (:meth:`DataSource.default_split`: ``"all"`` for a folder that is not
    RadioMapSeer's 700 maps, else ``"test"``). Raises FileNotFoundError / ValueError on bad flags before reading.
    """
    source = data_source_from_args(args)
    if args.split is None:
        args.split = source.default_split("test")
    return source.open(args.split), source.describe(args.split)
