"""The runtime of a model family: its frozen VAE, MTD UNet, text encoder, tokenizer and noise
schedule, built from a config (and the workdir's VAE export), with the calls training and
generation make: ``decode``, ``encode_prompts``, ``condition``, ``unet``, ``denoise``.

It holds no MTD / text weights: every call takes ``params = {"mtd": ..., "text": ...}``, so one
runtime serves every level's model of a family (dod/level_models.py's ``Denoiser``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from nuwa_xl_jax import configuration
from nuwa_xl_jax.diffusion import schedules
from nuwa_xl_jax.family import store
from nuwa_xl_jax.models.mtd import MTDUNet
from nuwa_xl_jax.models.text import CLIPTextModel
from nuwa_xl_jax.models.tklvae import TKLVAE
from nuwa_xl_jax.models.tokenizers import make_tokenizer
from nuwa_xl_jax.vocabulary import VOCABULARY


def tokenizer(config: configuration.Config):
    """The family's tokenizer, built from its config alone (no weights): prompts can be checked
    against it before anything is loaded."""
    vocabulary = VOCABULARY if config.data.dataset == "synthetic_cartoon" else None
    tok = make_tokenizer(config.model.text, vocabulary)
    if hasattr(tok, "max_length"):
        tok.max_length = config.data.max_length
    return tok


class MTDModels:
    """The frozen VAE, the MTD UNet, the text encoder, the tokenizer and the schedule of a
    config."""

    def __init__(self, config, workdir: str | None, vae_params: Any = None):
        # a Config as it is (validated once where it was loaded); a ConfigDict is checked here
        self.config = config = configuration.Config.from_dict(config)
        self.model = model = config.model
        vae_cfg = model.vae
        if vae_params is None:  # the EMA weights the vae stage exported, and its latent scale
            vae_params, scale = store.read_vae(workdir, config)
            vae_cfg = dataclasses.replace(vae_cfg, scaling_factor=scale)
        self.vae = TKLVAE.from_config(vae_cfg)
        self.vae_params = vae_params
        self.mtd = MTDUNet.from_config(model.mtd)
        # The text encoder computes in the MTD's compute dtype (its params stay float32), like
        # the UNet that reads its states.
        self.text = CLIPTextModel.from_config(model.text, jnp.dtype(model.mtd.dtype))
        self.tokenizer = tokenizer(config)
        self.null_ids = jnp.asarray(self.tokenizer([""]))[0]  # [T]
        self.schedule = schedules.from_config(config.diffusion)
        self.scale = vae_cfg.scaling_factor
        f = model.vae.downsampling_factor
        h, w = tuple(config.data.resolution)
        self.latent_shape = (h // f, w // f, model.vae.latent_channels)

    def init(self, key, frames: int):
        k1, k2 = jax.random.split(key)
        T = self.null_ids.shape[0]
        ids = jnp.zeros((1, T), jnp.int32)
        text_vars = self.text.init(k2, ids)
        D = self.model.text.hidden_size
        x = jnp.zeros((1, frames, *self.latent_shape))
        kw = {"level": jnp.zeros((1,), jnp.int32)} if self.model.mtd.num_levels else {}
        mtd_vars = self.mtd.init(k1, x, jnp.zeros((1,), jnp.int32), jnp.zeros((1, frames, T, D)),
                                 x, jnp.zeros((1, frames)), **kw)
        return {"mtd": mtd_vars, "text": text_vars}

    def decode(self, latents):
        return self.vae.apply(self.vae_params, latents / self.scale, method="decode")

    def text_states(self, text_params, ids):
        """``[..., T]`` ids -> ``[..., T, D]`` states."""
        lead = ids.shape[:-1]
        states = self.text.apply(text_params, ids.reshape(-1, ids.shape[-1]))
        return states.reshape(*lead, *states.shape[-2:])

    # A sampler keeps prompts and given frames fixed over all its steps: it encodes them once
    # (encode_prompts, condition) and runs only `unet` per step (dod/segments.py).
    def encode_prompts(self, params, ids):
        """``[..., T]`` ids -> ``[..., T, D]`` prompt states (the text encoder)."""
        return self.text_states(params["text"], ids)

    def condition(self, params, cond, mask):
        """Condition / mask features of the given frames (MTDUNet.condition)."""
        return self.mtd.apply(params["mtd"], cond, mask, method="condition")

    def unet(self, params, x, t, states, features, level=None):
        """The MTD UNet on prompt states and condition features: all one sampler step runs."""
        kw = {"level": level} if self.model.mtd.num_levels else {}
        return self.mtd.apply(params["mtd"], x, t, states, features=features, **kw)

    def denoise(self, params, x, t, ids, cond, mask, level=None):
        return self.unet(params, x, t, self.encode_prompts(params, ids),
                         self.condition(params, cond, mask), level)
