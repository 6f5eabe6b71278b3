"""What the tests ask of a training run, through the environment rather than the script's flags.

``examples/train_vae.py`` reads two variables, so that its ``--help`` shows users' options only:

* ``RADIODIFF_VAE_DEBUG_TRACE=1``: each process writes ``output_dir/debug/rank-<i>.json`` at the end, the map names
  it trained on and digests of its final weights (the tests compare processes and resumed runs with it).
* ``RADIODIFF_VAE_NONFINITE_STEPS=1,4``: the generator objective is NaN at these optimizer steps, which exercises the
  non-finite guard (skipped steps, the stop after a streak) the way a diverging run would.
"""

import contextlib
import os
from typing import Iterator, Set


TRACE_VARIABLE = "RADIODIFF_VAE_DEBUG_TRACE"
NONFINITE_STEPS_VARIABLE = "RADIODIFF_VAE_NONFINITE_STEPS"


def trace_requested() -> bool:
    """Whether ``RADIODIFF_VAE_DEBUG_TRACE`` asks for the per-process trace."""
    return os.environ.get(TRACE_VARIABLE, "") not in ("", "0")


def nonfinite_steps() -> Set[int]:
    """The optimizer steps ``RADIODIFF_VAE_NONFINITE_STEPS`` names (comma-separated); raises a ValueError naming
    the variable for anything that is not a list of integers >= 0."""
    text = os.environ.get(NONFINITE_STEPS_VARIABLE, "").strip()
    if not text:
        return set()
    try:
        steps = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        steps = {-1}
    if any(step < 0 for step in steps):
        raise ValueError(f"{NONFINITE_STEPS_VARIABLE} takes optimizer steps >= 0 separated by commas, got {text!r}")
    return steps


@contextlib.contextmanager
def nonfinite_generator_objective(loss_fn) -> Iterator[None]:
    """While active, ``loss_fn.generator_objective`` returns a NaN objective and a NaN ``total`` log, as a diverged
    step would; the step's backward and its all-reductions still run on every process."""
    original = loss_fn.generator_objective

    def diverged(*args, **kwargs):
        objective, logs = original(*args, **kwargs)
        logs = dict(logs, total=logs["total"] * float("nan"))
        return objective * float("nan"), logs

    loss_fn.generator_objective = diverged
    try:
        yield
    finally:
        del loss_fn.generator_objective  # the class's method again
