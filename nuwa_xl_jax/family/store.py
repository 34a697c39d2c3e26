"""The on-disk format of a trained model family: one owner for what training writes and generation,
the latent cache and benchmarks read.

A family is a training workdir::

  WORKDIR/config.json                  the whole config it was trained with
  WORKDIR/STAGE/export/params/         the stage's EMA weights (an Orbax StandardCheckpointer tree:
                                       {"vae": ...} for vae / vae_image, {"mtd", "text"} for MTDs)
  WORKDIR/STAGE/export/model_config.json
                                       the stage's model config; the vae stage's also holds the
                                       ``latent_scale`` (1 / std of its latents) MTDs diffuse at
  WORKDIR/STAGE/export/files.json      the size of every file under params/, checked before
                                       Orbax reads them
  WORKDIR/STAGE/export/done.json       written last by training: the stage finished

STAGE is vae_image, vae, mtd_global, mtd_local<d> (or mtd_local when shared), mtd_ar.

An export is written whole under ``export.partial/`` and renamed to ``export/`` only when complete,
so a run killed mid-export never leaves a folder that loads; a folder that still fails to read
(truncated, foreign) is one :class:`ExportError` naming it and the fix. Truncated or replaced
weight files are caught by ``files.json`` before Orbax starts: a failed Orbax restore leaves
asyncio threads that print tracebacks at exit, so a damage we can see without it never reaches it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

from nuwa_xl_jax import parallel, paths
from nuwa_xl_jax.configuration import Config

CONFIG = "config.json"
MODEL_CONFIG = "model_config.json"
PARAMS = "params"
FILES = "files.json"  # {relative path under params/: size in bytes}, written with the export
PARTIAL = ".partial"  # suffix of an export being written
FAMILY_FILE = "family.json"  # the manifest of an exported artifact (family/artifact.py)
FORMAT = "nuwa_xl_jax.family"
VERSION = 1


class ExportError(ValueError):
    """An export folder that exists but cannot be read: truncated, corrupt or not ours."""


def _sync(name: str) -> None:
    parallel.sync_processes(name)  # every process writes its shards: all finish before the rename


def export_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage, "export")


def has_export(workdir: str, stage: str) -> bool:
    return (paths.as_path(export_dir(workdir, stage)) / PARAMS).is_dir()


def write_export(directory: str, params: Any, model_config: dict) -> None:
    """Inference weights (the EMA params: numpy arrays, or jax.Arrays sharded however, across
    processes too; every process calls this) + the model config, as an Orbax checkpoint, written
    to ``directory + ".partial"`` and renamed to ``directory`` once complete (replacing an older
    one)."""
    # Orbax writes each process's own shards of sharded jax.Arrays (FSDP across hosts): never
    # gather them to one host (jax.device_get fails on arrays other processes hold).
    params = nn.meta.unbox(params)
    final = paths.as_path(paths.absolute(directory).rstrip("/"))  # a bucket URL stays one
    partial = final.with_name(final.name + PARTIAL)
    if jax.process_index() == 0:
        partial.rmtree(missing_ok=True)  # what a killed earlier export left
        partial.mkdir(parents=True)
        (partial / MODEL_CONFIG).write_text(json.dumps(model_config, indent=1, sort_keys=True))
    _sync("export_start")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(partial / PARAMS, params, force=True)
    checkpointer.wait_until_finished()
    _sync("export_saved")
    if jax.process_index() == 0:
        (partial / FILES).write_text(json.dumps(_file_sizes(partial / PARAMS), indent=1,
                                                sort_keys=True))
        if final.exists():  # an older export of this stage: replaced only now
            old = final.with_name(final.name + ".old")
            old.rmtree(missing_ok=True)
            final.rename(old)
            partial.rename(final)
            old.rmtree(missing_ok=True)
        else:
            partial.rename(final)
    _sync("export_renamed")


def _file_sizes(root) -> dict:
    root = paths.as_path(root)
    return {str((d / f).relative_to(root)): (d / f).stat().length
            for d, _, files in root.walk() for f in files}


def _check_files(directory: str, path: str, fix: str) -> None:
    """Every file ``files.json`` lists is under ``path`` at its size (exports written before it
    existed have none: Orbax alone judges them)."""
    listing = paths.as_path(directory) / FILES
    if not listing.exists():
        return
    expected = _json_object(directory, listing, fix)
    found = _file_sizes(path)
    for name, size in sorted(expected.items()):
        if found.get(name) != size:
            got = "missing" if name not in found else f"{found[name]} bytes"
            raise _unreadable(directory, path, ValueError(
                f"{name} should be {size} bytes, found {got}"), fix)


STAGE_FIX = (
    "delete that folder and run its stage again (python -m nuwa_xl_jax.train "
    "--config=... --workdir=... --stages=STAGE), or use a workdir whose export is complete"
)
FAMILY_FIX = ("give a training workdir or a complete folder written by python -m "
              "nuwa_xl_jax.export (export it again if it was damaged)")


def _unreadable(directory: str, what: str, err: Exception, fix: str = STAGE_FIX) -> ExportError:
    reason = " ".join(str(err).split())
    reason = reason[:300] + ("..." if len(reason) > 300 else "")
    return ExportError(
        f"{what} of {directory} cannot be read ({type(err).__name__}: {reason}). It is truncated "
        f"or corrupt, or was not written by nuwa_xl_jax: {fix}")


def _json_object(directory: str, path: str, fix: str) -> dict:
    """The JSON object in ``path``; anything else is an ExportError about ``directory``."""
    try:
        value = json.loads(paths.as_path(path).read_text())
        if not isinstance(value, dict):
            raise ValueError(f"a JSON object was expected, not {type(value).__name__}")
    except (OSError, ValueError) as e:
        raise _unreadable(directory, path, e, fix) from None
    return value


def _restore(path: str, mesh=None) -> Any:
    """The weights as numpy arrays, or laid out FSDP-style on ``mesh``: never on the layout they
    were saved from, so any device count reads any export."""
    # A read onto this process's own devices (numpy, or a mesh of them) involves no other
    # process: Orbax's barriers then wait for this one alone, so a process can read an export
    # (numpy: the VAE scale, say) while the others do other work or none.
    alone = mesh is None or {d.process_index for d in mesh.devices.flat} == {jax.process_index()}
    kw = {}
    if alone and jax.process_count() > 1:
        me = jax.process_index()
        kw = dict(multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me}))
    tree = ocp.StandardCheckpointer(**kw).metadata(path).item_metadata.tree
    if mesh is None:
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        # PyTreeCheckpointer takes no multiprocessing options: the handler and checkpointer do
        reader = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(**kw), **kw)
        return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(
        m.shape, m.dtype, sharding=parallel.fsdp_sharding(m.shape, mesh)), tree)
    return ocp.StandardCheckpointer(**kw).restore(path, target)


def read_model_config(directory: str) -> dict:
    """The ``model_config.json`` of one export folder, without reading its weights."""
    path = os.path.join(directory, MODEL_CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {MODEL_CONFIG} in {directory}: give a folder written by "
                                "python -m nuwa_xl_jax.convert or a training stage's export")
    return _json_object(directory, path, STAGE_FIX)


def read_export(directory: str, mesh=None) -> tuple[Any, dict]:
    """``(params, model_config)`` of one stage's export folder: numpy arrays, or with ``mesh``
    jax.Arrays read straight into FSDP shards on it (each process reads only its own shards)."""
    path = paths.as_path(directory) / PARAMS
    if not path.is_dir():
        partial = paths.absolute(directory).rstrip("/") + PARTIAL
        if paths.as_path(partial).is_dir():
            raise FileNotFoundError(
                f"no complete exported weights at {directory}, only the unfinished {partial} of a "
                "run that stopped while exporting: run that stage again to write the export")
        raise FileNotFoundError(
            f"no exported weights at {directory}: run the stage that writes them first (the "
            "pipeline runs stages in order: vae, mtd_global, mtd_local1, ...)")
    # a stage of an exported artifact is fixed by exporting again, one of a workdir by training
    in_artifact = (path.parent.parent.parent / FAMILY_FILE).exists()  # ARTIFACT/STAGE/export/params
    fix = FAMILY_FIX if in_artifact else STAGE_FIX
    model_config = _json_object(directory, path.parent / MODEL_CONFIG, fix)
    _check_files(directory, path, fix)
    try:
        params = _restore(path, mesh)
    except Exception as e:  # tensorstore / orbax errors of a truncated or foreign checkpoint
        raise _unreadable(directory, path, e, fix) from None
    return params, model_config


def check_family(path: str) -> Optional[dict]:
    """The manifest of an exported artifact (None for a training workdir, which has none); a
    foreign or damaged manifest is one ExportError."""
    manifest = os.path.join(path, FAMILY_FILE)
    if not os.path.exists(manifest):
        return None
    try:
        with open(manifest) as f:
            info = json.load(f)
        ok = isinstance(info, dict) and info.get("format") == FORMAT
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise ExportError(f"{manifest} is not a {FORMAT} manifest: {FAMILY_FIX}")
    if info.get("version", 0) > VERSION:
        raise ExportError(f"{path} is a version {info['version']} artifact; this nuwa_xl_jax "
                          f"reads up to version {VERSION}: upgrade the package")
    return info


def load_config(workdir: str) -> Config:
    """The config a family was trained with (``WORKDIR/config.json``; a workdir or an export),
    validated into the typed :class:`Config` (fields an older file lacks take their defaults)."""
    check_family(workdir)
    path = os.path.join(workdir, CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be a folder written by "
                                "python -m nuwa_xl_jax.train")
    config = _json_object(workdir, path, FAMILY_FIX)
    missing = [k for k in ("model", "data", "diffusion") if k not in config]
    if missing:  # e.g. a diffusers / Hugging Face folder's config.json
        raise ExportError(f"{path} is not a nuwa_xl_jax family config (it has no {missing}): give "
                          "a training workdir or a folder written by python -m nuwa_xl_jax.export")
    text = config["model"].get("text", {})
    tok = text.get("tokenizer", "word")
    if tok != "word" and not os.path.isabs(tok) and os.path.isdir(os.path.join(workdir, tok)):
        text["tokenizer"] = os.path.join(paths.absolute(workdir), tok)  # an export's own copy
    return Config.from_dict(config)


def read_vae(workdir: str, config=None) -> tuple[Any, float]:
    """``(variables, latent_scale)`` of the vae stage's export: the one reader of a family's VAE.
    The scale is the export's ``latent_scale``, else ``model.vae.scaling_factor`` of ``config``
    (default: the workdir's) for exports written without one."""
    exported, meta = read_export(export_dir(workdir, "vae"))
    if "latent_scale" in meta:
        return exported["vae"], float(meta["latent_scale"])
    config = load_config(workdir) if config is None else config
    return exported["vae"], config.model.vae.scaling_factor
