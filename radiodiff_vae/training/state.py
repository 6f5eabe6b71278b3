"""The run's position: the step counters and the training time that ``accelerator.register_for_checkpointing``
saves next to the models and optimizers, and the arithmetic that turns a step into the epoch and batch a resumed run
goes on from."""

import math
import time
from typing import Any, Dict, Mapping, Optional, Tuple

from .nonfinite import NonFiniteGuard


class TrainingProgress:
    """The optimizer-step counter of a run and, with a ``guard``, its non-finite-step counters.

    ``global_step`` counts optimizer steps (not micro-batches); the learning-rate schedule, ``--disc_start`` and the
    checkpoint names all count in these units. A run that stops at its first non-finite loss has no streak to keep
    and passes no guard (a checkpoint's saved counters are then ignored).
    """

    def __init__(self, guard: Optional[NonFiniteGuard] = None) -> None:
        self.global_step = 0
        self.guard = guard

    def state_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"global_step": self.global_step}
        if self.guard is not None:
            state["nonfinite"] = self.guard.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        if self.guard is not None:
            self.guard.load_state_dict(state["nonfinite"])


class TrainingClock:
    """Seconds spent training (steps and data loading; not validation, checkpoints, or start-up), kept in the
    checkpoints so that a resumed run goes on counting from where its checkpoint was taken (``--max_train_seconds``).

    ``start()`` before the loop and after every pause (validation, a checkpoint), ``lap()`` after each optimizer
    step: the time between a pause and the next ``start()`` is not counted.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._mark: Optional[float] = None

    def start(self) -> None:
        self._mark = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        if self._mark is not None:
            self.seconds += now - self._mark
        self._mark = now
        return self.seconds

    def state_dict(self) -> Dict[str, float]:
        return {"training_seconds": self.seconds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seconds = float(state["training_seconds"])


def epoch_length(num_batches: int, gradient_accumulation_steps: int, max_train_steps: int) -> Tuple[int, int]:
    """``(steps_per_epoch, num_epochs)``: optimizer steps per pass over a DataLoader of ``num_batches`` micro-batches
    (a last, shorter accumulation window counts as a step), and the passes ``max_train_steps`` need."""
    steps_per_epoch = math.ceil(num_batches / gradient_accumulation_steps)
    return steps_per_epoch, math.ceil(max_train_steps / steps_per_epoch)


def resume_position(global_step: int, steps_per_epoch: int, gradient_accumulation_steps: int) -> Tuple[int, int]:
    """``(epoch, batches_to_skip)``: where a run that has taken ``global_step`` optimizer steps goes on, the epoch and
    the micro-batches of it already trained on (pass them to ``accelerator.skip_first_batches`` in that epoch only;
    with accelerate's seedable sampler the epoch's order is the same as the first time)."""
    return global_step // steps_per_epoch, (global_step % steps_per_epoch) * gradient_accumulation_steps
