"""Loading and validating ml_collections configs.

Config files and ``--config.a.b=v`` overrides are ml_collections ConfigDicts; :func:`validate`
turns one into the typed, frozen :class:`~nuwa_xl_jax.configuration.config.Config` the library
reads (``config.model`` a :class:`ModelConfig`, ``config.data`` a :class:`DataConfig`,
``config.diffusion`` a :class:`DiffusionConfig`, ``config.train`` a :class:`TrainConfig`, ...),
checking every field once and naming the dotted field of a bad value. The ConfigDict blocks
below are those classes' fields and defaults (the paper's), so an unknown field is an error, not
silently ignored. Field names of model blocks follow diffusers / transformers configs, so the
``config.json`` of a public model maps onto them one to one. configs/ composes these blocks
(through :mod:`~nuwa_xl_jax.configuration.presets`); :mod:`~nuwa_xl_jax.configuration.files` finds
and
reads config files.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from nuwa_xl_jax.configuration import files
from nuwa_xl_jax.configuration.artv import ARTVConfig
from nuwa_xl_jax.configuration.block import positive_int
from nuwa_xl_jax.configuration.checks import ConfigError, check_fields
from nuwa_xl_jax.configuration.config import (
    STAGE_NAMES,
    TOP_LEVEL,
    Config,
    check_resolution,
    train_block_name,
)
from nuwa_xl_jax.configuration.data import DataConfig, data_block
from nuwa_xl_jax.configuration.diffusion import DiffusionConfig
from nuwa_xl_jax.configuration.generate import GenerateConfig
from nuwa_xl_jax.configuration.mesh import MeshConfig
from nuwa_xl_jax.configuration.model import ModelConfig, MTDConfig, TextConfig, VAEConfig
from nuwa_xl_jax.configuration.train import TrainConfig, train_block
from nuwa_xl_jax.configuration.vae_loss import VAELossConfig

# the package's public names: the typed blocks and the helpers config files and the library use
__all__ = [
    "ARTVConfig", "Config", "ConfigError", "DataConfig", "DiffusionConfig", "GenerateConfig",
    "MTDConfig", "MeshConfig", "ModelConfig", "STAGE_NAMES", "TOP_LEVEL", "TextConfig",
    "TrainConfig", "VAEConfig", "VAELossConfig", "artv_block", "check_fields", "check_resolution",
    "data_block", "diffusion_block", "files", "generate_block", "load", "mesh_block",
    "model_config", "mtd_block", "positive_int", "text_block", "text_trainable", "train_block",
    "train_block_name", "vae_block", "vae_loss_block", "validate",
]

def _block(cls) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(cls().to_dict())


def vae_block() -> ml_collections.ConfigDict:
    """The ``model.vae`` block of a config file: :class:`VAEConfig`'s fields and defaults."""
    return _block(VAEConfig)


def mtd_block() -> ml_collections.ConfigDict:
    """The ``model.mtd`` block of a config file: :class:`MTDConfig`'s fields and defaults."""
    return _block(MTDConfig)


def text_block() -> ml_collections.ConfigDict:
    """The ``model.text`` block of a config file: :class:`TextConfig`'s fields and defaults."""
    return _block(TextConfig)


def mesh_block() -> ml_collections.ConfigDict:
    """The ``mesh`` block: :class:`MeshConfig`'s fields and defaults (data parallel)."""
    return _block(MeshConfig)


def diffusion_block() -> ml_collections.ConfigDict:
    """The ``diffusion`` block: :class:`DiffusionConfig`'s fields and defaults."""
    return _block(DiffusionConfig)


def artv_block() -> ml_collections.ConfigDict:
    """The ``artv`` block: :class:`ARTVConfig`'s fields and defaults."""
    return _block(ARTVConfig)


def generate_block() -> ml_collections.ConfigDict:
    """The ``generate`` block: :class:`GenerateConfig`'s fields and defaults."""
    return _block(GenerateConfig)


def vae_loss_block() -> ml_collections.ConfigDict:
    """The ``vae_loss`` block: :class:`VAELossConfig`'s fields and defaults."""
    return _block(VAELossConfig)


def text_trainable(c: Any, path: str = "model.text") -> bool:
    """Whether the text encoder of a ``model.text`` block (a ConfigDict, dict or
    :class:`TextConfig`) trains with the MTD: :attr:`TextConfig.trains`. Blocks written before
    ``trainable`` existed mean 'auto'."""
    return TextConfig.from_dict(c, path).trains


def model_config(config: Any) -> ModelConfig:
    """The typed ``model`` section of a config (a :class:`Config`, a ConfigDict after overrides,
    or a family's stored ``config.json``)."""
    return ModelConfig.from_dict(config.model)


def validate(config: Any) -> Config:
    """The typed :class:`Config` of ``config`` (a ConfigDict after overrides, a dict, or a
    :class:`Config`, returned as it is): every section present checked once, a bad value one
    ConfigError naming its dotted field."""
    return Config.from_dict(config)


def load(spec: str) -> ml_collections.ConfigDict:
    """Reads ``path/to/config.py[:arg]`` (or a shipped ``configs/NAME.py``: see
    :mod:`~nuwa_xl_jax.configuration.files`) by calling its ``get_config(arg)``, and validates it.
    Returns the ConfigDict (callers may still change fields, then :func:`validate` it)."""
    config = files.read(spec)
    validate(config)
    return config
