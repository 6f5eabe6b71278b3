"""Skipping optimizer steps whose loss or gradients are not finite, and stopping a run that keeps producing them.

A NaN/inf in one step would otherwise poison Adam's moment estimates (and with them every later step). The guard
decides per optimizer step: a non-finite step changes no weight, is counted, and after ``max_consecutive`` of them
in a row the run stops, so the newest checkpoint still holds the last good weights.

Under data parallelism every process must take the same decision, or one would step while another waits in a
collective: :class:`~radiodiff_vae.training.step.VAEGANStep` sums the non-finite flags of all processes before
recording the step here.
"""

from typing import Any, Dict
from ..errors import InvalidArgumentError


class NonFiniteLossError(RuntimeError):
    """Raised by the training script when too many consecutive steps were not finite."""


class NonFiniteGuard:
    """Counts non-finite optimizer steps.

    Args:
        max_consecutive (`int`): number of non-finite steps in a row after which :attr:`exhausted` turns True.
    """

    def __init__(self, max_consecutive: int) -> None:
        if max_consecutive < 1:
            raise InvalidArgumentError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0
        self.first_step_of_streak: int = -1

    def record(self, finite: bool, step: int) -> bool:
        """Records the outcome of optimizer step ``step``; returns True when its update may be applied."""
        if finite:
            self.consecutive = 0
            self.first_step_of_streak = -1
            return True
        if self.consecutive == 0:
            self.first_step_of_streak = step
        self.consecutive += 1
        self.total += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.consecutive >= self.max_consecutive

    def describe_streak(self, last_step: int) -> str:
        return (
            f"{self.consecutive} consecutive optimizer steps with a non-finite loss or gradient (steps "
            f"{self.first_step_of_streak}..{last_step}; {self.total} skipped in this run)"
        )

    def state_dict(self) -> Dict[str, Any]:
        return {"consecutive": self.consecutive, "total": self.total, "first_step_of_streak": self.first_step_of_streak}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.consecutive = int(state["consecutive"])
        self.total = int(state["total"])
        self.first_step_of_streak = int(state["first_step_of_streak"])

