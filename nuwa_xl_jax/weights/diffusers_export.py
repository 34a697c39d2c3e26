"""Our spatial VAE / UNet as diffusers folders: the inverse of nuwa_xl_jax/weights/vae.py and
unet.py (``python -m nuwa_xl_jax.export --format=diffusers``): ``OUT/vae`` (AutoencoderKL, with the family's
latent scale as ``scaling_factor``) and ``OUT/unet`` (UNet2DConditionModel, the spatial layers of
one MTD stage), read from a workdir, an artifact or a ``convert`` output (the family format).

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

from nuwa_xl_jax.family import store
from nuwa_xl_jax.models.tklvae import is_temporal_param
from nuwa_xl_jax.weights.common import WeightsError, flatten
from nuwa_xl_jax.weights.unet import _COPIED as UNET_FIELDS, is_new_layer
from nuwa_xl_jax.weights.vae import _COPIED as VAE_FIELDS

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
_KEEP_UNDERSCORE = re.compile(r"^linear_\d+$")  # diffusers' own names (time_embedding.linear_1)


def torch_key(flax_path: str) -> str:
    """``down_blocks_0/attentions_1/to_out_0/kernel`` -> ``down_blocks.0.attentions.1.to_out.0.weight``."""
    *modules, leaf = flax_path.split("/")
    parts = []
    for m in modules:
        match = re.match(r"^(.*)_(\d+)$", m)
        parts.append(m if match is None or _KEEP_UNDERSCORE.match(m)
                     else f"{match.group(1)}.{match.group(2)}")
    name = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    return ".".join(parts + [name])


def torch_layout(flax_path: str, value: np.ndarray) -> np.ndarray:
    """Flax conv ``[kh, kw, in, out]`` -> torch ``[out, in, kh, kw]``; dense ``[in, out]`` -> ``[out, in]``."""
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
    from safetensors.numpy import save_file

    final = os.path.abspath(folder).rstrip(os.sep)
    partial = final + store.PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    with open(os.path.join(partial, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    save_file(dict(tensors), os.path.join(partial, WEIGHTS_FILE), metadata={"format": "pt"})
    os.replace(partial, final)
    return final


def _sources(path: str, stage: str) -> dict[str, tuple[Any, dict]]:
    """``{"vae" | "mtd": (weights, model_config)}`` of a workdir / artifact (its vae export and
    ``stage``'s MTD), or of one export folder (e.g. a ``convert`` output)."""
    if os.path.isdir(os.path.join(path, store.PARAMS)):  # one component's export
        params, meta = store.read_export(path)
        found = {c: (params[c], meta) for c in ("vae", "mtd") if c in params}
        if not found:
            raise WeightsError(f"{path} holds {sorted(params)} weights; --format=diffusers writes "
                               "a VAE or an MTD UNet")
        return found
    config = store.load_config(path)
    vae, scale = store.read_vae(path, config)
    mtd = store.read_export(store.export_dir(path, stage))[0]["mtd"]
    # the blocks the family was trained with; the VAE's scale the one its MTDs diffuse at
    return {"vae": (vae, {"vae": config.model.vae.to_dict(), "latent_scale": scale}),
            "mtd": (mtd, {"mtd": config.model.mtd.to_dict()})}


def export_diffusers(path: str, out: str, stage: str = "mtd_global") -> str:
    """Writes ``OUT/vae`` (AutoencoderKL) and/or ``OUT/unet`` (UNet2DConditionModel, the spatial
    layers of ``stage``'s MTD) from a workdir, an artifact or a converted folder ``path``."""
    final = os.path.abspath(out)
    if os.path.exists(final) and (not os.path.isdir(final) or os.listdir(final)):
        raise FileExistsError(f"--out={out!r} exists and is not empty; nothing was overwritten. "
                              "Choose a new folder or remove this one first")
    sources = _sources(path, stage)
    partial = final.rstrip(os.sep) + store.PARTIAL  # renamed when complete, as every export
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    if "vae" in sources:
        weights, meta = sources["vae"]
        scale = meta.get("latent_scale", meta["vae"].get("scaling_factor"))
        write_folder(os.path.join(partial, "vae"), vae_config(meta["vae"], scale),
                        state_dict(weights, is_temporal_param))
    if "mtd" in sources:
        weights, meta = sources["mtd"]
        write_folder(os.path.join(partial, "unet"), unet_config(meta["mtd"]),
                        state_dict(weights, is_new_layer))
    os.replace(partial, final)
    return final
