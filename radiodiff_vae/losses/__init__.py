"""Training objectives: the VAE-GAN loss, its adversarial terms and the perceptual (LPIPS) term."""

from .adversarial import (
    adaptive_generator_weight,
    discriminator_factor,
    discriminator_gan_loss,
    generator_gan_loss,
    hinge_discriminator_loss,
    vanilla_discriminator_loss,
)
from .perceptual import PerceptualLoss, ensure_vgg16_trunk, load_lpips_vgg16, vgg16_trunk_path
from .vae_gan import LogVariance, RadioVAELoss

__all__ = [
    "LogVariance",
    "PerceptualLoss",
    "RadioVAELoss",
    "adaptive_generator_weight",
    "discriminator_factor",
    "discriminator_gan_loss",
    "ensure_vgg16_trunk",
    "generator_gan_loss",
    "hinge_discriminator_loss",
    "load_lpips_vgg16",
    "vanilla_discriminator_loss",
    "vgg16_trunk_path",
]
