"""The run's position: the step counters that ``accelerator.register_for_checkpointing`` saves next to the models
and optimizers, and the arithmetic that turns a step into the epoch and batch a resumed run goes on from."""

import math
from typing import Any, Dict, Mapping, Tuple

from .nonfinite import NonFiniteGuard


class TrainingProgress:
    """The optimizer-step counter and the non-finite-step counters of a run.

    ``global_step`` counts optimizer steps (not micro-batches); the learning-rate schedule, ``--disc_start`` and the
    checkpoint names all count in these units.
    """

    def __init__(self, guard: NonFiniteGuard) -> None:
        self.global_step = 0
        self.guard = guard

    def state_dict(self) -> Dict[str, Any]:
        return {"global_step": self.global_step, "nonfinite": self.guard.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        self.guard.load_state_dict(state["nonfinite"])


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
