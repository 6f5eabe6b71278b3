"""One micro-batch of the two-phase VAE-GAN training step, through accelerate-prepared models and optimizers.

Per micro-batch: one autoencoder forward, :meth:`RadioVAELoss.generator_objective` (LPIPS and the discriminator's
input gradient computed once each, the adaptive weight from them), from ``disc_start`` on the discriminator's
objective on the detached reconstructions, and one backward of both. On the last micro-batch of an accumulation
window the optimizer step follows: the non-finite check (one host sync per optimizer step, none per micro-batch),
unscaling (fp16, ``accelerator.unscale_gradients``), clipping per group, both optimizers' steps, one scale update,
the schedulers.

The autoencoder, the discriminator and the loss's ``log_variance`` are all accelerate-prepared modules: DDP averages
every gradient, and ``accelerator.save_state`` checkpoints all three.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from ..losses.vae_gan import RadioVAELoss
from .gradients import clip_grad_norms, has_gradients, step_optimizers
from .nonfinite import NonFiniteGuard
from .seeding import step_generator


@dataclass
class StepOutput:
    """What one micro-batch produced.

    Attributes:
        logs: detached 0-dim tensors (generator terms, and the discriminator's from ``disc_start`` on).
        finite: 0-dim bool tensor, whether this micro-batch's loss was finite on this process.
        sync: whether this micro-batch ended an optimizer step.
        applied: whether that optimizer step changed the weights (False for a skipped non-finite step).
        grad_norms: per parameter group, the gradient norm before clipping (clipping on, finite steps only).
        adversarial: whether the discriminator ran (phase 2).
    """

    logs: Dict[str, torch.Tensor]
    finite: torch.Tensor
    sync: bool = False
    applied: bool = False
    grad_norms: Dict[str, torch.Tensor] = field(default_factory=dict)
    adversarial: bool = False


class VAEGANStep:
    """The VAE-GAN micro-step of ``examples/train_vae.py``.

    Args:
        accelerator (`accelerate.Accelerator`): the run's accelerator (gradient accumulation, DDP, fp16 scaler).
        vae (`torch.nn.Module`): the prepared autoencoder; the forward goes through it, so DDP averages gradients.
        discriminator (`torch.nn.Module`): the prepared discriminator (``loss_fn.discriminator`` underneath).
        loss_fn (`RadioVAELoss`): the objective; its ``logvar`` (if learned) is in ``optimizer_ae``.
        optimizer_ae, optimizer_disc: the prepared optimizers of the autoencoder (+ logvar) and discriminator.
        scheduler_ae, scheduler_disc: the prepared learning-rate schedulers.
        guard (`NonFiniteGuard`): decides whether an optimizer step with a non-finite loss is skipped.
        max_grad_norm (`float`, defaults to 0): clip each group (autoencoder, logvar, discriminator) to this norm;
            0 leaves the gradients alone (the report).
        seed (`int`, defaults to 0): seed of the posterior noise, drawn per (step, micro-batch, process).
        channels_last (`bool`, defaults to `False`): convert each micro-batch to channels-last once, for models
            already converted with ``.to(memory_format=torch.channels_last)`` (cuDNN then needs no NCHW <-> NHWC
            transposes around its convolutions). It pays only where GroupNorm keeps the layout
            (``models.normalization.group_norm_keeps_channels_last``; not CUDA in torch 2.11).
        log_variance (`torch.nn.Module`, *optional*): the prepared ``loss_fn.log_variance`` (needed with several
            processes and a learned ``logvar``, so that DDP averages its gradient); defaults to the unprepared one.

    The loss runs under ``accelerator.autocast()``: with bf16/fp16 mixed precision LPIPS and the discriminator's
    logits of the generator objective are computed in that precision like the autoencoder; the loss terms are
    summed in fp32.
    """

    def __init__(
        self,
        accelerator,
        vae: torch.nn.Module,
        discriminator: torch.nn.Module,
        loss_fn: RadioVAELoss,
        optimizer_ae,
        optimizer_disc,
        scheduler_ae,
        scheduler_disc,
        guard: NonFiniteGuard,
        max_grad_norm: float = 0.0,
        seed: int = 0,
        channels_last: bool = False,
        log_variance: Optional[torch.nn.Module] = None,
    ) -> None:
        if log_variance is None:
            log_variance = loss_fn.log_variance
            if accelerator.num_processes > 1 and loss_fn.logvar.requires_grad:
                raise ValueError(
                    "VAEGANStep with several processes and a learned logvar needs log_variance="
                    "accelerator.prepare(loss_fn.log_variance), or each process would train its own logvar"
                )
        self.accelerator = accelerator
        self.vae, self.discriminator, self.log_variance, self.loss_fn = vae, discriminator, log_variance, loss_fn
        self.optimizers = [optimizer_ae, optimizer_disc]
        self.schedulers = [scheduler_ae, scheduler_disc]
        self.guard = guard
        self.max_grad_norm = max_grad_norm
        self.seed = seed
        self.channels_last = channels_last
        self.raw_vae = accelerator.unwrap_model(vae)
        logvar = [parameter for parameter in log_variance.parameters() if parameter.requires_grad]  # [] if frozen
        self.parameter_groups: Dict[str, List[torch.nn.Parameter]] = {
            "autoencoder": list(self.raw_vae.parameters()),
            "logvar": logvar,
            "discriminator": list(accelerator.unwrap_model(discriminator).parameters()),
        }
        if not logvar:
            del self.parameter_groups["logvar"]
        self.micro_step = 0
        self._window_bad = torch.zeros((), device=accelerator.device)

    def __call__(self, maps: torch.Tensor, global_step: int) -> StepOutput:
        """Trains on one micro-batch ``maps`` `(B, C, H, W)` in [-1, 1] at optimizer step ``global_step``."""
        accelerator = self.accelerator
        adversarial = self.loss_fn.disc_factor(global_step) > 0
        if self.channels_last:
            maps = maps.contiguous(memory_format=torch.channels_last)  # (B, C, H, W), NHWC in memory
        with accelerator.accumulate(self.vae, self.discriminator, self.log_variance):
            noise = step_generator(maps.device, self.seed, global_step, self.micro_step, accelerator.process_index)
            # No value checks inside the forward (each a host sync): the collator checked the maps on the host.
            output = self.vae(maps, sample_posterior=True, generator=noise, return_posterior=True, check_values=False)
            with accelerator.autocast():
                objective, logs = self.loss_fn.generator_objective(
                    maps, output.sample, output.latent_dist, global_step, self.raw_vae.get_last_layer(),
                    log_variance=self.log_variance,
                )  # fmt: skip
                if adversarial:
                    # Detached reconstructions through the prepared discriminator; before disc_start it never runs.
                    disc_loss, disc_logs = self.loss_fn.discriminator_objective(
                        maps, output.sample, global_step, discriminator=self.discriminator
                    )
                    objective = objective + disc_loss
                    logs.update(disc_logs)
            finite = torch.isfinite(logs["total"]) & torch.isfinite(logs.get("disc_loss", logs["total"]))
            self._window_bad = self._window_bad + (~finite).float()
            # Every process runs the backward, finite or not, so DDP's reductions stay matched; a non-finite
            # window is discarded at the optimizer step below.
            accelerator.backward(objective)
            result = StepOutput(logs=logs, finite=finite, adversarial=adversarial)
            if accelerator.sync_gradients:
                result.sync = True
                result.applied, result.grad_norms = self._optimizer_step(global_step)
            for scheduler in self.schedulers:  # prepared schedulers advance only on optimizer-step boundaries
                scheduler.step()
        self.micro_step = 0 if result.sync else self.micro_step + 1
        return result

    def _optimizer_step(self, global_step: int):
        accelerator = self.accelerator
        bad = self._window_bad
        self._window_bad = torch.zeros((), device=accelerator.device)
        if accelerator.num_processes > 1:
            bad = accelerator.reduce(bad, reduction="sum")
        finite = bool(bad.item() == 0)  # the one host sync of the optimizer step (a second with clipping)
        norms: Dict[str, torch.Tensor] = {}
        active = [optimizer for optimizer in self.optimizers if has_gradients(optimizer)]
        if finite:
            accelerator.unscale_gradients(active)  # fp16: once per optimizer, before clipping; else nothing
            if self.max_grad_norm > 0:
                norms = {
                    name: norm
                    for name, norm in clip_grad_norms(accelerator, self.parameter_groups, self.max_grad_norm).items()
                    if norm is not None
                }
                if getattr(accelerator, "scaler", None) is None:  # fp16 overflow is the GradScaler's business
                    finite = bool(torch.isfinite(torch.stack(list(norms.values()))).all())
        applied = self.guard.record(finite, global_step)
        if applied:
            step_optimizers(accelerator, self.optimizers)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        return applied, norms
