"""``radiodiff-vae make-synthetic --out DIR --maps N --tx T --seed S``: write synthetic radio maps to a folder.

The folder has RadioMapSeer's layout (gain maps under ``DIR/gain/synthetic/``), so every RadioMapSeer reader of
this package takes it::

    radiodiff-vae make-synthetic --out data/synthetic --maps 100 --tx 8 --seed 0
    python -c "from radiodiff_vae.data import RadioMapSeer; print(RadioMapSeer('data/synthetic', 'synthetic'))"
"""

import argparse
from ..errors import InvalidArgumentError


def register(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser(
        "make-synthetic",
        help="Write synthetic city radio maps in RadioMapSeer's folder layout",
        description=(
            "Generate synthetic city radio maps (free-space loss at 5.9 GHz, multi-wall penetration loss, correlated "
            "shadowing; see docs/data.md) and write them in RadioMapSeer's layout: gain/synthetic/<map>_<tx>.png, "
            "png/buildings_complete/<map>.png, png/antennas/<map>_<tx>.png and synthetic.json."
        ),
    )
    parser.add_argument("--out", required=True, help="Output folder (created if missing).")
    parser.add_argument("--maps", type=int, default=10, help="Number of city layouts (default 10).")
    parser.add_argument("--tx", type=int, default=4, help="Transmitters per layout (default 4).")
    parser.add_argument("--seed", type=int, default=0, help="Base seed; the same seed gives the same maps (default 0).")
    parser.add_argument(
        "--resolution", type=int, default=256, help="Pixels per side of the 256 m area (default 256, RadioMapSeer's)."
    )
    parser.add_argument("--first_map_id", type=int, default=1, help="Number of the first map (default 1).")
    parser.add_argument("--wall_loss_db", type=float, default=None, help="Penetration loss per wall (default 12 dB).")
    parser.add_argument(
        "--shadowing_std_db", type=float, default=None, help="Std of the shadowing field, 0 to disable (default 4 dB)."
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace an earlier make-synthetic folder (its maps not written again are deleted).",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Checks that name the flag come first, before the generator is imported or a file is written.
    for flag, value, minimum in (("--maps", args.maps, 1), ("--tx", args.tx, 1), ("--resolution", args.resolution, 8)):
        if value < minimum:
            raise InvalidArgumentError(f"{flag} must be >= {minimum}, got {value}")
    if args.first_map_id < 1:
        raise InvalidArgumentError(
            f"--first_map_id must be >= 1 (RadioMapSeer numbers maps from 1), got {args.first_map_id}"
        )

    from radiodiff_vae.data.simulation.synthetic import SyntheticCityConfig, write_synthetic_folder

    overrides = {}
    if args.wall_loss_db is not None:
        overrides["wall_loss_db"] = args.wall_loss_db
    if args.shadowing_std_db is not None:
        overrides["shadowing_std_db"] = args.shadowing_std_db
    config = SyntheticCityConfig(**overrides)
    out_dir = write_synthetic_folder(
        args.out,
        num_maps=args.maps,
        num_tx=args.tx,
        seed=args.seed,
        resolution=args.resolution,
        config=config,
        first_map_id=args.first_map_id,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.maps * args.tx} radio maps ({args.maps} maps x {args.tx} transmitters) to {out_dir}")
    return 0
