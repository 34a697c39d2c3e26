"""LPIPS weights from a local ``.safetensors`` / ``.npz`` file (layout:
``nuwa_xl_jax/models/lpips.py``)
-> ``(LPIPS module, {"params": ...})``. Nothing is ever downloaded."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

from nuwa_xl_jax.models.lpips import LPIPS, VGG_STAGES
from nuwa_xl_jax.weights.common import WeightsError, conv_weight, flatten


def _read(path: str) -> dict[str, np.ndarray]:
    if not path or not os.path.isfile(path):
        raise WeightsError(f"LPIPS weights file {path!r} not found; set vae_loss.lpips_path to a "
                           "local .safetensors/.npz file (layout: nuwa_xl_jax/models/lpips.py), or "
                           "set it to '' to train without the LPIPS term. Nothing is downloaded.")
    try:
        if path.endswith(".npz"):
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        return load_file(path)
    except Exception as e:  # a corrupt or foreign file
        raise WeightsError(f"cannot read LPIPS weights {path!r} (.safetensors or .npz): {e}") from e


def load_lpips(path: str) -> tuple[LPIPS, dict]:
    """Reads the LPIPS weights file at ``path`` -> ``(LPIPS module, {"params": ...})``."""
    tensors = _read(path)
    params, used, problems = {}, set(), []
    widths = []
    for k, indices in enumerate(VGG_STAGES):
        for i in indices:
            w, b = f"features.{i}.weight", f"features.{i}.bias"
            if w not in tensors or b not in tensors:
                problems.append(f"missing {w} / {b}")
                continue
            params[f"features_{i}"] = {"kernel": conv_weight(tensors[w]).astype(np.float32),
                                       "bias": tensors[b].astype(np.float32)}
            used.update((w, b))
        widths.append(params[f"features_{indices[-1]}"]["bias"].shape[0]
                      if f"features_{indices[-1]}" in params else 0)
        head = next((n for n in (f"lin{k}.model.1.weight", f"lin{k}.weight") if n in tensors), None)
        if head is None:
            problems.append(f"missing lin{k}.model.1.weight")
            continue
        params[f"lin{k}"] = tensors[head].reshape(-1).astype(np.float32)
        used.add(head)
        if params[f"lin{k}"].shape[0] != widths[-1]:
            problems.append(f"{head} has {params[f'lin{k}'].shape[0]} channels, VGG stage {k} has "
                            f"{widths[-1]}")
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:20]))
    if problems:
        raise WeightsError(f"LPIPS weights {path!r} do not have the expected layout "
                           f"(see nuwa_xl_jax/models/lpips.py): " + "; ".join(problems))
    module = LPIPS(stage_widths=tuple(widths))
    expected = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                              jnp.zeros((1, 16, 16, 3)))["params"]
    have = flatten(params)
    bad = [f"{k}: file {np.shape(have.get(k))}, model {tuple(e.shape)}"
           for k, e in flatten(expected).items() if np.shape(have.get(k)) != tuple(e.shape)]
    if bad:
        raise WeightsError(f"LPIPS weights {path!r}: shape mismatches: " + "; ".join(bad))
    return module, {"params": jax.tree.map(jnp.asarray, params)}
