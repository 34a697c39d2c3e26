"""Reading a PyTorch ``state_dict`` file (``.pth`` / ``.pt``) into numpy arrays.

A ``.pth`` file is a pickle of torch tensors, so reading it needs torch: it is imported here,
lazily,
only when such a file is read (``pip install torch``, or the repo's ``interop`` extra). The library
never imports torch anywhere else. Files are read with ``weights_only=True`` (no code from the file
is run). TorchScript archives are refused with a message saying so.
"""
from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from nuwa_xl_jax.weights.common import WeightsError


def _import_torch(path: str):
    try:  # deferred: torch is an optional dependency (the interop extra), heavy to import
        import torch
    except ModuleNotFoundError as e:
        raise WeightsError(
            f"reading {path!r} (a PyTorch .pth/.pt state dict) needs torch, which is "
            "not installed: `pip install torch` (CPU is enough) or install this "
            "repo with its interop extra, `pip install -e .[interop]`"
        ) from e
    return torch


def _is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or n.endswith("/code/__torch__.py") or
                   "/code/" in n for n in z.namelist())


def read_torch_state_dict(path: str, what: str = "weights") -> dict[str, np.ndarray]:
    """``{key: float32 array}`` of the state dict in ``path``.

    Accepts a bare state dict or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``, and
    drops a ``module.`` prefix (``nn.DataParallel``). Integer buffers (``num_batches_tracked``) are
    kept as they are; the callers drop them.
    """
    if not os.path.exists(path):
        raise WeightsError(
            f"{what} file {path!r} does not exist; pass the local path of the "
            "downloaded file (nothing is downloaded for you; see docs/evaluation.md)"
        )
    if os.path.isdir(path):
        raise WeightsError(f"{what}: {path!r} is a folder; pass the .pth/.pt file itself")
    if _is_torchscript(path):
        raise WeightsError(
            f"{path!r} is a TorchScript archive, not a state dict; this importer "
            "reads plain state dicts (see docs/evaluation.md for the supported files)"
        )
    torch = _import_torch(path)
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch pickle, ...
        raise WeightsError(f"cannot read {path!r} as a PyTorch state dict: {e}") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path!r} does not hold a state dict (a mapping of parameter names to "
                           f"tensors); found {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not hasattr(value, "detach"):
            raise WeightsError(f"{path!r}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if key.startswith("module."):
            key = key[len("module."):]
        array = value.detach().cpu().numpy()
        out[key] = array.astype(np.float32) if array.dtype.kind == "f" else array
    return out
