"""Gradient handling around accelerate for a model trained with two optimizers (autoencoder and discriminator)."""

from typing import Dict, Iterable, List, Optional

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


def clip_grad_norms(
    accelerator, parameter_groups: Dict[str, List[torch.nn.Parameter]], max_norm: float
) -> Dict[str, Optional[torch.Tensor]]:
    """Clips each group of parameters to ``max_norm`` separately and returns each group's norm before clipping.

    Groups whose parameters have no gradient (the discriminator before ``--disc_start``) are skipped (norm None).
    Under fp16 the first ``accelerator.clip_grad_norm_`` unscales the gradients of *every* prepared optimizer and a
    second unscale of the same optimizer is an error in ``GradScaler``, so later groups are clipped directly.
    """
    norms: Dict[str, Optional[torch.Tensor]] = {}
    unscaled = False
    for name, parameters in parameter_groups.items():
        with_grad = [parameter for parameter in parameters if parameter.grad is not None]
        if not with_grad:
            norms[name] = None
            continue
        if unscaled and accelerator.mixed_precision == "fp16":
            norms[name] = torch.nn.utils.clip_grad_norm_(with_grad, max_norm)
        else:
            # all parameters, not only those with a gradient: FSDP recognises a model by its full parameter list
            norms[name] = accelerator.clip_grad_norm_(parameters, max_norm)
            unscaled = True
    return norms
