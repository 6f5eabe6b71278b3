"""RadioVAELoss: the VAE-GAN objective of the RadioDiff VAE (report section 3, defaults of docs/loss.md).

Its trained parts are ordinary modules, ``criterion.discriminator`` and ``criterion.log_variance`` (the learned
``logvar``), that a training script prepares with accelerate like the autoencoder and passes to the objectives. A
training step calls it twice on one autoencoder forward, as ``radiodiff_vae.training.VAEGANStep`` does::

    vae, discriminator, log_variance = accelerator.prepare(vae, criterion.discriminator, criterion.log_variance)
    out = vae(x, sample_posterior=True, return_posterior=True)          # through the accelerate-prepared vae
    objective, logs = criterion.generator_objective(
        x, out.sample, out.latent_dist, step, raw_vae.get_last_layer(), log_variance=log_variance
    )
    if criterion.disc_factor(step) > 0:
        d_loss, d_logs = criterion.discriminator_objective(x, out.sample, step, discriminator=discriminator)
        objective = objective + d_loss                # no gradient crosses: the discriminator sees detached maps
    accelerator.backward(objective)   # then both optimizers (the autoencoder's also trains
                                      # criterion.trainable_autoencoder_parameters())

``generator_objective`` returns a surrogate with the loss's gradients whose backward runs LPIPS and the
discriminator once each; ``logs["total"]`` is the loss's value.
"""

from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config

from ..errors import InvalidArgumentError
from ..models.autoencoder_radio import GRADIENT_CHECKPOINTING_MODES
from ..models.discriminator import NLayerDiscriminator
from .adversarial import (
    adaptive_generator_weight,
    check_gan_loss,
    check_global_step,
    discriminator_factor,
    discriminator_gan_loss,
    generator_gan_loss,
)
from .perceptual import PerceptualLoss

GENERATOR_LOG_KEYS = ("total", "nll", "rec", "l1", "mse", "perceptual", "kl", "logvar", "d_weight", "g_loss")
DISCRIMINATOR_LOG_KEYS = ("disc_loss", "logits_real", "logits_fake")


class LogVariance(nn.Module):
    r"""The learned log-variance of the loss's Gaussian likelihood, ``nll = rec / exp(logvar) + logvar``: one 0-dim
    parameter ``logvar``.

    A module of its own so that a training script treats it as it treats the models: ``accelerator.prepare`` it (DDP
    then averages its gradient over the processes) and ``save_state`` checkpoints it. Calling it returns ``logvar`` as
    a 0-dim tensor of the graph; the call goes through the (DDP) module, which is how DDP learns that the backward
    will reach the parameter.

    Parameters:
        init (`float`, defaults to 0.0): the initial value.
        learn (`bool`, defaults to `True`): whether ``logvar`` requires grad.
    """

    def __init__(self, init: float = 0.0, learn: bool = True):
        super().__init__()
        self.logvar = nn.Parameter(torch.full((), float(init)), requires_grad=learn)

    def forward(self) -> torch.Tensor:
        return self.logvar.view(())  # a view: the graph's path to the parameter starts in this forward


