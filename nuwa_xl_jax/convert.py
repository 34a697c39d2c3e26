"""Import public weights into the model-family format (the one format training exports use).

    python -m nuwa_xl_jax.convert --kind=vae --src=DIR --dst=DIR

``--src`` is a diffusers / Hugging Face model folder (``config.json`` + ``*.safetensors``, read with
numpy; torch is not needed). ``--dst`` becomes one component's export, exactly as a training stage
writes it (nuwa_xl_jax/family/store.py): ``params/`` (an Orbax checkpoint of ``{COMPONENT:
{"params": ...}}``, COMPONENT = vae | mtd | text | inception | i3d) and ``model_config.json``
(``{COMPONENT: <our config block>, "kind", "source"}``; a VAE's also holds its ``latent_scale``).
It is written under a temporary name and renamed when complete; a non-empty ``--dst`` is never
overwritten. Training starts from it with ``model.vae.init_from`` / ``model.mtd.init_from`` /
``model.text.init_from`` (docs/training.md); ``python -m nuwa_xl_jax.export --format=diffusers``
writes the spatial VAE / UNet back out.

Kinds are looked up in :data:`KINDS` (module, loader) and imported lazily, so a kind whose
importer is not installed fails with a clear message and the others keep working.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import flags

from nuwa_xl_jax import cli
from nuwa_xl_jax.configuration import ConfigError
from nuwa_xl_jax.family import store
from nuwa_xl_jax.weights.common import WeightsError
from nuwa_xl_jax.weights.vae import load_diffusers_vae  # noqa: F401  (re-exported)

# kind -> (module holding the loader, loader name). Each loader is ``fn(src, **options) ->
# (flax module, {"params": ...})``.
KINDS: dict[str, tuple[str, str]] = {
    "vae": ("nuwa_xl_jax.weights.vae", "load_diffusers_vae"),
    "unet": ("nuwa_xl_jax.weights.unet", "load_diffusers_unet"),
    "clip": ("nuwa_xl_jax.weights.clip", "load_hf_clip_text"),
    # Metric networks: --src is a PyTorch state-dict file (reading it needs torch;
    # docs/evaluation.md)
    "inception": ("nuwa_xl_jax.weights.inception", "load_fid_inception"),
    "i3d": ("nuwa_xl_jax.weights.i3d", "load_i3d"),
}
# kind -> the component name its weights and config block are stored under
COMPONENTS = {"vae": "vae", "unet": "mtd", "clip": "text", "inception": "inception", "i3d": "i3d"}


class ConvertError(ValueError):
    """A conversion that cannot run as asked (unknown kind, missing importer, occupied dst)."""


def loader_for(kind: str) -> Callable[..., tuple[Any, dict]]:
    """The import function of ``kind``, imported on first use."""
    if kind not in KINDS:
        raise ConvertError(f"--kind={kind!r} is not supported; expected one of {sorted(KINDS)}")
    module_name, fn_name = KINDS[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise ConvertError(f"--kind={kind} needs {module_name}.{fn_name}, which is not part of "
                           "this installation yet") from e
    if not hasattr(module, fn_name):
        raise ConvertError(f"--kind={kind}: {module_name} has no {fn_name}()")
    return getattr(module, fn_name)


def __getattr__(name: str):
    """Lazy re-exports of the other loaders (``load_diffusers_unet``, ``load_hf_clip_text``)."""
    for kind, (_, fn_name) in KINDS.items():
        if fn_name == name:
            return loader_for(kind)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # dtypes and other scalars


def model_config(module: Any) -> dict[str, Any]:
    """The config block that rebuilds ``module``: its ``to_config()`` or else its dataclass
    fields."""
    to_config = getattr(module, "to_config", None)
    if to_config is not None:
        cfg = to_config()
        return _jsonable(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg))
    skip = {"parent", "name"}
    return _jsonable({f.name: getattr(module, f.name) for f in dataclasses.fields(module)
                      if f.name not in skip})


def check_destination(dst: str) -> None:
    if os.path.isfile(dst):
        raise ConvertError(f"--dst={dst!r} is a file; give a new or empty folder")
    if os.path.isdir(dst) and os.listdir(dst):
        raise ConvertError(f"--dst={dst!r} is not empty; refusing to overwrite it. Choose a new "
                           "folder or remove this one first")


def convert(kind: str, src: str, dst: str, **options: Any) -> str:
    """Loads ``src`` with the ``kind`` importer and writes it to ``dst`` in the family format."""
    check_destination(dst)
    module, variables = loader_for(kind)(src, **options)
    component = COMPONENTS[kind]
    meta = {component: model_config(module), "kind": kind, "source": os.path.abspath(src)}
    if kind == "vae":  # the scale the diffusion models see latents at (SD's 0.18215 for SD's VAE)
        meta["latent_scale"] = float(module.scaling_factor)
    store.write_export(dst, {component: jax.tree.map(np.asarray, variables)}, meta)
    return dst


def converted_kind(dst: str) -> str | None:
    """The ``--kind`` a convert output folder was written with; None for a folder that is not
    one."""
    try:
        with open(os.path.join(dst, store.MODEL_CONFIG)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta.get("kind") if isinstance(meta, dict) else None


def load_converted(dst: str) -> tuple[dict[str, Any], dict]:
    """Reads back what :func:`convert` wrote: ``({"kind", "source", "model": config block},
    {"params": ...})`` with numpy arrays."""
    params, meta = store.read_export(dst)
    kind = meta.get("kind")
    if kind not in COMPONENTS or COMPONENTS[kind] not in params:
        raise store.ExportError(f"{dst} was not written by python -m nuwa_xl_jax.convert (its "
                                f"model_config.json has kind={kind!r}): convert the source again")
    component = COMPONENTS[kind]
    return {"kind": kind, "source": meta.get("source"), "model": meta[component]}, params[component]


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    del argv
    flags.DEFINE_enum("kind", "vae", sorted(KINDS), "What to import.", flag_values=fv)
    flags.DEFINE_string("src", None, "diffusers / Hugging Face model folder (config.json + "
                        "*.safetensors).", flag_values=fv)
    flags.DEFINE_string("dst", None, "New or empty folder for the weights (the family format).",
                        flag_values=fv)
    flags.DEFINE_bool("temporal", True, "kind=vae: add NUWA-XL's temporal layers at identity.",
                      flag_values=fv)


def run(FLAGS: flags.FlagValues) -> int:
    if not FLAGS.src or not FLAGS.dst:
        cli.fail("--src (the model folder to import) and --dst (a new folder) are required")
    options = {"temporal": FLAGS.temporal} if FLAGS.kind == "vae" else {}
    try:
        convert(FLAGS.kind, FLAGS.src, FLAGS.dst, **options)
    except (ConvertError, WeightsError, ConfigError) as e:
        cli.fail(str(e))
    print(f"wrote {FLAGS.kind} weights to {FLAGS.dst} ({store.PARAMS}/ and {store.MODEL_CONFIG}, "
          "the family format)")
    return 0


def main(argv: Sequence[str]) -> int:
    """The command with ``argv`` (flags only), in-process; exits as the command does on errors."""
    return run(cli.parse(define_flags, argv, "convert"))


if __name__ == "__main__":
    cli.run(define_flags, run)
