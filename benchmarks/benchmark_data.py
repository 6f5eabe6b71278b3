"""Throughput of the synthetic radio-map generator and of the RadioMapSeer folder reader.

Usage::

    python benchmarks/benchmark_data.py                      # 256 x 256 and 64 x 64, 1 and 4 transmitters per map
    python benchmarks/benchmark_data.py --threads 1 --maps 64 --resolutions 256 --output_json bench.json

A "map" is one radio map (one transmitter in one city). With one transmitter per city every map pays for a new
city; with several, the city (layout, rasterisation) is shared and only the propagation is paid per map. The
reader row times ``RadioMapSeer.__getitem__`` (three PNG decodes and the item tensors) on a folder written by
the generator. Prints a Markdown table; the numbers in docs/data.md come from this script.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from typing import Dict, List

import torch

from radiodiff_vae.data import RadioMapSeer, write_synthetic_folder
from radiodiff_vae.data.simulation.synthetic import generate_radio_maps


def parse_args(input_args=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, default=64, help="Radio maps generated per measurement (default 64).")
    parser.add_argument("--tx", type=int, nargs="+", default=[1, 4], help="Transmitters per city (default 1 4).")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 64], help="Map sides (default 256 64).")
    parser.add_argument("--repeats", type=int, default=3, help="Measurements per case; the best is kept (default 3).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--skip_reader", action="store_true", help="Do not time the RadioMapSeer folder reader.")
    parser.add_argument("--output_json", default=None, help="Also write the results to this JSON file.")
    args = parser.parse_args(input_args)
    for flag in ("maps", "repeats"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if any(value < 1 for value in args.tx) or any(value < 8 for value in args.resolutions):
        raise SystemExit(f"--tx values must be >= 1 and --resolutions >= 8, got {args.tx} and {args.resolutions}")
    if args.maps % max(args.tx) != 0:
        raise SystemExit(f"--maps ({args.maps}) must be a multiple of every --tx value {args.tx}")
    return args


def time_generator(num_maps: int, num_tx: int, resolution: int, repeats: int) -> float:
    """Best maps/second over ``repeats`` runs; each run draws new cities (map ids move on)."""
    best = 0.0
    cities = num_maps // num_tx
    generate_radio_maps([10_000], num_tx, seed=0, resolution=resolution)  # warm-up
    for repeat in range(repeats):
        map_ids = range(1 + repeat * cities, 1 + (repeat + 1) * cities)
        start = time.perf_counter()
        generate_radio_maps(map_ids, num_tx, seed=0, resolution=resolution)
        best = max(best, num_maps / (time.perf_counter() - start))
    return best


def time_reader(num_maps: int, resolution: int, repeats: int) -> float:
    """Best items/second of ``RadioMapSeer.__getitem__`` over a folder of ``num_maps`` written maps."""
    with tempfile.TemporaryDirectory() as root:
        write_synthetic_folder(root, num_maps, 1, resolution=resolution, show_progress=False)
        dataset = RadioMapSeer(root, "synthetic", "train", "disjoint")
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            for index in range(len(dataset)):
                dataset[index]
            best = max(best, len(dataset) / (time.perf_counter() - start))
    return best


def main(input_args=None) -> List[Dict[str, object]]:
    args = parse_args(input_args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    processor = platform.processor() or platform.machine()
    machine = f"{processor}, {os.cpu_count()} CPU cores visible, torch threads {threads}"
    print(f"machine: {machine}; torch {torch.__version__}")

    results = []
    for resolution in args.resolutions:
        for num_tx in args.tx:
            rate = time_generator(args.maps, num_tx, resolution, args.repeats)
            results.append({"what": f"generate, {num_tx} tx per city", "resolution": resolution, "maps_per_s": rate})
        if not args.skip_reader:
            rate = time_reader(args.maps, resolution, args.repeats)
            results.append({"what": "RadioMapSeer reader (PNG)", "resolution": resolution, "maps_per_s": rate})

    print("\n| what | size | maps / s |\n|---|---|---|")
    for row in results:
        print(f"| {row['what']} | {row['resolution']}x{row['resolution']} | {row['maps_per_s']:.0f} |")
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as stream:
            json.dump({"machine": machine, "torch": torch.__version__, "results": results}, stream, indent=2)
    return results


if __name__ == "__main__":
    main()
