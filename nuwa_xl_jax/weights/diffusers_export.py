"""Our spatial VAE / UNet as diffusers folders: the inverse of nuwa_xl_jax/weights/vae.py and
unet.py (``python -m nuwa_xl_jax.export --format=diffusers``, through
nuwa_xl_jax/family/diffusers.py).

The layers NUWA-XL adds (temporal convs and attentions, condition cascades and injections, the
level embedding) have no place in an AutoencoderKL / UNet2DConditionModel and are left out: the
result is the image model that the family's T-KLVAE / MTD equal frame by frame at identity. Each
folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors`` (written with numpy; torch
is not needed), as ``save_pretrained`` writes them, so ``from_pretrained`` and ``convert`` read it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Callable, Mapping

import numpy as np
from safetensors.numpy import save_file

from nuwa_xl_jax.weights.common import WeightsError, flatten
from nuwa_xl_jax.weights.unet import _COPIED as UNET_FIELDS
from nuwa_xl_jax.weights.vae import _COPIED as VAE_FIELDS

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
_KEEP_UNDERSCORE = re.compile(r"^linear_\d+$")  # diffusers' own names (time_embedding.linear_1)


def torch_key(flax_path: str) -> str:
    """``down_blocks_0/attentions_1/to_out_0/kernel`` ->
    ``down_blocks.0.attentions.1.to_out.0.weight``."""
    *modules, leaf = flax_path.split("/")
    parts = []
    for m in modules:
        match = re.match(r"^(.*)_(\d+)$", m)
        parts.append(m if match is None or _KEEP_UNDERSCORE.match(m)
                     else f"{match.group(1)}.{match.group(2)}")
    name = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    return ".".join(parts + [name])


def torch_layout(flax_path: str, value: np.ndarray) -> np.ndarray:
    """Flax conv ``[kh, kw, in, out]`` -> torch ``[out, in, kh, kw]``; dense ``[in, out]`` ->
    ``[out, in]``."""
    if flax_path.endswith("/kernel"):
        if value.ndim == 4:
            return np.transpose(value, (3, 2, 0, 1))
        if value.ndim == 2:
            return value.T
        raise WeightsError(f"{flax_path}: unsupported kernel shape {value.shape}")
    return value


def state_dict(variables: Mapping, added: Callable[[str], bool]) -> dict[str, np.ndarray]:
    """``{"params": ...}`` -> torch-named float32 tensors, without the layers ``added`` marks."""
    out = {}
    for path, value in flatten(variables["params"]).items():
        if not added(path):
            out[torch_key(path)] = np.ascontiguousarray(
                torch_layout(path, np.asarray(value, np.float32)))
    return out


def vae_config(block: Mapping[str, Any], latent_scale: float, sample_size: int = 256) -> dict:
    n = len(block["block_out_channels"])
    cfg = {k: (list(block[k]) if isinstance(block[k], (list, tuple)) else block[k])
           for k in VAE_FIELDS if k in block}
    cfg.update(_class_name="AutoencoderKL", act_fn="silu", scaling_factor=float(latent_scale),
               down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
               sample_size=sample_size)
    return cfg


def unet_config(block: Mapping[str, Any], sample_size: int = 64) -> dict:
    cfg = {k: (list(block[k]) if isinstance(block[k], (list, tuple)) else block[k])
           for k in UNET_FIELDS if k in block}
    cfg.update(_class_name="UNet2DConditionModel", sample_size=sample_size)
    return cfg


def write_folder(folder: str, config: dict, tensors: Mapping[str, np.ndarray]) -> str:
    """``config.json`` + the safetensors file, written under ``folder.partial`` and renamed."""
    final = os.path.abspath(folder).rstrip(os.sep)
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    with open(os.path.join(partial, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    save_file(dict(tensors), os.path.join(partial, WEIGHTS_FILE), metadata={"format": "pt"})
    os.replace(partial, final)
    return final
