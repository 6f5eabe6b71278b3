"""Reading a training run's logged scalars back: its TensorBoard events, or the console log of a run whose events did
not come back (the GPU runs in docs/results/). Used by the figure scripts and the GPU recipe."""

import re
from pathlib import Path
from typing import Dict, List, Tuple

MODEL_TAG = "validation/psnr"
BASELINE_TAG = "validation/baseline_psnr"


def read_scalars(output_dir: str, wall_time: bool = False) -> Dict[str, List[Tuple]]:
    """``{tag: [(step, value), ...]}`` of every scalar in a run's TensorBoard logs, by step (the last value of a
    step wins); ``(step, value, wall_time)`` with ``wall_time=True`` (seconds since the epoch)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: Dict[str, Dict[int, Tuple]] = {}
    for events in sorted(Path(output_dir, "logs").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                point = (event.step, event.value, event.wall_time) if wall_time else (event.step, event.value)
                scalars.setdefault(tag, {})[event.step] = point
    return {tag: [points[step] for step in sorted(points)] for tag, points in scalars.items()}


def read_console_log(path: str) -> Dict[str, List[Tuple]]:
    """The validation PSNR and baseline of a train_vae.py console log, as :func:`read_scalars` gives them."""
    pattern = re.compile(r"\] step (\d+), \d+ [^:]*: baseline_psnr ([\d.]+),.*? psnr ([\d.]+),")
    points = [match.groups() for match in pattern.finditer(Path(path).read_text(encoding="utf-8", errors="replace"))]
    return {
        MODEL_TAG: [(int(step), float(psnr)) for step, _, psnr in points],
        BASELINE_TAG: [(int(step), float(baseline)) for step, baseline, _ in points],
    }
