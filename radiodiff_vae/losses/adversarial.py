"""Adversarial terms of the VAE-GAN loss: GAN losses, the adaptive generator weight and the discriminator schedule.

Logits are the patch outputs of :class:`~radiodiff_vae.models.discriminator.NLayerDiscriminator`, any shape;
every loss here is a mean over all of them, a 0-dim tensor.
"""

import numbers
from typing import Union

import torch
import torch.nn.functional as F
from ..errors import InvalidArgumentError

GAN_LOSSES = ("hinge", "vanilla")
# Report section 3.3: d_weight = ||grad nll|| / (||grad g|| + 1e-4), clamped to [0, 1e4].
ADAPTIVE_WEIGHT_EPS = 1e-4
ADAPTIVE_WEIGHT_MAX = 1e4


def check_gan_loss(kind: str) -> str:
    """Returns ``kind`` if it names a GAN loss of `GAN_LOSSES`, else raises a ValueError listing them."""
    if kind not in GAN_LOSSES:
        raise InvalidArgumentError(f"Unknown GAN loss {kind!r}: expected one of {GAN_LOSSES}.")
    return kind


# Both discriminator losses add their real and fake halves, as the report writes the hinge loss. The CompVis code
# halves the sum; under Adam a constant factor on the loss changes (almost) nothing.
def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))`` (report section 3.3)."""
    return F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean()


def vanilla_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits: ``mean(softplus(-D(x))) + mean(softplus(D(x_hat)))``, i.e.
    ``-mean(log sigmoid(D(x))) - mean(log(1 - sigmoid(D(x_hat))))``."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def discriminator_gan_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """The discriminator's GAN loss of type ``kind`` (``"hinge"`` or ``"vanilla"``)."""
    if check_gan_loss(kind) == "hinge":
        return hinge_discriminator_loss(logits_real, logits_fake)
    return vanilla_discriminator_loss(logits_real, logits_fake)


def generator_gan_loss(logits_fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """The generator's GAN loss on the logits of its reconstructions.

    ``"hinge"``: ``-mean(D(x_hat))`` (report section 3.3). ``"vanilla"``: the non-saturating
    ``mean(softplus(-D(x_hat)))`` = ``-mean(log sigmoid(D(x_hat)))``, the generator side of the BCE game.
    """
    if check_gan_loss(kind) == "hinge":
        return -logits_fake.mean()
    return F.softplus(-logits_fake).mean()


def adaptive_generator_weight(
    reconstructions: torch.Tensor,
    nll_grad: torch.Tensor,
    gan_grad: torch.Tensor,
    last_layer: torch.Tensor,
    disc_weight: float = 1.0,
) -> torch.Tensor:
    """Weight that gives the GAN term a gradient as large as the reconstruction term's at ``last_layer``.

    ``clamp(||d nll / d last_layer|| / (||d g_loss / d last_layer|| + 1e-4), 0, 1e4) * disc_weight``, detached
    (Esser et al. 2021, report section 3.3), from the losses' gradients with respect to the reconstructions ``x_hat``:
    ``d loss / d last_layer`` is ``d loss / d x_hat`` pulled back through the decoder's last layer only, one
    weight-gradient convolution per loss (``retain_graph=True``; autograd visits nothing below that layer and
    writes no ``.grad``), instead of a second backward of each loss through LPIPS or the discriminator.

    Args:
        reconstructions (`torch.Tensor` of shape `(B, C, H, W)`): the decoder's output, with its graph.
        nll_grad (`torch.Tensor` of shape `(B, C, H, W)`): ``d nll / d reconstructions``.
        gan_grad (`torch.Tensor` of shape `(B, C, H, W)`): ``d g_loss / d reconstructions``.
        last_layer (`torch.Tensor`): normally ``vae.get_last_layer()``.
        disc_weight (`float`, defaults to 1.0): multiplies the clamped ratio.

    Returns:
        0-dim tensor, no grad.

    Raises:
        ValueError: ``last_layer`` does not require grad or the reconstructions do not depend on it.
    """
    if not last_layer.requires_grad:
        raise ValueError("adaptive_generator_weight: last_layer does not require grad, so it has no gradients.")
    grads = []
    for output_grad in (nll_grad, gan_grad):
        (grad,) = torch.autograd.grad(
            reconstructions, last_layer, grad_outputs=output_grad.to(reconstructions.dtype), retain_graph=True,
            allow_unused=True,
        )  # fmt: skip
        if grad is None:
            raise ValueError(
                f"adaptive_generator_weight: the reconstructions do not depend on last_layer (shape "
                f"{tuple(last_layer.shape)}); pass vae.get_last_layer() of the model that made them."
            )
        grads.append(grad)
    weight = torch.linalg.vector_norm(grads[0]) / (torch.linalg.vector_norm(grads[1]) + ADAPTIVE_WEIGHT_EPS)
    return torch.clamp(weight, 0.0, ADAPTIVE_WEIGHT_MAX).detach() * disc_weight


def check_global_step(global_step: Union[int, torch.Tensor]) -> int:
    """Returns ``global_step`` as a Python int; raises a ValueError unless it is a non-negative integer.

    Accepts Python and NumPy integers and 0-dim integer tensors (booleans and floats are refused: a float step
    usually means a wrong argument was passed, e.g. a learning rate or a loss).
    """
    if isinstance(global_step, torch.Tensor):
        if global_step.ndim != 0 or global_step.dtype.is_floating_point or global_step.dtype == torch.bool:
            raise ValueError(
                f"global_step must be a non-negative integer, got a tensor of shape {tuple(global_step.shape)} "
                f"and dtype {global_step.dtype}."
            )
        global_step = int(global_step)
    elif not isinstance(global_step, numbers.Integral) or isinstance(global_step, bool):
        raise ValueError(
            f"global_step must be a non-negative integer, got {global_step!r} ({type(global_step).__name__})."
        )
    if global_step < 0:
        raise ValueError(f"global_step must be a non-negative integer, got {global_step}.")
    return int(global_step)


def discriminator_factor(
    global_step: Union[int, torch.Tensor],
    disc_start: int,
    factor: float = 0.5,
    ramp_steps: int = 0,
) -> float:
    """Weight of the adversarial terms at ``global_step``: 0 before ``disc_start``, ``factor`` from it.

    With ``ramp_steps > 0`` the factor grows linearly over the first ``ramp_steps`` active steps:
    ``factor * min(1, (global_step - disc_start + 1) / ramp_steps)``, so step ``disc_start`` already trains the
    discriminator (with ``factor / ramp_steps``) and step ``disc_start + ramp_steps - 1`` reaches ``factor``.
    """
    step = check_global_step(global_step)
    if step < disc_start:
        return 0.0
    if ramp_steps > 0:
        return factor * min(1.0, (step - disc_start + 1) / ramp_steps)
    return factor
