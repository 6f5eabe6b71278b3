"""``radiodiff-vae encode`` / ``radiodiff-vae decode``: radio maps <-> latents in a safetensors file.

Examples::

    radiodiff-vae encode ./my-vae --input_dir maps/ --output latents.safetensors
    radiodiff-vae encode ./my-vae --data_dir /data/RadioMapSeer --simulation IRT4 --split train --output train.safetensors
    radiodiff-vae decode ./my-vae latents.safetensors --output_dir decoded/

The latents file holds one tensor, ``"latents"`` of shape ``(N, latent_channels, H / f, W / f)`` float32, and string
metadata: ``names`` (JSON list of the N PNG file names), ``scaling_factor``, ``shift_factor``, ``latents_scaled``,
``image_size``, ``model`` and ``model_config`` (JSON summary), ``sample_posterior``, ``seed``, ``format``.

Latents are stored **scaled**, as a latent-diffusion model sees them (diffusers' convention)::

    stored = (z - shift_factor) * scaling_factor          z = stored / scaling_factor + shift_factor

``decode`` undoes the scaling with the factors recorded in the file, so a file decodes the same whatever the model's
config says now; it warns when the model's own factor differs. PNGs are 8-bit grey like RadioMapSeer's gain maps:
``pixel = round(255 * value01)`` with ``value01 = model_to_unit(x) = (x + 1) / 2`` of the model's ``[-1, 1]``.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from .arguments import (
    DTYPES,
    add_data_arguments,
    add_device_arguments,
    add_model_argument,
    check_resolution_fits_model,
    dataset_from_args,
    load_model,
    resolve_device,
)
from ..errors import DataError, InputNotFoundError, InvalidArgumentError, NotAFolderError, OutputExistsError

LATENT_FORMAT = "radiodiff-vae-latents/1"
LATENTS_KEY = "latents"
PNG_MODE = "L"  # 8-bit grey, RadioMapSeer's gain maps


# ----------------------------------------------------------------------------------------------------------------
# reading and writing maps
def maps_to_uint8(maps: Any) -> Any:
    """Maps in [-1, 1] (N, 1, H, W) -> uint8 numpy (N, H, W), ``round(255 * (x + 1) / 2)``."""
    import torch

    from radiodiff_vae.data.conventions import model_to_unit

    unit = model_to_unit(maps.float().clamp(-1, 1))
    return torch.round(unit * 255).to(torch.uint8)[:, 0].cpu().numpy()


def _png_name(name: str) -> str:
    return name if name.lower().endswith(".png") else f"{name}.png"


def _check_names(names: Sequence[str], source: str) -> None:
    bad = [name for name in names if not name or "/" in name or "\\" in name or name in (".", "..")]
    if bad:
        raise DataError(f"{source} has map names that are not plain file names: {bad[:3]}")
    seen = set()
    duplicates = sorted({name for name in map(_png_name, names) if name in seen or seen.add(name)})
    if duplicates:
        raise DataError(f"{source} names several maps alike, e.g. {duplicates[:3]}; names must be unique")


# ----------------------------------------------------------------------------------------------------------------
# the latents file
def _latent_factors(vae: Any) -> Tuple[float, float]:
    scaling = float(getattr(vae.config, "scaling_factor", 1.0))
    shift = getattr(vae.config, "shift_factor", None)
    return scaling, float(shift) if shift is not None else 0.0


def _model_summary(vae: Any) -> Dict[str, Any]:
    from radiodiff_vae.baseline import downsample_factor_of

    config = vae.config
    return {
        "class_name": type(vae).__name__,
        "in_channels": int(config.in_channels),
        "latent_channels": int(config.latent_channels),
        "downsample_factor": downsample_factor_of(vae),
        "block_out_channels": list(config.block_out_channels),
        "sample_size": config.sample_size,
    }


def save_latents(
    path: str, latents: Any, names: Sequence[str], scaling_factor: float, shift_factor: float, **metadata: Any
) -> None:
    """Write ``latents`` (N, C, h, w), already scaled, and their metadata atomically to a safetensors file."""
    from safetensors.torch import save_file

    from radiodiff_vae.atomic import atomic_path

    if latents.shape[0] != len(names):
        raise ValueError(f"{latents.shape[0]} latents but {len(names)} names")
    strings = {
        "format": LATENT_FORMAT,
        "names": json.dumps(list(names)),
        "scaling_factor": repr(float(scaling_factor)),
        "shift_factor": repr(float(shift_factor)),
        "latents_scaled": "true",
    }
    strings.update({key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()})
    with atomic_path(path) as temporary:
        save_file({LATENTS_KEY: latents.float().contiguous().cpu()}, str(temporary), metadata=strings)


def load_latents(path: str) -> Tuple[Any, Dict[str, str]]:
    """Read a latents file: -> (latents (N, C, h, w) float32, metadata dict of strings)."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise InputNotFoundError(f"latents file {path} does not exist")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            if LATENTS_KEY not in handle.keys():
                raise DataError(f"{path} holds no {LATENTS_KEY!r} tensor (it has {sorted(handle.keys())})")
            latents = handle.get_tensor(LATENTS_KEY).float()
    except (SafetensorError, OSError) as error:
        raise DataError(f"{path} cannot be read as a safetensors file ({error})") from error
    if latents.ndim != 4 or latents.shape[0] == 0:
        raise DataError(f"{path}: expected latents of shape (N, C, h, w) with N >= 1, got {tuple(latents.shape)}")
    return latents, metadata


