"""Instrumentation that the tests put around a training run from outside the script (whose loop holds no hook):

* a trace: each process writes ``output_dir/debug/rank-<i>.json`` at ``accelerator.end_training()``, the names of the
  maps it trained on and digests of its weights after its last optimizer step (the tests compare processes, and
  resumed runs with uninterrupted ones);
* non-finite steps: the generator objective is NaN at chosen optimizer steps, which exercises the non-finite guard
  (skipped steps, the stop after a streak) the way a diverging run would.

In the test's process: ``with debug.instrumented(trace=True, nonfinite_steps={1}): train_vae.main(...)``. In a
process of its own (torchrun), the environment asks for them::

    RADIODIFF_VAE_DEBUG_TRACE=1 RADIODIFF_VAE_NONFINITE_STEPS=1,4 \
        torchrun --nproc_per_node 2 -m radiodiff_vae.training.debug examples/train_vae.py --output_dir ...
"""

import contextlib
import hashlib
import os
import runpy
import sys
from typing import Any, Iterable, Iterator, List, Optional, Set, Tuple

import torch

from ..atomic import atomic_write_json
from ..errors import InvalidArgumentError

TRACE_VARIABLE = "RADIODIFF_VAE_DEBUG_TRACE"
NONFINITE_STEPS_VARIABLE = "RADIODIFF_VAE_NONFINITE_STEPS"


def trace_requested() -> bool:
    """Whether ``RADIODIFF_VAE_DEBUG_TRACE`` asks for the per-process trace."""
    return os.environ.get(TRACE_VARIABLE, "") not in ("", "0")


def nonfinite_steps() -> Set[int]:
    """The optimizer steps ``RADIODIFF_VAE_NONFINITE_STEPS`` names (comma-separated); raises an
    InvalidArgumentError naming the variable for anything that is not a list of integers >= 0."""
    text = os.environ.get(NONFINITE_STEPS_VARIABLE, "").strip()
    if not text:
        return set()
    try:
        steps = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        steps = {-1}
    if any(step < 0 for step in steps):
        raise InvalidArgumentError(
            f"{NONFINITE_STEPS_VARIABLE} takes optimizer steps >= 0 separated by commas, got {text!r}"
        )
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


class _Recorder:
    """What one process saw: the maps' names as its training loop received them, and its state after each optimizer
    step (digests, logvar, counters)."""

    def __init__(self, nonfinite: Set[int]) -> None:
        self.nonfinite = set(nonfinite)
        self.names: List[str] = []
        self.last: Optional[dict] = None

    def after_step(self, step, global_step: int, result) -> None:
        if not result.sync:
            return
        accelerator = step.accelerator
        self.last = {
            "process_index": accelerator.process_index,
            "num_processes": accelerator.num_processes,
            "global_step": global_step + 1,
            "vae_sha256": weights_digest(step.raw_vae.state_dict().items()),
            # Parameters only: BatchNorm running statistics are per process between DDP's buffer broadcasts.
            "discriminator_parameters_sha256": weights_digest(
                accelerator.unwrap_model(step.discriminator).named_parameters()
            ),
            "logvar": float(step.loss_fn.logvar.detach().float().item()),
            "nonfinite_steps_skipped": step.guard.total,
        }

    def write(self, accelerator) -> None:
        output_dir = accelerator.project_configuration.project_dir
        if self.last is None or output_dir is None:
            return
        trace = dict(self.last, names=self.names)
        atomic_write_json(os.path.join(output_dir, "debug", f"rank-{accelerator.process_index}.json"), trace)


@contextlib.contextmanager
def instrumented(trace: bool = True, nonfinite_steps: Iterable[int] = ()) -> Iterator[None]:
    """Instruments every training run started inside the block (see the module docstring); restored afterwards.

    Patches ``VAEGANStep.__call__`` (NaN injection, the state after each optimizer step), the prepared DataLoader's
    iteration (the names of the batches the loop received: not those accelerate fetched ahead and never handed
    out) and ``Accelerator.end_training`` (writes the trace).
    """
    from accelerate import Accelerator
    from accelerate.data_loader import DataLoaderShard

    from .step import VAEGANStep

    recorder = _Recorder(set(nonfinite_steps))
    original_call, original_iter, original_end = VAEGANStep.__call__, DataLoaderShard.__iter__, Accelerator.end_training

    def call(self, maps, global_step):
        diverge = global_step in recorder.nonfinite
        with nonfinite_generator_objective(self.loss_fn) if diverge else contextlib.nullcontext():
            result = original_call(self, maps, global_step)
        if trace:
            recorder.after_step(self, global_step, result)
        return result

    def iterate(self):
        for batch in original_iter(self):
            if isinstance(batch, dict) and "name" in batch:
                recorder.names.extend(batch["name"])
            yield batch

    def end_training(self):
        if trace:
            recorder.write(self)
        return original_end(self)

    VAEGANStep.__call__, DataLoaderShard.__iter__, Accelerator.end_training = call, iterate, end_training
    try:
        yield
    finally:
        VAEGANStep.__call__, DataLoaderShard.__iter__, Accelerator.end_training = (
            original_call, original_iter, original_end
        )  # fmt: skip


def run_script(argv: List[str]) -> Any:
    """``python -m radiodiff_vae.training.debug SCRIPT ARGS...``: runs SCRIPT as ``__main__`` with the
    instrumentation the environment asks for."""
    if not argv:
        raise SystemExit("usage: python -m radiodiff_vae.training.debug SCRIPT [ARGS...]")
    script = argv[0]
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    with instrumented(trace=trace_requested(), nonfinite_steps=nonfinite_steps()):
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    run_script(sys.argv[1:])
