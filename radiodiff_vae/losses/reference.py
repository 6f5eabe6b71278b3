"""The VAE-GAN generator loss differentiated directly: the reference ``RadioVAELoss.generator_objective`` must match.

``generator_loss`` is the package's generator objective before issue 13: the total loss as one tensor, whose
adaptive weight backpropagates the nll and the GAN loss to the decoder's last layer through LPIPS and the
discriminator, and whose backward runs both again. Slower than the objective, which gets the same values and
gradients with one backward through LPIPS and the discriminator; ``tests/test_train_step.py`` checks that they
agree and ``benchmarks/benchmark_train_step.py`` times it as the ``previous`` formulation.
"""

from typing import Dict, Optional, Tuple, Union

import torch

from .adversarial import ADAPTIVE_WEIGHT_EPS, ADAPTIVE_WEIGHT_MAX, check_global_step
from .vae_gan import GENERATOR_LOG_KEYS, RadioVAELoss, _check_maps, _posterior_kl


def adaptive_weight_through_losses(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float = 1.0
) -> torch.Tensor:
    """The adaptive GAN weight with each loss backpropagated to ``last_layer`` on its own (graphs kept)."""
    (nll_grad,) = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = torch.linalg.vector_norm(nll_grad) / (torch.linalg.vector_norm(g_grad) + ADAPTIVE_WEIGHT_EPS)
    return torch.clamp(weight, 0.0, ADAPTIVE_WEIGHT_MAX).detach() * disc_weight


def generator_loss(
    loss: RadioVAELoss,
    inputs: torch.Tensor,
    reconstructions: torch.Tensor,
    posterior,
    global_step: Union[int, torch.Tensor],
    last_layer: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """The total generator loss (0-dim, with its graph) and its logs as floats, under the keys of the objective."""
    step = check_global_step(global_step)
    _check_maps(inputs, reconstructions, "generator_loss")
    kl = _posterior_kl(posterior, inputs.shape[0])
    factor = loss.disc_factor(step)
    total, terms, nll_loss, g_loss = loss._generator_terms(inputs, reconstructions, kl, factor)
    if factor > 0:
        d_weight = adaptive_weight_through_losses(nll_loss, g_loss, last_layer, loss.config.disc_weight)
        total = total + d_weight * factor * g_loss
        terms.update(total=total.detach(), d_weight=d_weight)
    logs = {key: float(terms[key]) for key in GENERATOR_LOG_KEYS}
    logs["disc_factor"] = factor
    return total, logs