class RadioVAELoss(nn.Module, ConfigMixin):
    r"""VAE-GAN loss: pixel L1 + MSE + LPIPS under a learned variance, KL, and a PatchGAN with an adaptive weight.

    Generator (autoencoder) objective, per batch of B maps::

        rec   = |x - x_hat| + (x - x_hat)^2 + perceptual_weight * LPIPS(x, x_hat)     # per pixel, (B, C, H, W)
        nll   = sum(rec / exp(logvar) + logvar) / B
        kl    = sum(KL(q(z|x) || N(0, I))) / B
        g     = -mean(D(x_hat))                                  (hinge; mean(softplus(-D(x_hat))) for vanilla)
        total = nll + kl_weight * kl + d_weight * disc_factor * g
        d_weight = clamp(||grad nll|| / (||grad g|| + 1e-4), 0, 1e4) * disc_weight   at the decoder's last layer

    Discriminator objective: ``disc_factor * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat))))`` on detached maps.
    ``disc_factor`` is 0 before ``disc_start`` (and then neither the discriminator nor the adaptive weight runs).

    Parameters:
        kl_weight (`float`, defaults to 1e-6): weight of the KL term.
        perceptual_weight (`float`, defaults to 1.0): weight of LPIPS inside ``rec``; 0 skips LPIPS entirely (no
            VGG16 weights needed).
        logvar_init (`float`, defaults to 0.0): initial value of the log-variance ``logvar``.
        learn_logvar (`bool`, defaults to `True`): train ``logvar`` (the report). `False` keeps it fixed, as the
            original trainer did by never giving it to an optimizer.
        disc_start (`int`, defaults to 50001): first step with the adversarial terms.
        disc_factor_max (`float`, defaults to 0.5): ``disc_factor`` from ``disc_start`` on (after the ramp).
        disc_ramp_steps (`int`, defaults to 0): steps over which ``disc_factor`` grows linearly to
            ``disc_factor_max``; 0 switches it on at once.
        disc_weight (`float`, defaults to 0.5): multiplies the adaptive weight.
        gan_loss (`str`, defaults to `"hinge"`): `"hinge"` or `"vanilla"` (softplus / binary cross-entropy).
        disc_in_channels (`int`, defaults to 1): input channels of the discriminator.
        disc_num_layers (`int`, defaults to 3): stride-2 layers of the discriminator.
        disc_base_channels (`int`, defaults to 64): filters of its first layer.
        disc_use_actnorm (`bool`, defaults to `False`): ActNorm instead of BatchNorm in the discriminator.
        allow_download (`bool`, *optional*): whether the VGG16 trunk of LPIPS may be downloaded when it is not in
            ``torch.hub.get_dir()/checkpoints``; ``None`` allows it unless ``HF_HUB_OFFLINE`` is set. Not saved in
            the config.

    Attributes:
        discriminator (`NLayerDiscriminator`): train it with its own optimizer.
        log_variance (`LogVariance`): holds ``logvar`` (`nn.Parameter`, 0-dim, also ``self.logvar``), which requires
            grad only when ``learn_logvar``; trained by the autoencoder's optimizer.
        perceptual (`PerceptualLoss` or `None`): frozen LPIPS, absent when ``perceptual_weight == 0``.
    """

    config_name = "loss_config.json"
    ignore_for_config = ["allow_download"]

    @register_to_config
    def __init__(
        self,
        kl_weight: float = 1e-6,
        perceptual_weight: float = 1.0,
        logvar_init: float = 0.0,
        learn_logvar: bool = True,
        disc_start: int = 50001,
        disc_factor_max: float = 0.5,
        disc_ramp_steps: int = 0,
        disc_weight: float = 0.5,
        gan_loss: str = "hinge",
        disc_in_channels: int = 1,
        disc_num_layers: int = 3,
        disc_base_channels: int = 64,
        disc_use_actnorm: bool = False,
        allow_download: Optional[bool] = None,
    ):
        super().__init__()
        for name, value in (
            ("kl_weight", kl_weight),
            ("perceptual_weight", perceptual_weight),
            ("disc_factor_max", disc_factor_max),
            ("disc_weight", disc_weight),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < float("inf"):
                raise InvalidArgumentError(f"RadioVAELoss: {name} must be a finite number >= 0, got {value!r}.")
        for name, value in (("disc_start", disc_start), ("disc_ramp_steps", disc_ramp_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(f"RadioVAELoss: {name} must be an integer >= 0, got {value!r}.")
        check_gan_loss(gan_loss)

        # LPIPS first: it is the part that can fail (missing VGG16 weights), before anything else is built.
        self.perceptual = PerceptualLoss(allow_download) if perceptual_weight > 0 else None
        self.log_variance = LogVariance(logvar_init, learn_logvar)
        self.discriminator = NLayerDiscriminator(
            in_channels=disc_in_channels,
            base_channels=disc_base_channels,
            num_layers=disc_num_layers,
            use_actnorm=disc_use_actnorm,
        )

    def enable_gradient_checkpointing(self, mode: str = "all") -> None:
        """Checkpoints LPIPS on the reconstruction's side: the same values and gradients, less memory. Takes the
        mode given to ``vae.enable_gradient_checkpointing(mode=...)``:

        - ``"selective"`` or ``"full_resolution"``: no VGG16 convolution runs twice; the max-pools and the fp32
          heads (unit normalisation, squared differences) are recomputed in the backward from bf16 features;
        - ``"all"``: the VGG16 trunk slice by slice as well (one more trunk forward), and the heads.

        Raises:
            InvalidArgumentError: an unknown ``mode`` (a ValueError).
        """
        if mode not in GRADIENT_CHECKPOINTING_MODES:
            raise InvalidArgumentError(
                f"RadioVAELoss.enable_gradient_checkpointing: mode must be one of "
                f"{list(GRADIENT_CHECKPOINTING_MODES)}, got {mode!r}."
            )
        if self.perceptual is not None:
            self.perceptual.gradient_checkpointing = True
            # full_resolution: selective keeps less than recomputing the trunk did and recomputes no convolution
            self.perceptual.checkpoint_mode = "all" if mode == "all" else "selective"

    # ----------------------------------------------------------------------------------------------------------
    def disc_factor(self, global_step: Union[int, torch.Tensor]) -> float:
        """Weight of both adversarial terms at ``global_step``: 0 before ``disc_start``, then (ramped to)
        ``disc_factor_max``. Raises a ValueError unless the step is a non-negative integer."""
        return discriminator_factor(
            global_step, self.config.disc_start, self.config.disc_factor_max, self.config.disc_ramp_steps
        )

    @property
    def logvar(self) -> nn.Parameter:
        """The log-variance parameter (0-dim), ``self.log_variance.logvar``."""
        return self.log_variance.logvar

    def trainable_autoencoder_parameters(self) -> List[nn.Parameter]:
        """Parameters of this loss that the autoencoder's optimizer must train: ``[logvar]`` or ``[]``."""
        return [self.logvar] if self.logvar.requires_grad else []

    # ----------------------------------------------------------------------------------------------------------
    def generator_objective(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        posterior,
        global_step: Union[int, torch.Tensor],
        last_layer: Optional[torch.Tensor] = None,
        log_variance: Optional[nn.Module] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The autoencoder's objective (class docstring) as a surrogate to backpropagate once, and its logs.

        The loss's part that depends on the reconstruction ``x_hat`` is differentiated with respect to ``x_hat``
        (and ``logvar``) first: one backward through LPIPS for ``dnll/dx_hat``, one through the discriminator for
        ``dg/dx_hat``. The adaptive weight needs both gradients at the decoder's last layer; the chain rule from
        ``x_hat`` to ``last_layer`` is a single weight-gradient convolution, so no backward through LPIPS or the
        discriminator is repeated (differentiating the total loss directly would run both twice). The surrogate
        ``sum(x_hat * dL/dx_hat) + kl_weight * kl + logvar * dL/dlogvar`` has the total loss's gradient with
        respect to every autoencoder parameter and ``logvar``; backpropagate it (``accelerator.backward``) once.

        Args:
            inputs (`torch.Tensor` of shape `(B, C, H, W)`): the maps, in [-1, 1].
            reconstructions (`torch.Tensor` of shape `(B, C, H, W)`): the decoder's output, with its graph.
            posterior (`DiagonalGaussianDistribution`): ``q(z | inputs)``, with its graph.
            global_step (`int`): the optimisation step, for ``disc_factor``.
            last_layer (`torch.Tensor`, *optional*): ``vae.get_last_layer()`` of the model that made
                ``reconstructions``; needed from ``disc_start`` on, for the adaptive GAN weight.
            log_variance (`nn.Module`, *optional*): the module that gives ``logvar``, e.g. the accelerate-prepared
                (DDP) wrapper of ``self.log_variance``; defaults to ``self.log_variance``.

        Returns:
            The 0-dim surrogate (its value is not the loss), and detached 0-dim tensors: total (the loss's value),
            nll, rec (mean per pixel), l1, mse, perceptual (means), kl, logvar, d_weight, g_loss (both 0 while the
            discriminator is off) and disc_factor. Nothing is turned into a Python number, so a caller can keep them
            on the device until it logs.

        Raises:
            ValueError: maps of different shapes, a posterior without ``kl()`` or of another batch size, a step that
                is no non-negative integer, reconstructions without a graph, no ``last_layer`` from ``disc_start``
                on; before any work.
        """
        step = check_global_step(global_step)
        _check_maps(inputs, reconstructions, "generator_objective")
        if not (torch.is_grad_enabled() and reconstructions.requires_grad):
            raise ValueError("generator_objective needs reconstructions with a graph (gradients enabled).")
        kl = _posterior_kl(posterior, inputs.shape[0])
        factor = self.disc_factor(step)
        if factor > 0 and not (isinstance(last_layer, torch.Tensor) and last_layer.requires_grad):
            raise ValueError(
                f"generator_objective at step {step} (disc_start {self.config.disc_start}) needs last_layer "
                f"(vae.get_last_layer(), a weight that requires grad) for the adaptive GAN weight, got "
                f"{type(last_layer).__name__}."
            )
        # A leaf cut between the autoencoder and the loss: the LPIPS and discriminator graphs end here and are
        # freed by the first autograd.grad, before the autoencoder's backward allocates its gradients.
        # (A view of the leaf, not the leaf itself: module backward hooks, e.g. FlopCounterMode's, refuse a leaf
        # input under autograd.grad.)
        leaf = reconstructions.detach().requires_grad_(True).view_as(reconstructions)
        logvar = (self.log_variance if log_variance is None else log_variance)()  # 0-dim
        loss, terms, nll_loss, g_loss = self._generator_terms(inputs, leaf, kl, factor, logvar)
        loose = [logvar] if logvar.requires_grad else []
        nll_grads = torch.autograd.grad(nll_loss, [leaf, *loose])  # the LPIPS backward, once
        rec_grad = nll_grads[0]  # (B, C, H, W)
        if factor > 0:
            (gan_grad,) = torch.autograd.grad(g_loss, leaf)  # the discriminator's input backward, once
            disc_weight = self.config.disc_weight
            d_weight = adaptive_generator_weight(reconstructions, rec_grad, gan_grad, last_layer, disc_weight)
            rec_grad = rec_grad + (d_weight * factor).to(gan_grad.dtype) * gan_grad
            terms["d_weight"] = d_weight
            loss = loss + d_weight * factor * g_loss.detach()
            terms["total"] = loss
        surrogate = (reconstructions * rec_grad).sum() + self.config.kl_weight * terms["kl_tensor"]
        for parameter, grad in zip(loose, nll_grads[1:]):
            surrogate = surrogate + (parameter * grad).sum()
        logs = {key: terms[key].detach().float().reshape(()) for key in GENERATOR_LOG_KEYS}
        logs["disc_factor"] = torch.tensor(float(factor))
        return surrogate, logs

    def _generator_terms(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        kl: torch.Tensor,
        factor: float,
        logvar: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The loss without its GAN term (``d_weight`` needs the gradients), its terms by log key (plus
        ``kl_tensor``, with its graph), the nll and the GAN loss (0 while ``factor`` is 0)."""
        logvar = self.logvar if logvar is None else logvar  # 0-dim
        batch_size = inputs.shape[0]
        difference = inputs - reconstructions
        l1 = difference.abs()  # (B, C, H, W)
        mse = difference.square()
        rec = l1 + mse
        if self.perceptual is not None:
            perceptual = self.perceptual(inputs.contiguous(), reconstructions.contiguous())  # (B, 1, 1, 1)
            rec = rec + self.config.perceptual_weight * perceptual
        else:
            perceptual = l1.new_zeros(())
        nll = rec / torch.exp(logvar) + logvar  # (B, C, H, W)
        nll_loss = nll.sum() / batch_size
        kl_loss = kl.to(nll_loss.device).sum() / batch_size

        g_loss = d_weight = nll_loss.new_zeros(())
        if factor > 0:
            logits = self._logits_without_discriminator_grad(reconstructions).float()  # (B, 1, h, w)
            g_loss = generator_gan_loss(logits, self.config.gan_loss)

        loss = nll_loss + self.config.kl_weight * kl_loss
        values = [loss, nll_loss, rec.mean(), l1.mean(), mse.mean(), perceptual.mean(), kl_loss, logvar]
        values += [d_weight, g_loss]
        terms = {key: value.detach() for key, value in zip(GENERATOR_LOG_KEYS, values)}
        terms["kl_tensor"] = kl_loss
        return loss, terms, nll_loss, g_loss

    def discriminator_objective(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        global_step: Union[int, torch.Tensor],
        discriminator: Optional[nn.Module] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The discriminator's objective on detached maps, and its logs; from ``disc_start`` on only.

        Args:
            inputs (`torch.Tensor` of shape `(B, C, H, W)`): real maps.
            reconstructions (`torch.Tensor` of shape `(B, C, H, W)`): the autoencoder's output (detached here).
            global_step (`int`): the optimisation step.
            discriminator (`nn.Module`, *optional*): the module to run, e.g. the accelerate-prepared (DDP)
                wrapper of ``self.discriminator``; defaults to ``self.discriminator``.

        Returns:
            The 0-dim loss and detached 0-dim tensors disc_loss, logits_real, logits_fake (means); no host transfer.

        Raises:
            ValueError: maps of different shapes, a step that is no non-negative integer, or a step before
                ``disc_start`` (``disc_factor(step) == 0``: the discriminator is off, skip its backward and step).
        """
        step = check_global_step(global_step)
        _check_maps(inputs, reconstructions, "discriminator_objective")
        factor = self.disc_factor(step)
        if factor == 0:
            raise ValueError(f"discriminator_objective at step {step}: the discriminator is off before disc_start.")
        discriminator = self.discriminator if discriminator is None else discriminator
        # Real and fake in two forwards, as the original: BatchNorm statistics stay those of one kind of map.
        logits_real = discriminator(inputs.detach()).float()  # (B, 1, h, w); fp32 under autocast too
        logits_fake = discriminator(reconstructions.detach()).float()
        d_loss = factor * discriminator_gan_loss(logits_real, logits_fake, self.config.gan_loss)
        values = [d_loss, logits_real.mean(), logits_fake.mean()]
        return d_loss, {key: value.detach().float() for key, value in zip(DISCRIMINATOR_LOG_KEYS, values)}

    def _logits_without_discriminator_grad(self, reconstructions: torch.Tensor) -> torch.Tensor:
        # The raw module with detached parameters: gradients reach the reconstructions but not the discriminator,
        # and a DDP wrapper around it is never entered (its forward would wait for a gradient reduction that
        # this objective's backward never performs).
        detached = {name: parameter.detach() for name, parameter in self.discriminator.named_parameters()}
        return torch.func.functional_call(self.discriminator, detached, (reconstructions,))


def _check_maps(inputs: torch.Tensor, reconstructions: torch.Tensor, method: str) -> None:
    if inputs.ndim != 4 or inputs.shape != reconstructions.shape:
        raise ValueError(
            f"{method} expects inputs and reconstructions of the same shape (B, C, H, W), got "
            f"{tuple(inputs.shape)} and {tuple(reconstructions.shape)}."
        )


def _posterior_kl(posterior, batch_size: int) -> torch.Tensor:
    """``posterior.kl()`` as a ``(B,)`` tensor (a deterministic posterior's KL is a single 0)."""
    if not callable(getattr(posterior, "kl", None)):
        raise ValueError(
            f"generator_objective expects a posterior with a kl() method (DiagonalGaussianDistribution, e.g. "
            f"vae.encode(x).latent_dist), got {type(posterior).__name__}."
        )
    kl = posterior.kl()
    deterministic = getattr(posterior, "deterministic", False)
    if kl.ndim != 1 or (kl.shape[0] != batch_size and not deterministic):
        raise ValueError(
            f"generator_objective: the posterior's kl() has shape {tuple(kl.shape)}, expected ({batch_size},) for a "
            f"batch of {batch_size} maps."
        )
    return kl

