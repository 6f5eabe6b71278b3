"""Learning-rate schedules for both optimizers, from diffusers' scheduler zoo.

The report decays the learning rate polynomially from ``learning_rate`` to a minimum (5e-6 -> 5e-7). diffusers has
that schedule (``get_polynomial_decay_schedule_with_warmup``) but its ``get_scheduler`` does not forward ``lr_end``
(it always decays to 1e-7), so the polynomial case calls the schedule directly.
"""

from typing import Callable, Optional

from diffusers.optimization import SchedulerType, get_polynomial_decay_schedule_with_warmup, get_scheduler
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from ..errors import InvalidArgumentError

SCHEDULER_NAMES = tuple(scheduler.value for scheduler in SchedulerType if scheduler != SchedulerType.PIECEWISE_CONSTANT)


def build_lr_scheduler(
    name: str,
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: Optional[float] = None,
    power: float = 1.0,
    num_cycles: int = 1,
    start_step: int = 0,
) -> LambdaLR:
    """A diffusers learning-rate schedule; ``polynomial`` decays to ``lr_end`` at ``num_training_steps``.

    All step counts are in scheduler steps: under accelerate without ``split_batches`` a prepared scheduler steps
    once per process per optimizer step, so pass optimizer steps times ``num_processes``.

    ``start_step`` delays the schedule: the rate stays at its step-0 value until then, and warm-up and decay run
    over ``start_step .. num_training_steps``. The discriminator's schedule starts at ``disc_start``, so that it
    enters phase 2 at its full rate and decays over the steps it trains.

    Raises:
        ValueError: unknown ``name``, or ``lr_end`` missing / not below the optimizer's learning rate for
            ``polynomial``.
    """
    if name not in SCHEDULER_NAMES:
        raise InvalidArgumentError(f"--lr_scheduler: expected one of {list(SCHEDULER_NAMES)}, got {name!r}")
    if num_training_steps < 1:
        raise ValueError(f"the schedule needs at least one training step, got {num_training_steps}")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    if start_step > 0:
        scheduler = build_lr_scheduler(
            name, optimizer, num_warmup_steps, max(1, num_training_steps - start_step), lr_end, power, num_cycles
        )
        scheduler.lr_lambdas = [_delayed(function, start_step) for function in scheduler.lr_lambdas]
        return scheduler
    if name == SchedulerType.POLYNOMIAL.value:
        initial_lr = optimizer.defaults["lr"]
        if lr_end is None or not 0.0 <= lr_end < initial_lr:
            raise InvalidArgumentError(
                f"--lr_end must be >= 0 and below the learning rate {initial_lr} for the polynomial schedule, "
                f"got {lr_end}"
            )
        return get_polynomial_decay_schedule_with_warmup(
            optimizer,
            num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps,
            lr_end=lr_end,
            power=power,
        )
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
        power=power,
    )



def _delayed(function: Callable[[int], float], start: int) -> Callable[[int], float]:
    # A plain function, which LambdaLR leaves out of its state_dict (as it does diffusers' own): checkpoints hold
    # the step counter only, and the offset comes from the run's flags.
    def delayed(step: int) -> float:
        return function(max(0, step - start))

    return delayed
