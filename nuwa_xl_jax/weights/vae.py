"""Import of a diffusers-format AutoencoderKL (Stable Diffusion's VAE) into the T-KLVAE.

Reads ``config.json`` and ``*.safetensors`` with numpy (torch is never imported), maps the config
onto our ``model.vae`` block, renames every tensor to its Flax path and changes its layout, and adds
NUWA-XL's temporal layers at their identity initialisation. Both diffusers attention namings are
accepted: today's ``to_q / to_k / to_v / to_out.0`` and the legacy ``query / key / value /
proj_attn`` of older checkpoints.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.configuration import VAEConfig
from nuwa_xl_jax.models.tklvae import TKLVAE, is_temporal_param
from nuwa_xl_jax.weights.common import (
    WeightsError,
    assemble,
    flatten,
    read_json,
    read_safetensors,
    torch_to_flax_leaf,
)

# diffusers config.json fields copied one to one into our vae block.
_COPIED = ("in_channels", "out_channels", "latent_channels", "block_out_channels",
           "layers_per_block", "norm_num_groups", "mid_block_add_attention", "scaling_factor")
# Fields that do not change the network (bookkeeping, sizes, precision hints).
_IGNORED = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values",
            "sample_size", "force_upcast")
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out_0"}


def vae_config_from_diffusers(src: Mapping[str, Any], temporal: bool = True
                              ) -> VAEConfig:
    """diffusers AutoencoderKL ``config.json`` -> our typed ``model.vae`` block.

    Values our architecture cannot represent (other block types or activations, no quant convs,
    latent shift/normalisation statistics) are refused rather than silently dropped.
    """
    problems = []
    for field, allowed in (("act_fn", {"silu"}), ("use_quant_conv", {True}),
                           ("use_post_quant_conv", {True})):
        if field in src and src[field] not in allowed:
            problems.append(f"{field}={src[field]!r} (supported: {sorted(allowed, key=str)})")
    for field, block in (("down_block_types", "DownEncoderBlock2D"),
                         ("up_block_types", "UpDecoderBlock2D")):
        types = list(src.get(field, [block] * len(src.get("block_out_channels", []))))
        if any(t != block for t in types) or len(types) != len(src.get("block_out_channels", [])):
            problems.append(f"{field}={types!r} (supported: one {block!r} per block_out_channels)")
    for field in ("shift_factor", "latents_mean", "latents_std"):
        if src.get(field) not in (None, 0, 0.0):
            problems.append(f"{field}={src[field]!r} (supported: null)")
    known = set(_COPIED) | set(_IGNORED) | {"act_fn", "use_quant_conv", "use_post_quant_conv",
                                            "down_block_types", "up_block_types", "shift_factor",
                                            "latents_mean", "latents_std"}
    unknown = sorted(set(src) - known)
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}")
    missing = [f for f in ("block_out_channels",) if f not in src]
    if missing:
        problems.append(f"missing field(s) {', '.join(missing)}")
    if problems:
        raise WeightsError("config.json is not a T-KLVAE-compatible AutoencoderKL: "
                           + "; ".join(problems))
    fields = {f: src[f] for f in _COPIED if f in src}
    return VAEConfig.from_dict(dict(fields, temporal=bool(temporal)), path="config.json")


def flax_path(torch_key: str) -> tuple[str, str]:
    """``encoder.down_blocks.0.resnets.1.conv1.weight`` ->
    (``encoder/down_blocks_0/resnets_1/conv1``,
    ``weight``): numeric indices join their list's name, legacy attention names are renamed."""
    *modules, leaf = torch_key.split(".")
    parts: list[str] = []
    for name in modules:
        if name.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{name}"
        else:
            parts.append(name)
    if len(parts) >= 2 and parts[-2].startswith("attentions_"):
        parts[-1] = _LEGACY_ATTENTION.get(parts[-1], parts[-1])
    return "/".join(parts), leaf


def convert_state_dict(tensors: Mapping[str, np.ndarray], expected: Mapping[str, Any]
                       ) -> dict[str, np.ndarray]:
    """Torch-named tensors -> flat Flax paths with Flax layouts (``kernel`` HWIO / [in, out])."""
    out: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        module_path, _ = flax_path(key)
        weight_path = f"{module_path}/kernel"
        ndim = len(expected[weight_path].shape) if weight_path in expected else None
        try:
            leaf, array = torch_to_flax_leaf(key, np.asarray(value), expected_ndim=ndim)
        except WeightsError as e:
            raise WeightsError(f"{key}: {e}") from e
        path = f"{module_path}/{leaf}"
        if path in out:
            raise WeightsError(f"two source tensors map to {path} (one of them is {key}); the "
                               "file mixes new and legacy attention names")
        out[path] = array
    return out


def identity_temporal_params(module: TKLVAE, seed: int = 0) -> dict[str, np.ndarray]:
    """Freshly initialised temporal parameters only (Dirac convs, zero out-projections).

    Jitting an init that returns only these lets XLA drop the spatial parameters, so this stays
    cheap for SD-sized models. Returns fresh copies of a per-(module, seed) cached result.
    """
    return {k: v.copy() for k, v in _identity_temporal_params(module, seed).items()}


@functools.lru_cache(maxsize=4)
def _identity_temporal_params(module: TKLVAE, seed: int) -> dict[str, np.ndarray]:
    f = module.downsampling_factor()
    dummy = jnp.zeros((1, 1, f, f, module.in_channels), jnp.float32)

    def init_temporal(key):
        params = flatten(nn.meta.unbox(module.init(key, dummy)["params"]))
        return {k: v for k, v in params.items() if is_temporal_param(k)}

    return jax.tree.map(np.asarray, jax.jit(init_temporal)(jax.random.key(seed)))


def expected_shapes(module: TKLVAE) -> dict[str, Any]:
    """Flat Flax path -> ShapeDtypeStruct of every parameter of ``module``."""
    f = module.downsampling_factor()
    dummy = jax.ShapeDtypeStruct((1, 1, f, f, module.in_channels), jnp.float32)
    abstract = jax.eval_shape(module.init, jax.random.key(0), dummy)
    return flatten(nn.meta.unbox(abstract["params"]))


def load_diffusers_vae(path: str, temporal: bool = True, dtype: Any = jnp.float32,
                       seed: int = 0) -> tuple[TKLVAE, dict]:
    """Reads a diffusers AutoencoderKL folder -> ``(TKLVAE module, {"params": ...})``.

    ``temporal=True`` adds NUWA-XL's temporal layers at identity (the result equals the image VAE
    frame by frame); ``False`` gives the plain image VAE. ``dtype`` is the compute dtype; params
    stay fp32. Missing, unexpected and mis-shaped tensors raise one WeightsError listing them.
    """
    cfg = vae_config_from_diffusers(read_json(path), temporal=temporal)
    module = TKLVAE.from_config(cfg, dtype=dtype)
    expected = expected_shapes(module)
    provided = convert_state_dict(read_safetensors(path), expected)
    init = identity_temporal_params(module, seed) if temporal else {}
    params = assemble(expected, provided, init=init, new_layer=is_temporal_param,
                      source=f"{path} (diffusers AutoencoderKL)")
    return module, {"params": jax.tree.map(jnp.asarray, params)}
