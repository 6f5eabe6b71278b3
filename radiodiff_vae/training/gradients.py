"""Gradient handling around accelerate for a model trained with two optimizers (autoencoder and discriminator).

Under fp16 one ``GradScaler`` scales the single backward of both objectives. Its per-optimizer state must see, per
optimizer step, exactly one ``unscale_`` and one ``step`` for each optimizer and then one ``update``: accelerate's
``AcceleratedOptimizer.step`` calls ``update`` itself, so stepping two of them in a row unscales the second
optimizer's gradients twice and updates the scale twice. ``accelerator.unscale_gradients(optimizers)`` (before
clipping) and :func:`step_optimizers` keep that order.
"""

from typing import Dict, List, Optional, Sequence

import torch


def _torch_optimizer(optimizer) -> torch.optim.Optimizer:
    while hasattr(optimizer, "optimizer"):  # accelerate's AcceleratedOptimizer, possibly nested
        optimizer = optimizer.optimizer
    return optimizer


def has_gradients(optimizer) -> bool:
    """Whether any parameter of ``optimizer`` has a gradient (the discriminator's has none before disc_start)."""
    groups = _torch_optimizer(optimizer).param_groups
    return any(parameter.grad is not None for group in groups for parameter in group["params"])


def step_optimizers(accelerator, optimizers: Sequence) -> None:
    """Steps every optimizer; with a ``GradScaler``, each with gradients once through it (skipped when they
    overflowed), then one update of the scale. Gradients must have been unscaled by
    ``accelerator.unscale_gradients`` (or are, here). An optimizer without gradients (the discriminator's in phase 1)
    steps as a no-op."""
    scaler = getattr(accelerator, "scaler", None)
    if scaler is None:
        for optimizer in optimizers:
            optimizer.step()
        return
    for optimizer in optimizers:
        if has_gradients(optimizer):
            scaler.step(_torch_optimizer(optimizer))  # unscales first only if accelerator.unscale_gradients did not
        else:
            _torch_optimizer(optimizer).step()  # GradScaler.step refuses an optimizer without gradients
    scaler.update()


def clip_grad_norms(
    accelerator, parameter_groups: Dict[str, List[torch.nn.Parameter]], max_norm: float
) -> Dict[str, Optional[torch.Tensor]]:
    """Clips each group of parameters to ``max_norm`` separately and returns each group's norm before clipping.

    Groups whose parameters have no gradient (the discriminator before ``--disc_start``) are skipped (norm None).
    The gradients must be unscaled already (``accelerator.unscale_gradients``); the norms are taken after DDP's
    all-reduce, so every process sees the same values.
    """
    norms: Dict[str, Optional[torch.Tensor]] = {}
    for name, parameters in parameter_groups.items():
        with_grad = [parameter for parameter in parameters if parameter.grad is not None]
        norms[name] = torch.nn.utils.clip_grad_norm_(with_grad, max_norm) if with_grad else None
    return norms
