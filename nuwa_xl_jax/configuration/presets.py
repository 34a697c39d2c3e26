"""Sized variants of the config blocks, and the pieces every config file assembles.

The blocks of record (every allowed field, with the paper's defaults) are in
the typed blocks of ``nuwa_xl_jax.configuration`` (``data.py``, ``train.py``, ``model.py``, ...);
this module picks
variants of them (``vae("tiny")``, ``mtd("small")``, ...). Config files import it from the library,
never from each other, so a config file copied anywhere still loads.
"""
import ml_collections

from nuwa_xl_jax import configuration
from nuwa_xl_jax.configuration.data import data_block
from nuwa_xl_jax.configuration.train import train_block


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


def mtd(variant: str = "sd") -> ml_collections.ConfigDict:
    """MTD UNet: ``sd`` (Stable Diffusion v1's layout), ``small`` (CPU demo) or ``tiny`` (tests)."""
    c = configuration.mtd_block()
    if variant in ("small", "tiny"):
        c.block_out_channels = (32, 64) if variant == "tiny" else (64, 128)
        c.layers_per_block = 1
        c.down_block_types = ("CrossAttnDownBlock2D", "DownBlock2D")
        c.up_block_types = ("UpBlock2D", "CrossAttnUpBlock2D")
        c.attention_head_dim = 4
        c.cross_attention_dim = 32 if variant == "tiny" else 64
        c.norm_num_groups = 8 if variant == "tiny" else 16
    elif variant != "sd":
        raise ValueError(f"unknown mtd variant {variant!r}; expected 'sd', 'small' or 'tiny'")
    return c


def text(variant: str = "clip-l") -> ml_collections.ConfigDict:
    """Text encoder: ``clip-l`` (CLIP ViT-L/14, SD v1) or ``small`` / ``tiny`` (word tokenizer)."""
    c = configuration.text_block()
    if variant in ("small", "tiny"):
        c.vocab_size = 64  # the synthetic world's words + specials fit
        c.hidden_size = 32 if variant == "tiny" else 64
        c.intermediate_size = 4 * c.hidden_size
        c.num_hidden_layers = 1 if variant == "tiny" else 2
        c.num_attention_heads = 2 if variant == "tiny" else 4
        c.max_position_embeddings = 16
        c.hidden_act = "gelu"
        c.tokenizer = "word"
    elif variant != "clip-l":
        raise ValueError(f"unknown text variant {variant!r}; expected 'clip-l', 'small' or 'tiny'")
    return c


def vae_loss() -> ml_collections.ConfigDict:
    """The T-KLVAE loss (LDM's LPIPSWithDiscriminator, see docs/PAPERS.md): VAELossConfig's
    fields and defaults."""
    return configuration.vae_loss_block()


def data(**overrides) -> ml_collections.ConfigDict:
    """The data block of record with ``overrides`` applied."""
    c = data_block()
    c.update(overrides)
    return c


def train(**overrides) -> ml_collections.ConfigDict:
    """A training block of record with ``overrides`` applied."""
    c = train_block()
    c.update(overrides)
    return c


def mesh() -> ml_collections.ConfigDict:
    """The mesh block of record (data parallel over all devices)."""
    return configuration.mesh_block()


def stages(depth: int, image_vae: bool = False) -> tuple:
    """The stages of a whole model family, in order: the VAE (after an image VAE trained from
    scratch, when there is no pretrained one), the global MTD, one MTD per depth."""
    return (("vae_image",) if image_vae else ()) + ("vae", "mtd_global") + tuple(
        f"mtd_local{d}" for d in range(1, depth))
