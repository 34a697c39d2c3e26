"""LPIPS perceptual distance (VGG16 features + learned linear heads); its weights come from a local
file read by :func:`nuwa_xl_jax.weights.lpips.load_lpips`.

Nothing is ever downloaded: the user supplies one ``.safetensors`` or ``.npz`` file holding, in
PyTorch layouts,

- ``features.{i}.weight`` ``[out, in, 3, 3]`` and ``features.{i}.bias`` ``[out]`` for the 13 convs
  of torchvision's VGG16 ``features`` (i = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28);
- ``lin{k}.model.1.weight`` ``[1, C_k, 1, 1]`` (the LPIPS v0.1 ``vgg.pth`` names; ``lin{k}.weight``
  is accepted too) for k = 0..4, C_k the width of VGG stage k.

One way to build it from files you already have (torch needed only for this step)::

    vgg = torchvision.models.vgg16(weights=...).features.state_dict()
    lin = torch.load("vgg.pth")  # from the lpips package
    tensors = {f"features.{k}": v.numpy() for k, v in vgg.items()}
    tensors |= {k: v.numpy() for k, v in lin.items()}
    safetensors.numpy.save_file(tensors, "lpips_vgg.safetensors")

Stage widths are read from the file (64, 128, 256, 512, 512 for the real network), so tests can
use a narrow fake network with the same layout.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

# torchvision VGG16 ``features`` indices of the convs, grouped by LPIPS stage (relu1_2 .. relu5_3);
# a 2x2 max-pool precedes every stage but the first.
VGG_STAGES: tuple[tuple[int, ...], ...] = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
# LPIPS' ScalingLayer: inputs in [-1, 1] are normalised like ImageNet images.
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def _unit_normalize(x, eps=1e-10):
    return x / (jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
    """``apply(v, x, y)`` -> LPIPS distance per image ``[...]`` for ``x, y`` of shape ``[..., H, W,
    3]``.

    Per VGG stage: unit-normalise channels, squared difference, weighted by the linear head,
    averaged over positions; summed over stages (LPIPS v0.1, ``spatial=False``).
    """
    stage_widths: Sequence[int] = (64, 128, 256, 512, 512)
    dtype: Any = jnp.float32

    def _features(self, x):
        out = []
        for s, (indices, width) in enumerate(zip(VGG_STAGES, self.stage_widths)):
            if s:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for i in indices:
                x = nn.relu(nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                                    param_dtype=jnp.float32, name=f"features_{i}")(x))
            out.append(x.astype(jnp.float32))
        return out

    @nn.compact
    def __call__(self, x, y):
        if x.shape != y.shape or x.shape[-1] != 3:
            raise ValueError(
                f"LPIPS inputs must be two [..., height, width, 3] arrays of one shape, "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        leading = x.shape[:-3]
        both = jnp.concatenate([x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-3:])])
        both = (both - _SHIFT) / _SCALE
        n = both.shape[0] // 2
        total = 0.0
        for k, feats in enumerate(self._features(both)):
            diff = jnp.square(_unit_normalize(feats[:n]) - _unit_normalize(feats[n:]))
            head = self.param(f"lin{k}", nn.initializers.zeros_init(), (feats.shape[-1],))
            total = total + jnp.mean(diff @ head, axis=(1, 2))
        return total.reshape(leading)
