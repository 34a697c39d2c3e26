"""Loading and validating ml_collections configs.

Validation runs when a config is loaded, so a bad value is reported by its dotted field name
before any model is built. Each model section is checked against its block of record below (the
complete set of fields, with the paper's defaults): an unknown field is an error, not silently
ignored. Field names of model blocks follow diffusers / transformers configs, so the
``config.json`` of a public model maps onto them one to one. configs/ composes these blocks.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Iterable

import ml_collections


class ConfigError(ValueError):
    """A config value that cannot work. The message names the field and the fix."""


def vae_block() -> ml_collections.ConfigDict:
    """Temporal KL-VAE; defaults are Stable Diffusion v1's AutoencoderKL (downsampling x8)."""
    c = ml_collections.ConfigDict()
    c.in_channels = 3
    c.out_channels = 3
    c.latent_channels = 4
    c.block_out_channels = (128, 256, 512, 512)
    c.layers_per_block = 2
    c.norm_num_groups = 32
    c.mid_block_add_attention = True
    c.scaling_factor = 0.18215
    # NUWA-XL's inflation: a temporal conv after every spatial conv, a temporal attention after
    # every spatial attention. False = the image VAE applied frame by frame.
    c.temporal = True
    c.temporal_kernel_size = 3
    c.temporal_attention_heads = 1
    return c


def mesh_block() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.shape = (-1, 1)  # -1: the remaining devices
    c.axes = ("data", "fsdp")
    return c


def check_fields(section: Any, allowed: Iterable[str], path: str) -> None:
    """Raises ConfigError for any field of ``section`` not in ``allowed``."""
    allowed = set(allowed)
    unknown = sorted(set(section.keys()) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {', '.join(f'{path}.{k}' for k in unknown)}; "
            f"known fields of {path}: {', '.join(sorted(allowed))}")


def _positive_int(value, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{field} must be a positive integer, got {value!r}")


def validate_vae(c: Any, path: str = "model.vae") -> None:
    check_fields(c, vae_block().keys(), path)
    for f in ("in_channels", "out_channels", "latent_channels", "layers_per_block",
              "norm_num_groups", "temporal_kernel_size", "temporal_attention_heads"):
        _positive_int(c[f], f"{path}.{f}")
    widths = tuple(c.block_out_channels)
    if not widths:
        raise ConfigError(f"{path}.block_out_channels must list at least one width")
    for i, w in enumerate(widths):
        _positive_int(w, f"{path}.block_out_channels[{i}]")
        if w % c.norm_num_groups:
            raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by "
                              f"{path}.norm_num_groups={c.norm_num_groups}")
        if w % c.temporal_attention_heads:
            raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by "
                              f"{path}.temporal_attention_heads={c.temporal_attention_heads}")
    if c.temporal_kernel_size % 2 == 0:
        raise ConfigError(f"{path}.temporal_kernel_size must be odd (a centred Dirac tap), "
                          f"got {c.temporal_kernel_size}")
    if not c.scaling_factor > 0:
        raise ConfigError(f"{path}.scaling_factor must be > 0, got {c.scaling_factor}")


def vae_downsampling(c: Any) -> int:
    return 2 ** (len(tuple(c.block_out_channels)) - 1)


def check_resolution(resolution, factor: int, path: str) -> None:
    h, w = resolution
    for name, v in (("height", h), ("width", w)):
        _positive_int(v, f"{path} {name}")
        if v % factor:
            raise ConfigError(f"{path}={tuple(resolution)}: {name} {v} is not divisible by the "
                              f"VAE downsampling factor {factor}; use a multiple of {factor}")


def load(spec: str) -> ml_collections.ConfigDict:
    """Loads ``path/to/config.py[:arg]`` by calling its ``get_config(arg)``, then validates it."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found")
    # Config files import their shared blocks as ``configs.common``: make the folder holding
    # ``configs/`` importable wherever the command runs from.
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if root not in sys.path:
        sys.path.insert(0, root)
    mod_spec = importlib.util.spec_from_file_location("_nuwa_config", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    validate(config)
    return config


def validate(config: Any) -> None:
    """Validates every section present in ``config`` (sections are added by later stages)."""
    model = config.get("model")
    if model is not None and model.get("vae") is not None:
        validate_vae(model.vae)
        if config.get("data") is not None and config.data.get("resolution") is not None:
            check_resolution(config.data.resolution, vae_downsampling(model.vae), "data.resolution")
    if config.get("mesh") is not None:
        check_fields(config.mesh, mesh_block().keys(), "mesh")
        if len(tuple(config.mesh.shape)) != len(tuple(config.mesh.axes)):
            raise ConfigError(f"mesh.shape {tuple(config.mesh.shape)} and mesh.axes "
                              f"{tuple(config.mesh.axes)} must have the same length")
