"""Shared config blocks and their variants. The blocks of record (every allowed field, with the
paper's defaults) live in nuwa_xl_jax/configuration.py; this file picks variants of them."""
import ml_collections

from nuwa_xl_jax import configuration


def vae(variant: str = "sd") -> ml_collections.ConfigDict:
    """Temporal KL-VAE: ``sd`` (Stable Diffusion v1, x8) or ``tiny`` (tests and CPU, x4)."""
    c = configuration.vae_block()
    if variant == "tiny":
        c.block_out_channels = (16, 32, 32)
        c.layers_per_block = 1
        c.norm_num_groups = 8
    elif variant != "sd":
        raise ValueError(f"unknown vae variant {variant!r}; expected 'sd' or 'tiny'")
    return c


def vae_loss() -> ml_collections.ConfigDict:
    """The T-KLVAE loss (LDM's LPIPSWithDiscriminator, see docs/PAPERS.md)."""
    c = ml_collections.ConfigDict()
    c.l1_weight = 1.0
    c.kl_weight = 1e-6
    c.lpips_weight = 1.0
    c.lpips_path = ""  # a local file of LPIPS weights; "" disables the term (nothing is downloaded)
    c.disc_weight = 0.5
    c.disc_start = 50001
    c.disc_num_layers = 3
    c.disc_channels = 64
    return c


def mesh() -> ml_collections.ConfigDict:
    return configuration.mesh_block()
