"""The logging window of the training loop: averages of the step's logs between two logging steps.

Values stay tensors on the device while the window fills (a ``float()`` per micro-batch would be a host sync per
micro-batch on a GPU); :meth:`LogWindow.summary` turns them into numbers once, averaged over processes.
"""

from typing import Dict, Mapping

import torch


class LogWindow:
    """Sums of per-micro-batch logs (finite micro-batches only) and of per-optimizer-step logs.

    Each key is averaged over the micro-batches (or steps) that reported it, so a term that starts mid-window (the
    discriminator's at ``disc_start``) is not diluted by the micro-batches before it.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sums: Dict[str, torch.Tensor] = {}
        self._counts: Dict[str, torch.Tensor] = {}

    def add_micro_batch(self, logs: Mapping[str, torch.Tensor], finite: torch.Tensor) -> None:
        """Adds one micro-batch's 0-dim tensors; ``finite`` (0-dim bool) False leaves them out."""
        weight = finite.float()
        for key, value in logs.items():
            value = torch.as_tensor(value, dtype=torch.float32, device=weight.device)
            self._add(key, torch.where(finite, value, torch.zeros_like(value)), weight)

    def add_step(self, values: Mapping[str, torch.Tensor]) -> None:
        """Adds one optimizer step's values (gradient norms, clip ratios)."""
        for key, value in values.items():
            value = torch.as_tensor(value, dtype=torch.float32).detach()
            self._add(key, value, torch.ones_like(value))

    def _add(self, key: str, value: torch.Tensor, weight: torch.Tensor) -> None:
        self._sums[key] = self._sums.get(key, 0.0) + value.detach().float()
        self._counts[key] = self._counts.get(key, 0.0) + weight

    def summary(self, accelerator) -> Dict[str, float]:
        """Window averages as floats, averaged over processes (every process must call it); empty keys give 0."""
        keys = sorted(self._sums)
        if not keys:
            return {}
        sums = torch.stack([self._sums[key].to(accelerator.device) for key in keys])
        counts = torch.stack([torch.as_tensor(self._counts[key]).to(accelerator.device) for key in keys])
        averages = sums / counts.clamp(min=1)
        if accelerator.num_processes > 1:
            averages = accelerator.reduce(averages, reduction="mean")
        return dict(zip(keys, averages.tolist()))
