"""``radiodiff-vae make-raytraced --scene munich --maps N --tx T --out DIR``: ray-trace radio maps of a real city.

Needs the optional extra (``pip install -e ".[raytrace]"``; docs/data.md has the LLVM note). The folder has
RadioMapSeer's layout with the gain maps under ``DIR/gain/<simulation>/``, so every reader of this package takes it::

    radiodiff-vae make-raytraced --scene munich --maps 20 --tx 4 --out data/munich --rays 1e7 --repeat 1
    python -c "from radiodiff_vae.data import RadioMapSeer; print(RadioMapSeer('data/munich', 'sionna'))"
"""

import argparse
import sys
from ..errors import InvalidArgumentError


def whole_number(text: str) -> int:
    """An integer flag that also takes 1e7-style numbers."""
    value = float(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text}")
    return int(value)


def register(subparsers: "argparse._SubParsersAction") -> None:
    # Nothing of radiodiff_vae.data is imported here (it loads torch): `radiodiff-vae --help` must answer at once.
    parser = subparsers.add_parser(
        "make-raytraced",
        help="Ray-trace radio maps of a real city scene (Sionna RT) in RadioMapSeer's folder layout",
        description=(
            "Cut a Sionna RT city scene into tiles, place transmitters in its streets, ray-trace each transmitter's "
            "path gain and write RadioMapSeer's layout: gain/<simulation>/<map>_<tx>.png, "
            "png/buildings_complete/<map>.png, png/antennas/<map>_<tx>.png and meta.json. Run again with the same "
            'settings to resume. Needs pip install -e ".[raytrace]" (see docs/data.md).'
        ),
    )
    parser.add_argument("--out", required=True, help="Output folder (created; resumed if it holds this run).")
    parser.add_argument("--scene", default="munich", help="munich (default), etoile or florence: the Sionna RT scene.")
    parser.add_argument("--maps", type=int, default=10, help="Number of tiles (default 10).")
    parser.add_argument("--tx", type=int, default=4, help="Transmitters per tile (default 4).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of tiles, transmitters and rays (default 0).")
    parser.add_argument("--resolution", type=int, default=256, help="Cells per tile side (default 256).")
    parser.add_argument("--cell_size", type=float, default=1.0, help="Cell side in metres (default 1.0).")
    parser.add_argument("--frequency", type=float, default=5.9e9, help="Carrier in Hz (default 5.9e9).")
    parser.add_argument("--tx_height", type=float, default=10.0, help="Transmitter height in m (default 10).")
    parser.add_argument("--rx_height", type=float, default=1.5, help="Height of the map plane in m (default 1.5).")
    parser.add_argument("--rays", type=whole_number, default=10_000_000, help="Rays per transmitter (default 1e7).")
    parser.add_argument("--max_depth", type=int, default=4, help="Most interactions along a path (default 4).")
    parser.add_argument("--diffraction", action="store_true", help="Add diffraction on wedges (slower).")
    parser.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="Trace every transmitter K more times with other seeds into gain/<simulation>_repeat<k>/ (default 0).",
    )
    parser.add_argument("--simulation", default=None, help="Folder name under gain/ (default sionna).")
    parser.add_argument("--first_map_id", type=int, default=1, help="Number of the first tile (default 1).")
    parser.add_argument(
        "--threads", type=int, default=None, help="Ray-tracing threads (default all cores; 1: bit-identical reruns)."
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radiodiff_vae.data.simulation.raytraced import (
        DEFAULT_SIMULATION,
        RaytraceConfig,
        RaytracingUnavailableError,
        write_raytraced_folder,
    )

    # Checks that name the flag come first, before Sionna is imported or a file is written.
    for flag, value, minimum in (("--maps", args.maps, 1), ("--tx", args.tx, 1), ("--repeat", args.repeat, 0)):
        if value < minimum:
            raise InvalidArgumentError(f"{flag} must be >= {minimum}, got {value}")
    if args.first_map_id < 1:
        raise InvalidArgumentError(
            f"--first_map_id must be >= 1 (RadioMapSeer numbers maps from 1), got {args.first_map_id}"
        )
    if args.threads is not None and args.threads < 1:
        raise InvalidArgumentError(f"--threads must be >= 1, got {args.threads}")
    config = RaytraceConfig(
        scene=args.scene,
        resolution=args.resolution,
        cell_size_m=args.cell_size,
        frequency_hz=args.frequency,
        tx_height_m=args.tx_height,
        rx_height_m=args.rx_height,
        rays_per_tx=args.rays,
        max_depth=args.max_depth,
        diffraction=args.diffraction,
    )
    try:
        out_dir = write_raytraced_folder(
            args.out,
            num_maps=args.maps,
            num_tx=args.tx,
            config=config,
            seed=args.seed,
            repeat=args.repeat,
            simulation=args.simulation or DEFAULT_SIMULATION,
            first_map_id=args.first_map_id,
            threads=args.threads,
        )
    except RaytracingUnavailableError as error:
        # A missing optional extra is bad setup, not a bug: one line saying what to install, no traceback.
        print(f"radiodiff-vae make-raytraced: error: {error}", file=sys.stderr)
        return 2
    repeats = f", {args.repeat} repeat(s) each" if args.repeat else ""
    print(f"wrote {args.maps * args.tx} ray-traced radio maps ({args.maps} tiles x {args.tx} transmitters{repeats}) "
          f"of {args.scene} to {out_dir}")
    return 0
