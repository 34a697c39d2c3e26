"""Reading public PyTorch-format weights (safetensors, read with numpy: torch is never needed) and
placing them into a Flax parameter tree with strict, readable checks.

A converter builds the Flax module, takes the *expected* flat parameter shapes from
``jax.eval_shape(module.init, ...)``, maps every source tensor to a flat Flax path (a rename plus a
layout change), and calls :func:`assemble`: missing, unexpected or mis-shaped keys are one error
that lists them all. Parameters the source does not have (the new temporal and condition layers)
keep their identity initialisation.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file


class WeightsError(ValueError):
    """Source weights that do not fit the model; the message lists the offending keys."""


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of one or more ``*.safetensors`` files in ``path`` (a file or a folder)."""
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise WeightsError(f"no *.safetensors file in {path!r}; save the model with "
                               "save_pretrained(..., safe_serialization=True)")
        files = [os.path.join(path, f) for f in files]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise WeightsError(f"weights path {path!r} does not exist")
    out: dict[str, np.ndarray] = {}
    for f in files:
        try:
            tensors = load_file(f)
        except Exception as e:  # a truncated or non-safetensors file
            raise WeightsError(f"cannot read {f!r} as safetensors: {e}") from e
        out.update(tensors)
    return out


def read_json(folder: str, name: str = "config.json") -> dict[str, Any]:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise WeightsError(f"{path!r} not found: expected a Hugging Face / diffusers model folder "
                           f"holding {name} and *.safetensors")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise WeightsError(f"{path!r} is not valid JSON: {e}") from e


def conv_weight(w: np.ndarray) -> np.ndarray:
    """torch conv ``[out, in, kh, kw]`` -> flax ``[kh, kw, in, out]``."""
    if w.ndim != 4:
        raise WeightsError(f"expected a 4-D conv weight, got shape {w.shape}")
    return np.transpose(w, (2, 3, 1, 0))


def linear_weight(w: np.ndarray) -> np.ndarray:
    """torch linear ``[out, in]`` -> flax ``[in, out]``; 1x1 conv weights are accepted too."""
    if w.ndim == 4 and w.shape[2:] == (1, 1):
        w = w[:, :, 0, 0]
    if w.ndim != 2:
        raise WeightsError(f"expected a 2-D linear weight, got shape {w.shape}")
    return w.T


def torch_to_flax_leaf(torch_key: str, w: np.ndarray, expected_ndim: int | None = None):
    """Default layout change for a torch parameter: returns (flax leaf name, array).

    ``weight`` of a conv -> ``kernel`` (HWIO); of a linear -> ``kernel`` (transposed); of a norm ->
    ``scale``; ``bias`` stays. ``expected_ndim`` (of the Flax leaf) tells a linear stored as a 1x1
    conv from a real conv.
    """
    name = torch_key.rsplit(".", 1)[-1]
    if name == "bias":
        return "bias", w
    if name != "weight":
        return name, w
    if w.ndim == 4:
        if expected_ndim == 2:
            return "kernel", linear_weight(w)
        return "kernel", conv_weight(w)
    if w.ndim == 2:
        if expected_ndim == 4:  # a linear stored where the model has a 1x1 conv
            return "kernel", w.T[None, None]
        return "kernel", linear_weight(w)
    if w.ndim == 1:
        return "scale", w
    raise WeightsError(f"{torch_key}: unsupported weight shape {w.shape}")


def assemble(expected: Mapping[str, Any], provided: Mapping[str, np.ndarray],
             init: Mapping[str, np.ndarray] | None = None,
             new_layer: Callable[[str], bool] = lambda path: False,
             source: str = "checkpoint") -> dict:
    """Builds the nested params from flat ``provided`` (``"a/b/kernel" -> array``).

    ``expected`` maps every flat Flax path to its shape. Paths for which ``new_layer(path)`` is true
    (layers NUWA-XL adds) may be absent from ``provided`` and take ``init``'s value. Anything else
    missing, any extra source key and any shape mismatch is collected and raised together.
    """
    missing, mismatched = [], []
    flat = {}
    for path, shape in expected.items():
        shape = tuple(getattr(shape, "shape", shape))
        if path in provided:
            arr = np.asarray(provided[path])
            if tuple(arr.shape) != shape:
                mismatched.append(f"{path}: {source} has {tuple(arr.shape)}, model expects {shape}")
            flat[path] = arr.astype(np.float32)
        elif new_layer(path) and init is not None and path in init:
            flat[path] = np.asarray(init[path])
        else:
            missing.append(path)
    unexpected = sorted(set(provided) - set(expected))
    if missing or unexpected or mismatched:
        lines = []
        if missing:
            lines.append(
                f"missing from {source} ({len(missing)}): " + ", ".join(sorted(missing)[:50])
            )
        if unexpected:
            lines.append(
                f"unexpected in {source} ({len(unexpected)}): " + ", ".join(unexpected[:50])
            )
        if mismatched:
            lines.append("shape mismatches: " + "; ".join(mismatched[:50]))
        raise WeightsError("weights do not fit the model:\n  " + "\n  ".join(lines))
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def flatten(tree: Mapping) -> dict[str, Any]:
    """``{"a": {"b": x}} -> {"a/b": x}``."""
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}
