"""A text-to-image base: the image VAE, the image UNet and the text encoder a video family starts
from, in the format ``python -m nuwa_xl_jax.convert`` writes for Stable Diffusion's weights, so
``model.{vae,mtd,text}.init_from`` read it on the same code path. The synthetic world's base
(``configs/synthetic_base.py``) ships with the package; configs/synthetic.py starts from it::

  BASE/manifest.json   what it is: the config it was trained with, the commit, steps and training
                       time per stage, its measured quality, and the sha256 of every file below
  BASE/vae/            convert --kind=vae  (params/, model_config.json with the latent_scale)
  BASE/unet/           convert --kind=unet (the image UNet: no temporal or condition layers)
  BASE/text/           convert --kind=clip (the text encoder, with the word tokenizer's config)

:func:`check` runs before a component is read: a missing shipped base, or a missing or changed
file of one with a manifest, is one :class:`BaseError` naming the file and the fix.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from typing import Any, Optional

from nuwa_xl_jax import paths
from nuwa_xl_jax.configuration import files
from nuwa_xl_jax.family import store

MANIFEST = "manifest.json"
FORMAT = "nuwa_xl_jax.base"
VERSION = 1
# component folder -> (the family component its weights are stored under, convert's --kind)
COMPONENTS = {"vae": ("vae", "vae"), "unet": ("mtd", "unet"), "text": ("text", "clip")}
SHIPPED = files.SHIPPED_BASE  # the base the embedded default starts from (package data)
TRAIN_COMMAND = ("python -m nuwa_xl_jax.train --config=configs/synthetic_base.py "
                 "--workdir=runs/base, then python -m nuwa_xl_jax.export --workdir=runs/base "
                 "--format=base --out=")


class BaseError(store.ExportError):
    """A base that is missing, incomplete or not what its manifest says."""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: str) -> dict[str, str]:
    """``{path relative to root: sha256}`` of every file under the component folders."""
    out = {}
    for component in COMPONENTS:
        for d, _, names in os.walk(os.path.join(root, component)):
            for n in names:
                path = os.path.join(d, n)
                out[os.path.relpath(path, root).replace(os.sep, "/")] = _sha256(path)
    return dict(sorted(out.items()))


def read_manifest(root: str) -> dict:
    path = os.path.join(root, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise BaseError(f"the base's manifest {path} cannot be read ({e}): restore it (git "
                        f"checkout -- {path}, or reinstall nuwa_xl_jax)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BaseError(f"{path} is not a {FORMAT} manifest: restore it or write the base again")
    return manifest


def check(folder: str) -> None:
    """Raises BaseError unless ``folder`` (a component of a base with a manifest) has every file
    its manifest lists, with its checksum. Folders outside a base (a plain ``convert`` output)
    pass: the weights reader judges those."""
    folder = os.path.abspath(folder)
    root = os.path.dirname(folder)
    if not os.path.exists(os.path.join(root, MANIFEST)):
        if root == SHIPPED:
            raise BaseError(f"the shipped synthetic base is missing ({SHIPPED}/{MANIFEST}): "
                            "reinstall nuwa_xl_jax from a complete checkout, or write it again: "
                            f"{TRAIN_COMMAND}{SHIPPED}")
        return
    manifest = read_manifest(root)
    prefix = os.path.basename(folder) + "/"
    listed = {k: v for k, v in manifest.get("files", {}).items() if k.startswith(prefix)}
    if not listed:
        raise BaseError(f"{folder} is not a component of the base in {root} (its manifest lists "
                        f"{sorted(COMPONENTS)})")
    for name, digest in listed.items():
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise BaseError(f"the base file {path} is missing: restore it (git checkout -- "
                            f"{root}, or reinstall nuwa_xl_jax)")
        if _sha256(path) != digest:
            raise BaseError(f"the base file {path} does not match its checksum in "
                            f"{os.path.join(root, MANIFEST)} (damaged or replaced): restore it "
                            f"(git checkout -- {root}, or reinstall nuwa_xl_jax)")


def _steps_and_time(workdir: str, stage: str) -> tuple[Optional[int], Optional[float]]:
    """The final step (done.json) and the training time: the sum of the logged intervals of
    metrics.jsonl (log_every / steps_per_s), over every session the run took, up to the exported
    step (a run continued past the checkpoint it was exported at logged steps it does not hold)."""
    steps = None
    done = os.path.join(store.export_dir(workdir, stage), "done.json")
    if os.path.exists(done):
        with open(done) as f:
            steps = json.load(f).get("step")
    rows: dict[int, dict] = {}
    path = os.path.join(workdir, stage, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if "steps_per_s" in row and (steps is None or row["step"] <= steps):
                    rows[row["step"]] = row  # a resumed run logs some steps again: the last wins
    seconds, last = 0.0, 0
    for step in sorted(rows):
        seconds += (step - last) / max(rows[step]["steps_per_s"], 1e-9)
        last = step
    return steps, (round(seconds, 1) if rows else None)


def _commit() -> Optional[str]:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def write_base(workdir: str, out: str, quality: Optional[dict] = None,
               stages: tuple[str, str] = ("vae", "mtd_image"), notes: Optional[str] = None) -> str:
    """Writes the base a training workdir holds (its ``vae`` and ``mtd_image`` exports) to the new
    folder ``out``: the three component folders and the manifest (``notes``: how it was trained,
    where the config alone does not say, e.g. a stage resumed under another recipe). Written under
    ``out + ".partial"`` and renamed when complete; a non-empty ``out`` is never overwritten."""
    out = os.path.abspath(out)
    if os.path.isdir(out) and os.listdir(out) or os.path.isfile(out):
        raise FileExistsError(f"--out={out} exists and is not empty; give a new folder (the base "
                              "is written once, not over an older one)")
    config = store.load_config(workdir)
    vae_stage, unet_stage = stages
    vae, vae_meta = store.read_export(store.export_dir(workdir, vae_stage))
    unet, _ = store.read_export(store.export_dir(workdir, unet_stage))
    model = config.model
    parts: dict[str, tuple[Any, dict]] = {
        "vae": (vae["vae"], {"vae": model.vae.to_dict(), "latent_scale": vae_meta["latent_scale"]}),
        "unet": (unet["mtd"], {"mtd": model.mtd.to_dict()}),
        "text": (unet["text"], {"text": model.text.to_dict()})}
    partial = out + store.PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    source = paths.absolute(workdir)  # a bucket URL stays one
    for folder, (weights, meta) in parts.items():
        component, kind = COMPONENTS[folder]
        store.write_export(os.path.join(partial, folder), {component: weights},
                           {**meta, "kind": kind, "source": source})
    steps, seconds = {}, {}
    for stage in config.stages:  # every stage it took (vae_image's too), not only the two read
        steps[stage], seconds[stage] = _steps_and_time(workdir, stage)
    manifest = {"format": FORMAT, "version": VERSION, "config": config.to_dict(),
                "commit": _commit(), "steps": steps, "train_seconds": seconds,
                "quality": quality, "notes": notes, "files": _files(partial)}
    with open(os.path.join(partial, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    if os.path.isdir(out):
        os.rmdir(out)  # empty (checked above)
    os.replace(partial, out)
    return out
