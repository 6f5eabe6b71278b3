"""Weights in and out of other layouts: original RadioDiff (CompVis latent-diffusion) checkpoints, and
``diffusers.AutoencoderKL`` for the ``radiodiff-ldm-f4`` preset."""
