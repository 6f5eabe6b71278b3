"""Networks: the RadioVAE autoencoder and the PatchGAN discriminator."""
