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

An export is written whole under ``export.partial/`` and renamed to ``export/`` only when complete,
so a run killed mid-export never leaves a folder that loads; a folder that still fails to read
(truncated, foreign) is one :class:`ExportError` naming it and the fix.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

CONFIG = "config.json"
MODEL_CONFIG = "model_config.json"
PARAMS = "params"
PARTIAL = ".partial"  # suffix of an export being written


class ExportError(ValueError):
    """An export folder that exists but cannot be read: truncated, corrupt or not ours."""


def _sync(name: str) -> None:
    if jax.process_count() > 1:  # every process writes its shards: all finish before the rename
        multihost_utils.sync_global_devices(name)


def export_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage, "export")


def has_export(workdir: str, stage: str) -> bool:
    return os.path.isdir(os.path.join(export_dir(workdir, stage), PARAMS))


def write_export(directory: str, params: Any, model_config: dict) -> None:
    """Inference weights (the EMA params) + the model config, as an Orbax checkpoint, written to
    ``directory + ".partial"`` and renamed to ``directory`` once complete (replacing an older one)."""
    params = jax.device_get(nn.meta.unbox(params))  # plain arrays, whatever the caller passes
    final = os.path.abspath(directory).rstrip(os.sep)
    partial = final + PARTIAL
    if jax.process_index() == 0:
        shutil.rmtree(partial, ignore_errors=True)  # what a killed earlier export left
        os.makedirs(partial)
        with open(os.path.join(partial, MODEL_CONFIG), "w") as f:
            json.dump(model_config, f, indent=1, sort_keys=True)
    _sync("export_start")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(partial, PARAMS), params, force=True)
    checkpointer.wait_until_finished()
    _sync("export_saved")
    if jax.process_index() == 0:
        if os.path.exists(final):  # an older export of this stage: replaced only now
            old = final + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(partial, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, final)
    _sync("export_renamed")


def _unreadable(directory: str, what: str, err: Exception) -> ExportError:
    reason = " ".join(str(err).split())
    reason = reason[:300] + ("..." if len(reason) > 300 else "")
    return ExportError(
        f"{what} of the export {directory} cannot be read ({type(err).__name__}: {reason}). The "
        "export is truncated or corrupt, or was not written by nuwa_xl_jax: delete that folder "
        "and run its stage again (python -m nuwa_xl_jax.train --config=... --workdir=... "
        "--stages=STAGE), or use a workdir whose export is complete")


def read_export(directory: str) -> tuple[Any, dict]:
    """``(params, model_config)`` of one stage's export folder."""
    path = os.path.join(os.path.abspath(directory), PARAMS)
    if not os.path.isdir(path):
        partial = os.path.abspath(directory).rstrip(os.sep) + PARTIAL
        if os.path.isdir(partial):
            raise FileNotFoundError(
                f"no complete exported weights at {directory}, only the unfinished {partial} of a "
                "run that stopped while exporting: run that stage again to write the export")
        raise FileNotFoundError(
            f"no exported weights at {directory}: run the stage that writes them first (the "
            "pipeline runs stages in order: vae, mtd_global, mtd_local1, ...)")
    config_path = os.path.join(directory, MODEL_CONFIG)
    try:
        with open(config_path) as f:
            model_config = json.load(f)
        if not isinstance(model_config, dict):
            raise ValueError(f"a JSON object was expected, not {type(model_config).__name__}")
    except (OSError, ValueError) as e:
        raise _unreadable(directory, config_path, e) from None
    try:
        params = ocp.StandardCheckpointer().restore(path)
    except Exception as e:  # tensorstore / orbax errors of a truncated or foreign checkpoint
        raise _unreadable(directory, path, e) from None
    return params, model_config


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
