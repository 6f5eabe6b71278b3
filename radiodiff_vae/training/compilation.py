"""torch.compile of the training step's networks, in place."""

from typing import Any

from ..losses.vae_gan import RadioVAELoss
from ..models.autoencoder_radio import RadioVAE


def compile_for_training(vae: RadioVAE, loss_fn: RadioVAELoss, **compile_options: Any) -> None:
    """Compiles the autoencoder's levels, the LPIPS trunk and the discriminator's layers in place
    (``nn.Module.compile``; ``compile_options`` go to ``torch.compile``), which fuses GroupNorm + SiLU and the
    element-wise work between convolutions. The decoder's output conv stays eager, so that the adaptive weight's
    pull-back to it (``vae.get_last_layer()``) remains one convolution. Call it before ``accelerator.prepare``."""
    blocks = [vae.encoder, vae.decoder.conv_in, vae.decoder.mid_block, *vae.decoder.up_blocks]
    if loss_fn.perceptual is not None:
        blocks.append(loss_fn.perceptual.lpips.net)
    blocks.append(loss_fn.discriminator.main)
    for block in blocks:
        block.compile(**compile_options)
