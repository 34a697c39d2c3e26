"""One self-contained inference artifact of a model family (``python -m nuwa_xl_jax.export``).

It is the family format itself, cut to what inference reads, so every reader of a workdir reads
it too (``NuwaXLPipeline.from_pretrained(OUT)``)::

  OUT/family.json            format tag, version, the stages it holds, where it came from
  OUT/config.json            the whole config (schedule, sampler defaults, data shapes, model
  blocks)
  OUT/STAGE/export/          each stage's EMA weights + model config; vae's holds the latent scale
  OUT/tokenizer/             a CLIP tokenizer folder, when the text model uses one (the built-in
                             word tokenizer's vocabulary ships with the package)

Weights are read from the workdir straight into FSDP shards on the mesh and written by Orbax from
those shards, so it runs under FSDP across processes (every process calls :func:`write_family`)
and the artifact loads on any device count. The artifact is written under ``OUT.partial`` and
renamed when complete: a killed export never leaves a folder that loads.
"""
from __future__ import annotations

import json
import os
import shutil

import jax

from nuwa_xl_jax import parallel, paths
from nuwa_xl_jax.family import store

TRAINING_ONLY = ("vae_image",)  # stages generation never reads


def required_stages(config) -> list[str]:
    """The stages diffusion over diffusion needs: the VAE, the global and the local MTD(s)."""
    if config.local_models == "shared":
        local = ["mtd_local"]
    else:
        local = [f"mtd_local{d}" for d in range(1, config.data.depth)]
    return ["vae", "mtd_global", *local]


def inference_stages(config, workdir: str) -> list[str]:
    """The required stages, then any other exported one (baselines such as ``mtd_ar``)."""
    names = required_stages(config)
    missing = [n for n in names if not store.has_export(workdir, n)]
    if missing:
        raise FileNotFoundError(
            f"{workdir} has no finished export of {missing}: train those stages first "
            "(python -m nuwa_xl_jax.train --config=... --workdir=...), then export")
    extra = sorted(n for n in os.listdir(workdir)
                   if n not in names and n not in TRAINING_ONLY and store.has_export(workdir, n))
    return names + extra


def _sync(name: str) -> None:
    parallel.sync_processes(name)


def write_family(workdir: str, out: str, mesh=None, progress: bool = True) -> str:
    """Writes the artifact of ``workdir``'s family to ``out`` (a new folder: an existing one is
    never overwritten). ``mesh`` (default: every device on the ``fsdp`` axis) holds the weights
    while they pass through. Every process of a multi-process run calls this."""
    config = store.load_config(workdir)  # also: a foreign workdir fails here, before any write
    names = inference_stages(config, workdir)
    final = os.path.abspath(out).rstrip(os.sep)
    if os.path.exists(final) and (not os.path.isdir(final) or os.listdir(final)):
        raise FileExistsError(f"--out={out!r} exists and is not empty; nothing was overwritten. "
                              "Choose a new folder or remove this one first")
    mesh = parallel.make_mesh((1, -1)) if mesh is None else mesh
    partial = final + store.PARTIAL
    raw = config.to_dict()
    tokenizer = raw["model"]["text"].get("tokenizer", "word")
    if jax.process_index() == 0:
        shutil.rmtree(partial, ignore_errors=True)  # what a killed earlier export left
        os.makedirs(partial)
        if tokenizer != "word":  # the artifact carries its own copy
            shutil.copytree(tokenizer, os.path.join(partial, "tokenizer"))
            raw["model"]["text"]["tokenizer"] = "tokenizer"
        with open(os.path.join(partial, store.CONFIG), "w") as f:
            json.dump(raw, f, indent=1, sort_keys=True)
    _sync("family_export_start")
    for name in names:
        if progress and jax.process_index() == 0:
            print(f"[export] {name}")
        params, meta = store.read_export(store.export_dir(workdir, name), mesh=mesh)
        store.write_export(store.export_dir(partial, name), params, meta)
        del params
    if jax.process_index() == 0:
        with open(
            os.path.join(partial, store.FAMILY_FILE), "w"
        ) as f:  # last: the artifact is complete
            json.dump({"format": store.FORMAT, "version": store.VERSION, "stages": names,
                       "source": paths.absolute(workdir)}, f, indent=1)
        os.replace(partial, final)
    _sync("family_export_renamed")
    return final
