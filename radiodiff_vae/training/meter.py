"""Throughput and peak-memory measurements for the training logs and the benchmark table."""

import resource
import sys
import time
from typing import Optional

import torch


class ThroughputMeter:
    """Images per second and seconds per optimizer step over the window since the last :meth:`reset`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._start = time.perf_counter()
        self.images = 0
        self.steps = 0

    def update(self, images: int, steps: int = 1) -> None:
        self.images += images
        self.steps += steps

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.elapsed, 1e-9)

    @property
    def seconds_per_step(self) -> Optional[float]:
        return self.elapsed / self.steps if self.steps else None


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA's peak allocation on a GPU, the peak resident set size on a CPU.

    The two are different quantities (the CPU figure includes the Python interpreter and every loaded library), so
    a log or a table must say which device it came from.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
