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
    extra = sorted(p.name for p in paths.as_path(workdir).iterdir()
                   if p.name not in names and p.name not in TRAINING_ONLY
                   and store.has_export(workdir, p.name))
    return names + extra


def _sync(name: str) -> None:
    parallel.sync_processes(name)


def write_family(workdir: str, out: str, mesh=None, progress: bool = True) -> str:
    """Writes the artifact of ``workdir``'s family to ``out`` (a new folder: an existing one is
    never overwritten). ``mesh`` (default: every device on the ``fsdp`` axis) holds the weights
    while they pass through. Every process of a multi-process run calls this."""
    config = store.load_config(workdir)  # also: a foreign workdir fails here, before any write
    names = inference_stages(config, workdir)
    final = paths.as_path(paths.absolute(out).rstrip("/"))  # a local folder or a bucket URL
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise FileExistsError(f"--out={out!r} exists and is not empty; nothing was overwritten. "
                              "Choose a new folder or remove this one first")
    mesh = parallel.make_mesh((1, -1)) if mesh is None else mesh
    partial = final.with_name(final.name + store.PARTIAL)
    raw = config.to_dict()
    tokenizer = raw["model"]["text"].get("tokenizer", "word")
    if jax.process_index() == 0:
        partial.rmtree(missing_ok=True)  # what a killed earlier export left
        partial.mkdir(parents=True)
        if tokenizer != "word":  # the artifact carries its own copy
            _copy_folder(paths.as_path(tokenizer), partial / "tokenizer")
            raw["model"]["text"]["tokenizer"] = "tokenizer"
        (partial / store.CONFIG).write_text(json.dumps(raw, indent=1, sort_keys=True))
    _sync("family_export_start")
    for name in names:
        if progress and jax.process_index() == 0:
            print(f"[export] {name}")
        params, meta = store.read_export(store.export_dir(workdir, name), mesh=mesh)
        store.write_export(store.export_dir(str(partial), name), params, meta)
        del params
    if jax.process_index() == 0:  # last: the artifact is complete
        (partial / store.FAMILY_FILE).write_text(json.dumps(
            {"format": store.FORMAT, "version": store.VERSION, "stages": names,
             "source": paths.absolute(workdir)}, indent=1))
        if final.exists():  # an empty folder
            final.rmdir()
        partial.rename(final)
    _sync("family_export_renamed")
    return str(final)


def _copy_folder(src, dest) -> None:
    """``src``'s files and folders copied into ``dest`` (epath paths: local or a bucket)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_dir():
            _copy_folder(item, dest / item.name)
        else:
            (dest / item.name).write_bytes(item.read_bytes())
