"""Import a diffusers UNet2DConditionModel (Stable Diffusion's layout) into the MTD UNet.

The folder's ``config.json`` fixes the spatial architecture; the NUWA-XL switches (temporal layers,
condition injection, level embedding, dtype, remat) come from keyword options. Tensors are read
with safetensors' numpy API (torch is never imported). Every spatial parameter must come from the
file; the layers NUWA-XL adds (temporal convs and attentions, condition cascades and injections,
level embedding) keep their identity initialisation, so the loaded MTD equals the image UNet frame
by frame. Missing, unexpected or mis-shaped tensors are reported together as one WeightsError.
"""
from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from nuwa_xl_jax.configuration import ConfigError, MTDConfig
from nuwa_xl_jax.models.mtd import MTDUNet
from nuwa_xl_jax.weights.common import (
    WeightsError,
    assemble,
    flatten,
    read_json,
    read_safetensors,
    torch_to_flax_leaf,
)

# config.json fields copied onto the mtd block one to one.
_COPIED = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "attention_head_dim",
    "cross_attention_dim",
    "use_linear_projection",
    "norm_num_groups",
    "norm_eps",
    "flip_sin_to_cos",
    "freq_shift",
)

# config.json fields the MTD does not implement: each must hold its SD v1 value (or be absent).
_REQUIRED = {
    "mid_block_type": ("UNetMidBlock2DCrossAttn", None),
    "num_attention_heads": (None,),
    "center_input_sample": (False,),
    "downsample_padding": (1,),
    "mid_block_scale_factor": (1, 1.0),
    "act_fn": ("silu",),
    "transformer_layers_per_block": (1,),
    "reverse_transformer_layers_per_block": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "dual_cross_attention": (False,),
    "only_cross_attention": (False,),
    "mid_block_only_cross_attention": (None, False),
    "class_embed_type": (None,),
    "addition_embed_type": (None,),
    "num_class_embeds": (None,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1, 1.0),
    "time_embedding_type": ("positional",),
    "time_embedding_dim": (None,),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "attention_type": ("default",),
    "class_embeddings_concat": (False,),
    "cross_attention_norm": (None,),
}

_NUWA_OPTIONS = ("temporal", "temporal_kernel_size", "condition_injection", "condition_symmetric",
                 "num_levels", "dtype", "remat", "attention")


def mtd_config_from_diffusers(unet_config: dict[str, Any], **nuwa_options) -> MTDConfig:
    """The typed ``model.mtd`` block for a diffusers UNet2DConditionModel ``config.json``."""
    unsupported = [f"{k}={unet_config[k]!r} (supported: {', '.join(map(repr, ok))})"
                   for k, ok in _REQUIRED.items() if k in unet_config and unet_config[k] not in ok]
    if isinstance(unet_config.get("layers_per_block"), (list, tuple)):
        unsupported.append(f"layers_per_block={unet_config['layers_per_block']!r} (one int)")
    if isinstance(unet_config.get("cross_attention_dim"), (list, tuple)):
        unsupported.append(f"cross_attention_dim={unet_config['cross_attention_dim']!r} (one int)")
    if unsupported:
        raise WeightsError("the UNet config.json uses features the MTD UNet does not implement: "
                           + "; ".join(unsupported))
    unknown = sorted(set(nuwa_options) - set(_NUWA_OPTIONS))
    if unknown:
        raise WeightsError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(_NUWA_OPTIONS)}"
        )
    fields = {k: unet_config[k] for k in _COPIED if k in unet_config}
    try:
        return MTDConfig.from_dict(dict(fields, **nuwa_options))
    except ConfigError as e:
        raise WeightsError(f"the UNet config.json does not give a valid MTD UNet: {e}") from e


def diffusers_key_to_flax(key: str) -> str:
    """``down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0`` ->
    ``down_blocks_0/attentions_1/transformer_blocks_0/attn1/to_out_0`` (the leaf name excluded)."""
    module = key.rsplit(".", 1)[0]
    return re.sub(r"\.(\d+)(?=\.|$)", r"_\1", module).replace(".", "/")


def is_new_layer(path: str) -> bool:
    """Layers NUWA-XL adds to the image UNet (absent from a diffusers checkpoint)."""
    parts = path.split("/")
    return (parts[0] in ("cond_encoder", "mask_encoder", "level_embedding")
            or any(p.endswith("_temporal") or p.startswith("injections_") for p in parts))


def _example_inputs(c) -> tuple:
    side = 2 ** (len(tuple(c.block_out_channels)) - 1)
    x = jnp.zeros((1, 1, side, side, c.in_channels), jnp.float32)
    text = jnp.zeros((1, 1, 1, c.cross_attention_dim), jnp.float32)
    level = jnp.zeros((1,), jnp.int32) if c.num_levels > 0 else None
    return x, jnp.zeros((1,), jnp.float32), text, x, jnp.zeros((1, 1), jnp.float32), level


def load_diffusers_unet(path: str, rng: jax.Array | None = None, **nuwa_options):
    """Reads a diffusers UNet2DConditionModel folder; returns ``(MTDUNet, {"params": ...})``.

    ``nuwa_options`` set the NUWA-XL fields of ``model.mtd`` (temporal, temporal_kernel_size,
    condition_injection, condition_symmetric, num_levels, dtype, remat). ``rng`` seeds the random
    parts of the new layers (temporal attention projections, condition cascades), which start
    inert: their outputs pass through zero-initialised projections.
    """
    cfg = mtd_config_from_diffusers(read_json(path), **nuwa_options)
    module = MTDUNet.from_config(cfg)
    inputs = _example_inputs(cfg)
    rng = jax.random.key(0) if rng is None else rng
    expected = {
        k: v.shape
        for k, v in flatten(
            nn.meta.unbox(jax.eval_shape(module.init, rng, *inputs))["params"]
        ).items()
    }

    provided, bad = {}, []
    for key, tensor in read_safetensors(path).items():
        module_path = diffusers_key_to_flax(key)
        leaf_guess = "kernel" if key.endswith(".weight") else key.rsplit(".", 1)[-1]
        # A 1-D weight is a norm scale; the rest are kernels whose Flax rank decides conv vs linear.
        ndim = None
        for leaf in (leaf_guess, "scale"):
            if f"{module_path}/{leaf}" in expected:
                ndim = len(expected[f"{module_path}/{leaf}"])
                break
        try:
            leaf, value = torch_to_flax_leaf(key, np.asarray(tensor), ndim)
        except WeightsError as e:
            bad.append(str(e))
            continue
        provided[f"{module_path}/{leaf}"] = value
    if bad:
        raise WeightsError("cannot convert tensors: " + "; ".join(bad))
    # Check the file against the model first (placeholders for the new layers cost no memory), so
    # bad weights fail before the init is compiled.
    new_paths = [p for p in expected if is_new_layer(p)]
    placeholders = {p: np.broadcast_to(np.float32(0), expected[p]) for p in new_paths}
    params = flatten(assemble(expected, provided, init=placeholders, new_layer=is_new_layer,
                              source=f"diffusers UNet at {path!r}"))
    if new_paths:  # the identity initialisation of the layers NUWA-XL adds
        init = flatten(nn.meta.unbox(jax.jit(module.init)(rng, *inputs))["params"])
        params.update({p: init[p] for p in new_paths})
    params = traverse_util.unflatten_dict(
        {tuple(k.split("/")): jnp.asarray(v) for k, v in params.items()}
    )
    return module, {"params": params}
