"""Import of pytorch-fid's FID Inception weights (``pt_inception-2015-12-05-6726825d.pth``).

That file is the state dict of pytorch-fid's ``fid_inception_v3()`` -- torchvision's Inception-v3
layout (``Mixed_6b.branch7x7_2.conv.weight``, ``...bn.running_var``, ``fc.weight`` with 1008
classes) holding the weights of TensorFlow's 2015-12-05 Inception graph that FID is defined with.
Reading a ``.pth`` needs torch (imported lazily, see :mod:`nuwa_xl_jax.weights.torch_file`).

    python -m nuwa_xl_jax.convert --kind=inception --src=pt_inception-2015-12-05-6726825d.pth
    --dst=DIR

A state dict without ``fc.*`` loads too (the classifier is then left out, ``num_classes=0``);
torchvision's ``AuxLogits.*`` (not part of the FID network) are refused as unexpected keys.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.models.inception import INPUT_SIZE, FIDInceptionV3
from nuwa_xl_jax.weights.common import WeightsError, assemble, flatten
from nuwa_xl_jax.weights.torch_file import read_torch_state_dict

# torch batch-norm / linear leaf -> our leaf
_BN_LEAVES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def torch_leaf_to_flax(key: str, value: np.ndarray) -> tuple[str, np.ndarray] | None:
    """One torch state-dict entry of a conv / frozen-BN / linear network -> (flat Flax path, array);
    ``None`` for buffers we do not keep (``num_batches_tracked``). Shared with the I3D importer."""
    *modules, leaf = key.split(".")
    if leaf == "num_batches_tracked":
        return None
    parent = modules[-1] if modules else ""
    if parent == "bn":
        if leaf not in _BN_LEAVES:
            raise WeightsError(f"{key}: unexpected batch-norm entry {leaf!r}")
        return "/".join(modules + [_BN_LEAVES[leaf]]), value
    if leaf == "bias":
        return "/".join(modules + ["bias"]), value
    if leaf != "weight":
        return "/".join(modules + [leaf]), value
    if value.ndim >= 3:  # conv [out, in, *k] -> [*k, in, out]
        perm = tuple(range(2, value.ndim)) + (1, 0)
        return "/".join(modules + ["kernel"]), np.transpose(value, perm)
    if value.ndim == 2:  # linear [out, in] -> [in, out]
        return "/".join(modules + ["kernel"]), value.T
    raise WeightsError(f"{key}: unsupported weight shape {value.shape}")


def convert_state_dict(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in tensors.items():
        mapped = torch_leaf_to_flax(key, np.asarray(value))
        if mapped is not None:
            out[mapped[0]] = mapped[1]
    return out


def expected_shapes(module: FIDInceptionV3) -> dict[str, Any]:
    dummy = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    abstract = jax.eval_shape(module.init, jax.random.key(0), dummy)
    return flatten(abstract["params"])


def load_fid_inception(path: str, **options: Any) -> tuple[FIDInceptionV3, dict]:
    """pytorch-fid's ``pt_inception-2015-12-05-*.pth`` (a local file) -> (module, ``{"params":
    ...}``).

    The number of classes is read from ``fc.weight`` (1008 in the FID file; 0 when absent).
    ``options`` may set ``resize_input`` (default True).
    """
    unknown = sorted(set(options) - {"resize_input"})
    if unknown:
        raise WeightsError(
            f"load_fid_inception: unknown option(s) {unknown}; supported: resize_input"
        )
    tensors = read_torch_state_dict(path, what="FID Inception weights")
    num_classes = int(tensors["fc.weight"].shape[0]) if "fc.weight" in tensors else 0
    module = FIDInceptionV3(num_classes=num_classes, resize_input=options.get("resize_input", True))
    params = assemble(expected_shapes(module), convert_state_dict(tensors),
                      source=f"{path} (expected pytorch-fid's pt_inception-2015-12-05 state dict)")
    return module, {"params": params}
