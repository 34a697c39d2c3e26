"""A family's spatial VAE and UNet as diffusers folders (``python -m nuwa_xl_jax.export
--format=diffusers``), the inverse of ``python -m nuwa_xl_jax.convert``: ``OUT/vae`` (AutoencoderKL,
with the family's latent scale as ``scaling_factor``) and ``OUT/unet`` (UNet2DConditionModel, the
spatial layers of one MTD stage), read from a workdir, an artifact or a ``convert`` output. The
layers NUWA-XL adds are left out (nuwa_xl_jax/weights/diffusers_export.py).
"""
from __future__ import annotations

import os
import shutil
from typing import Any

from nuwa_xl_jax.family import store
from nuwa_xl_jax.models.tklvae import is_temporal_param
from nuwa_xl_jax.weights import diffusers_export as dx
from nuwa_xl_jax.weights.common import WeightsError
from nuwa_xl_jax.weights.unet import is_new_layer


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
        dx.write_folder(os.path.join(partial, "vae"), dx.vae_config(meta["vae"], scale),
                        dx.state_dict(weights, is_temporal_param))
    if "mtd" in sources:
        weights, meta = sources["mtd"]
        dx.write_folder(os.path.join(partial, "unet"), dx.unet_config(meta["mtd"]),
                        dx.state_dict(weights, is_new_layer))
    os.replace(partial, final)
    return final
