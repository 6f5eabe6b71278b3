"""Networks: the RadioVAE autoencoder, the PatchGAN discriminator and the city encoder of the construction stage."""
