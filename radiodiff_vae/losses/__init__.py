"""Training objectives: the VAE-GAN loss, its adversarial terms and the perceptual (LPIPS) term."""
