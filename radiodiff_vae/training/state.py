"""Small objects that ``accelerator.register_for_checkpointing`` saves next to the models and optimizers.

Anything with ``state_dict``/``load_state_dict`` can be registered; these two hold what is neither a prepared model
nor an optimizer: the run's step counters, and loose parameters such as the loss's learned ``logvar``.
"""

import math
from typing import Any, Dict, Mapping, Tuple

import torch

from .nonfinite import NonFiniteGuard
from ..errors import CheckpointError


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


class TensorState:
    """Checkpoints named tensors in place (e.g. ``{"logvar": loss.logvar}``), keeping their identity.

    Loading copies into the registered tensors, so an optimizer that holds them keeps working. Names and shapes must
    match exactly: a checkpoint from a differently configured run fails loudly instead of loading half its state.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.tensors = dict(tensors)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {name: tensor.detach().cpu().clone() for name, tensor in self.tensors.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.tensors):
            raise CheckpointError(
                f"checkpointed tensors {sorted(state)} do not match the ones this run trains {sorted(self.tensors)}"
            )
        for name, tensor in self.tensors.items():
            value = state[name]
            if tuple(value.shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"checkpointed tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(tensor.shape)}"
                )
            with torch.no_grad():
                tensor.copy_(value.to(device=tensor.device, dtype=tensor.dtype))
