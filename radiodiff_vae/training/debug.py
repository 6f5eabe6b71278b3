"""What the tests ask of a training run, through the environment rather than the script's flags.

``examples/train_vae.py`` reads two variables, so that its ``--help`` shows users' options only:

* ``RADIODIFF_VAE_DEBUG_TRACE=1``: each process writes ``output_dir/debug/rank-<i>.json`` at the end, the map names
  it trained on and digests of its final weights (the tests compare processes and resumed runs with it).
* ``RADIODIFF_VAE_NONFINITE_STEPS=1,4``: the generator objective is NaN at these optimizer steps, which exercises the
  non-finite guard (skipped steps, the stop after a streak) the way a diverging run would.
"""

import contextlib
import hashlib
import os
from typing import Iterable, Iterator, List, Set, Tuple

import torch

from ..atomic import atomic_write_json


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


def weights_digest(named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """SHA-256 of named tensors (e.g. ``module.state_dict().items()``): equal digests mean bitwise-equal weights."""
    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_trace(output_dir, accelerator, raw_vae, discriminator, loss_fn, names_seen: List[str], global_step, guard):
    """``output_dir/debug/rank-<i>.json``: the maps this process trained on and digests of its final weights."""
    atomic_write_json(
        os.path.join(output_dir, "debug", f"rank-{accelerator.process_index}.json"),
        {
            "process_index": accelerator.process_index,
            "num_processes": accelerator.num_processes,
            "names": names_seen,
            "global_step": global_step,
            "vae_sha256": weights_digest(raw_vae.state_dict().items()),
            # Parameters only: BatchNorm running statistics are per process between DDP's buffer broadcasts.
            "discriminator_parameters_sha256": weights_digest(
                accelerator.unwrap_model(discriminator).named_parameters()
            ),
            "logvar": loss_fn.logvar.item(),
            "nonfinite_steps_skipped": guard.total,
        },
    )
