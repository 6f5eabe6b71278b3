"""Gradient handling around accelerate for a model trained with two optimizers (autoencoder and discriminator).

Under fp16 one ``GradScaler`` scales the single backward of both objectives. Its per-optimizer state must see, per
optimizer step, exactly one ``unscale_`` and one ``step`` for each optimizer and then one ``update``: accelerate's
``AcceleratedOptimizer.step`` calls ``update`` itself, so stepping two of them in a row unscales the second
optimizer's gradients twice and updates the scale twice. :func:`unscale_gradients` and :func:`step_optimizers`
keep that order.
"""

from typing import Dict, Iterable, List, Optional, Sequence

import torch


def average_loose_gradients(accelerator, parameters: Iterable[torch.nn.Parameter]) -> None:
    """Averages over processes the gradients of parameters that live outside every prepared model.

    DDP averages the gradients of the modules it wraps; a parameter such as the loss's learned ``logvar`` is in no
    module that ``accelerator.prepare`` saw, so without this each process would train its own copy and the replicas
    would drift apart. Call once per optimizer step, after the last backward of the accumulation window.
    """
    if accelerator.num_processes == 1:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad = accelerator.reduce(parameter.grad, reduction="mean")


def _torch_optimizer(optimizer) -> torch.optim.Optimizer:
    while hasattr(optimizer, "optimizer"):  # accelerate's AcceleratedOptimizer, possibly nested
        optimizer = optimizer.optimizer
    return optimizer


def has_gradients(optimizer) -> bool:
    """Whether any parameter of ``optimizer`` has a gradient (the discriminator's has none before disc_start)."""
    groups = _torch_optimizer(optimizer).param_groups
    return any(parameter.grad is not None for group in groups for parameter in group["params"])


def unscale_gradients(accelerator, optimizers: Sequence) -> None:
    """Divides the gradients of each optimizer by the fp16 loss scale, once; nothing without a ``GradScaler``.

    Call once per optimizer step, before clipping, with the optimizers that will then be stepped.
    """
    scaler = getattr(accelerator, "scaler", None)
    if scaler is None:
        return
    for optimizer in optimizers:
        scaler.unscale_(_torch_optimizer(optimizer))


def step_optimizers(accelerator, optimizers: Sequence) -> None:
    """Steps every optimizer; with a ``GradScaler``, each with gradients once through it (skipped when they
    overflowed), then one update of the scale. Gradients must have been unscaled by :func:`unscale_gradients` (or
    are, here). An optimizer without gradients (the discriminator's in phase 1) steps as a no-op."""
    scaler = getattr(accelerator, "scaler", None)
    if scaler is None:
        for optimizer in optimizers:
            optimizer.step()
        return
    for optimizer in optimizers:
        if has_gradients(optimizer):
            scaler.step(_torch_optimizer(optimizer))  # unscales first only if unscale_gradients did not
        else:
            _torch_optimizer(optimizer).step()  # GradScaler.step refuses an optimizer without gradients
    scaler.update()


def clip_grad_norms(
    accelerator, parameter_groups: Dict[str, List[torch.nn.Parameter]], max_norm: float
) -> Dict[str, Optional[torch.Tensor]]:
    """Clips each group of parameters to ``max_norm`` separately and returns each group's norm before clipping.

    Groups whose parameters have no gradient (the discriminator before ``--disc_start``) are skipped (norm None).
    The gradients must be unscaled already (:func:`unscale_gradients`); the norms are taken after DDP's all-reduce,
    so every process sees the same values.
    """
    norms: Dict[str, Optional[torch.Tensor]] = {}
    for name, parameters in parameter_groups.items():
        with_grad = [parameter for parameter in parameters if parameter.grad is not None]
        norms[name] = torch.nn.utils.clip_grad_norm_(with_grad, max_norm) if with_grad else None
    return norms