# ----------------------------------------------------------------------------------------------------------------
# encode
def register(subparsers: Any) -> None:
    encode = subparsers.add_parser(
        "encode",
        help="Maps (a PNG folder or a dataset) -> latents in a safetensors file.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(encode)
    encode.add_argument("--input_dir", default=None, help="Folder of 8-bit grey PNG maps (instead of the data flags).")
    encode.add_argument("--output", required=True, help="The .safetensors file to write.")
    encode.add_argument("--overwrite", action="store_true", help="Replace an existing --output.")
    encode.add_argument(
        "--sample_posterior", action="store_true", help="Store a posterior draw instead of the posterior mean."
    )
    encode.add_argument("--seed", type=int, default=0, help="Seed of posterior draws; map i uses seed + i.")
    add_device_arguments(encode)
    add_data_arguments(encode)
    encode.set_defaults(func=run_encode)

    decode = subparsers.add_parser(
        "decode",
        help="Latents from a safetensors file -> 8-bit grey PNG maps.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(decode)
    decode.add_argument("latents", help="A .safetensors file written by `radiodiff-vae encode` (or holding 'latents').")
    decode.add_argument("--output_dir", required=True, help="Folder for the PNG maps.")
    decode.add_argument("--overwrite", action="store_true", help="Replace PNGs of the same names in --output_dir.")
    decode.add_argument(
        "--scaling_factor",
        type=float,
        default=None,
        help="Unscale with this factor instead of the file's (needed for files without metadata).",
    )
    add_device_arguments(decode)
    decode.set_defaults(func=run_decode)


def run_encode(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from radiodiff_vae.evaluation import check_maps_fit_model, encode_latents

    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.input_dir is not None and (args.data_dir is not None or args.dataset_name is not None):
        raise InvalidArgumentError("give either --input_dir or --data_dir / --dataset_name, not both")
    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise InvalidArgumentError(f"--output must end in .safetensors, got {output.name}")
    if output.exists() and not args.overwrite:
        raise OutputExistsError(f"--output {output} exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise InputNotFoundError(f"the folder of --output, {output.parent}, does not exist")
    device = resolve_device(args.device)

    # Cheap checks first: a PNG folder's headers, then the model, then (possibly slow) dataset construction.
    from radiodiff_vae.data.png_folder import PngMapFolder

    folder = PngMapFolder(args.input_dir) if args.input_dir is not None else None
    vae = load_model(args.model, device, getattr(torch, DTYPES[args.dtype]))
    if folder is not None:
        dataset, source = folder, f"PNG folder {args.input_dir}"
    else:
        check_resolution_fits_model(vae, args.resolution)
        dataset, source = dataset_from_args(args)
    if len(dataset) == 0:
        raise DataError(f"{source} holds no maps")
    channels, height, width = dataset[0]["pixel_values"].shape
    check_maps_fit_model(vae, channels, height, width, source=source)

    scaling_factor, shift_factor = _latent_factors(vae)
    chunks, names = [], []
    position = 0
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    for batch in tqdm(loader, desc="encode", unit="batch"):
        count = batch["pixel_values"].shape[0]
        seeds = [args.seed + index for index in range(position, position + count)]
        latents = encode_latents(vae, batch["pixel_values"].float(), args.sample_posterior, seeds)
        chunks.append(((latents.float() - shift_factor) * scaling_factor).cpu())
        names += _batch_names(batch, position, count)
        position += count
    latents = torch.cat(chunks)
    _check_names(names, source)  # before anything is written
    save_latents(
        str(output),
        latents,
        [_png_name(name) for name in names],
        scaling_factor,
        shift_factor,
        image_size=[int(height), int(width)],
        model=str(args.model),
        model_config=_model_summary(vae),
        sample_posterior="true" if args.sample_posterior else "false",
        seed=str(args.seed),
        source=source,
    )
    print(f"wrote {output}: latents {tuple(latents.shape)} of {len(names)} maps, scaled by {scaling_factor}")
    return 0


def _batch_names(batch: Dict[str, Any], position: int, count: int) -> List[str]:
    """A file-friendly name per map of a batch: ``[simulation_]name`` (a PNG folder's items carry no simulation)."""
    names = batch.get("name") or [""] * count
    simulations = batch.get("simulation") or [""] * count
    result = []
    for offset, (name, simulation) in enumerate(zip(names, simulations)):
        name = str(name) or f"map_{position + offset:06d}"
        result.append(f"{simulation}_{name}" if simulation else name)
    return result


# ----------------------------------------------------------------------------------------------------------------
# decode
def run_decode(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from radiodiff_vae.atomic import current_umask

    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.scaling_factor is not None and not (math.isfinite(args.scaling_factor) and args.scaling_factor > 0):
        raise InvalidArgumentError(f"--scaling_factor must be a positive number, got {args.scaling_factor}")
    latents, metadata = load_latents(args.latents)
    count = latents.shape[0]
    names = json.loads(metadata["names"]) if "names" in metadata else [f"latent_{i:06d}.png" for i in range(count)]
    if len(names) != count:
        raise DataError(f"{args.latents} holds {count} latents but names {len(names)} maps")
    names = [_png_name(name) for name in names]
    _check_names(names, args.latents)
    if args.scaling_factor is not None:
        scaling_factor = args.scaling_factor
    elif "scaling_factor" in metadata:
        scaling_factor = float(metadata["scaling_factor"])
    else:
        raise InvalidArgumentError(f"{args.latents} does not record its scaling_factor; pass --scaling_factor")
    shift_factor = float(metadata.get("shift_factor", 0.0))

    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotAFolderError(f"--output_dir {output_dir} exists and is not a folder")
    clashes = [name for name in names if (output_dir / name).exists()]
    if clashes and not args.overwrite:
        raise OutputExistsError(
            f"--output_dir {output_dir} already holds {len(clashes)} of these maps (e.g. {clashes[0]}); "
            "pass --overwrite to replace them"
        )
    device = resolve_device(args.device)
    vae = load_model(args.model, device, getattr(torch, DTYPES[args.dtype]))
    expected = int(vae.config.latent_channels)
    if latents.shape[1] != expected:
        raise InvalidArgumentError(
            f"the model decodes {expected}-channel latents but {args.latents} holds {latents.shape[1]}-channel "
            f"latents (shape {tuple(latents.shape)})"
        )
    model_scaling, _ = _latent_factors(vae)
    if args.scaling_factor is None and not math.isclose(model_scaling, scaling_factor, rel_tol=1e-6):
        print(
            f"warning: {args.latents} was scaled by {scaling_factor}, the model's config says {model_scaling}; "
            "unscaling with the file's factor",
            file=sys.stderr,
        )

    # Decode into a staging folder next to the output, then move the finished PNGs into place: an interrupted run
    # leaves the output folder as it was.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.", suffix=".partial"))
    try:
        # mkdtemp makes a private folder (0700); it becomes the output folder, so give it the usual permissions.
        os.chmod(staging, 0o777 & ~current_umask())
        clipped = pixels = 0
        with torch.no_grad():
            for start in tqdm(range(0, count, args.batch_size), desc="decode", unit="batch"):
                chunk = latents[start : start + args.batch_size] / scaling_factor + shift_factor
                maps = vae.decode(chunk.to(device, next(vae.parameters()).dtype)).sample
                clipped += int(((maps < -1) | (maps > 1)).sum())  # become 0 or 255 in the 8-bit PNG
                pixels += maps.numel()
                for name, grey in zip(names[start : start + args.batch_size], maps_to_uint8(maps)):
                    Image.fromarray(grey).save(staging / name)  # uint8 (H, W) -> mode L
        if not output_dir.exists():
            os.replace(staging, output_dir)
        else:
            for name in names:
                os.replace(staging / name, output_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"wrote {count} maps to {output_dir}; {clipped} of {pixels} pixels ({100 * clipped / pixels:.2f}%) were "
        "outside [-1, 1] and were clipped to 0 or 255"
    )
    return 0
