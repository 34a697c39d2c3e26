"""The on-disk format of a trained model family: one owner for what training writes and generation,
the latent cache and benchmarks read.

A family is a training workdir::

  WORKDIR/config.json                  the whole config it was trained with
  WORKDIR/STAGE/export/params/         the stage's EMA weights (an Orbax StandardCheckpointer tree:
                                       {"vae": ...} for vae / vae_image, {"mtd", "text"} for MTDs)
  WORKDIR/STAGE/export/model_config.json
                                       the stage's model config; the vae stage's also holds the
                                       ``latent_scale`` (1 / std of its latents) MTDs diffuse at
  WORKDIR/STAGE/export/done.json       written last by training: the stage finished

STAGE is vae_image, vae, mtd_global, mtd_local<d> (or mtd_local when shared), mtd_ar.
"""
from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG = "config.json"
MODEL_CONFIG = "model_config.json"
PARAMS = "params"


def export_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage, "export")


def has_export(workdir: str, stage: str) -> bool:
    return os.path.isdir(os.path.join(export_dir(workdir, stage), PARAMS))


def write_export(directory: str, params: Any, model_config: dict) -> None:
    """Inference weights (the EMA params) + the model config, as an Orbax checkpoint."""
    params = jax.device_get(nn.meta.unbox(params))  # plain arrays, whatever the caller passes
    if jax.process_index() == 0:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, MODEL_CONFIG), "w") as f:
            json.dump(model_config, f, indent=1, sort_keys=True)
    path = os.path.join(os.path.abspath(directory), PARAMS)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, params, force=True)
    checkpointer.wait_until_finished()


def read_export(directory: str) -> tuple[Any, dict]:
    """``(params, model_config)`` of one stage's export folder."""
    path = os.path.join(os.path.abspath(directory), PARAMS)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"no exported weights at {directory}: run the stage that writes them first (the "
            "pipeline runs stages in order: vae, mtd_global, mtd_local1, ...)")
    with open(os.path.join(directory, MODEL_CONFIG)) as f:
        model_config = json.load(f)
    return ocp.StandardCheckpointer().restore(path), model_config


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a family was trained with (``WORKDIR/config.json``)."""
    path = os.path.join(workdir, CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be a folder written by "
                                "python -m nuwa_xl_jax.train")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def read_vae(workdir: str, config=None) -> tuple[Any, float]:
    """``(variables, latent_scale)`` of the vae stage's export: the one reader of a family's VAE.
    The scale is the export's ``latent_scale``, else ``model.vae.scaling_factor`` of ``config``
    (default: the workdir's) for exports written without one."""
    exported, meta = read_export(export_dir(workdir, "vae"))
    if "latent_scale" in meta:
        return exported["vae"], float(meta["latent_scale"])
    config = load_config(workdir) if config is None else config
    return exported["vae"], config.model.vae.scaling_factor
