#!/usr/bin/env python
"""Evaluate a trained RadioVAE: the same job as ``radiodiff-vae evaluate`` (see docs/evaluation.md).

    python examples/evaluate_vae.py runs/quickstart/vae --output_dir eval-synthetic --resolution 64
    python examples/evaluate_vae.py ./my-vae --output_dir eval-rms --data_dir /data/RadioMapSeer \\
        --simulation IRT4 DPM --split test --split_scheme disjoint --non_building_only

Writes OUT/metrics.json, OUT/metrics.md, OUT/per_image.csv and OUT/examples.png. ``--help`` lists every flag.
"""

import sys

from radiodiff_vae.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
