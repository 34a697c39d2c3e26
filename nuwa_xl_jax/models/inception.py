"""The Inception-v3 that FID is computed with, in Flax Linen (eval only, a pure function of params).

This is the network of TensorFlow's original FID code (the 2015-12-05 Inception graph) as
pytorch-fid ports it: torchvision's Inception-v3 layout with four blocks changed the way the TF
graph
computes them -- the average pools in the A, C and first E blocks leave the zero padding out of the
average (``count_include_pad=False``) and the last E block pools with a max instead of an average.
The classifier has 1008 classes (the TF graph's), and FID reads the 2048-d global average pool.

Input: images ``[batch, height, width, 3]``, channels last, float in [0, 1] (pytorch-fid's
convention; :func:`images_from_uint8` and :func:`images_from_signed` convert our edges and our
model range). The network resizes them to 299x299 bilinearly (half-pixel centres, no antialias:
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``) and scales them to
[-1, 1], as pytorch-fid does.

Parameter names follow torchvision's (``Mixed_6b/branch7x7_2/conv/kernel``), so the importer in
:mod:`nuwa_xl_jax.weights.inception` is a rename plus a transpose. Batch norms are frozen: their
running mean and variance are parameters (``bn/mean``, ``bn/var``) so the whole network is one
``{"params": ...}`` tree.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's classifier (1000 ImageNet classes + 8 unused)
BN_EPS = 1e-3


def images_from_uint8(images) -> jax.Array:
    """uint8 pixels in [0, 255] -> float32 in [0, 1], the network's input."""
    return jnp.asarray(images, jnp.float32) / 255.0


def images_from_signed(images) -> jax.Array:
    """Pixels in [-1, 1] (the range inside our models) -> [0, 1], the network's input."""
    return (jnp.asarray(images, jnp.float32) + 1.0) * 0.5


def resize_bilinear(images: jax.Array, height: int, width: int) -> jax.Array:
    """``[..., h, w, c]`` -> ``[..., height, width, c]`` as torch's bilinear ``interpolate`` with
    ``align_corners=False`` and no antialias (the resize FID and FVD code applies)."""
    *lead, h, w, c = images.shape
    if (h, w) == (height, width):
        return images
    return jax.image.resize(images, (*lead, height, width, c), method="bilinear", antialias=False)


class FrozenBatchNorm(nn.Module):
    """Inference batch norm with the statistics as parameters: ``scale``, ``bias``, ``mean``,
    ``var``."""
    eps: float = BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.eps)) + bias


class BasicConv2d(nn.Module):
    """Conv (no bias) -> frozen batch norm (eps 1e-3) -> ReLU; torchvision's ``BasicConv2d``."""
    features: int
    kernel: Sequence[int] = (1, 1)
    strides: Sequence[int] = (1, 1)
    padding: Sequence[int] = (0, 0)  # symmetric (ph, pw), as torch's ``padding=``

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(self.features, tuple(self.kernel), strides=tuple(self.strides),
                    padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
        return nn.relu(FrozenBatchNorm(name="bn")(x))


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    """3x3, stride 1, padding 1, the padding left out of the average (TF's pool, FID's patch)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_same(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(64, name="branch1x1")(x)
        b5 = BasicConv2d(48, name="branch5x5_1")(x)
        b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = BasicConv2d(64, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv2d(192, name="branch1x1")(x)
        b7 = BasicConv2d(c7, name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(192, name="branch3x3_1")(x)
        b3 = BasicConv2d(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """``pool="avg"``: FIDInceptionE_1 (average pool without the padding); ``"max"``: E_2."""
    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(320, name="branch1x1")(x)
        b3 = BasicConv2d(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)],
                             axis=-1)
        bd = BasicConv2d(448, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)],
                             axis=-1)
        pooled = _max_pool_3x3_same(x) if self.pool == "max" else _avg_pool_3x3_same(x)
        bp = BasicConv2d(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """FID's Inception-v3. ``__call__(images)`` -> ``{"pool": [B, 2048], "logits": [B,
    num_classes]}``.

    ``images``: ``[B, H, W, 3]`` floats in [0, 1]. ``num_classes=0`` drops the classifier (FID
    needs only ``pool``). ``resize_input=False`` feeds the images at their own size (they must then
    be at least 75x75 for the strided stages). ``input_size`` is the side images are resized to:
    299 is FID's; a smaller one (>= 75) only makes smoke tests cheap and is not FID.
    """
    num_classes: int = NUM_CLASSES
    resize_input: bool = True
    input_size: int = INPUT_SIZE

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"FIDInceptionV3: images must be [batch, height, width, 3] (channels "
                             f"last, in [0, 1]); got shape {tuple(images.shape)}")
        x = images.astype(jnp.float32)
        if self.resize_input:
            x = resize_bilinear(x, self.input_size, self.input_size)
        if min(x.shape[1:3]) < 75:
            raise ValueError(f"FIDInceptionV3: images of {x.shape[1]}x{x.shape[2]} are too small "
                             "for the strided stages (at least 75x75); set resize_input=True "
                             f"and input_size >= 75 (FID: {INPUT_SIZE})")
        x = 2.0 * x - 1.0
        x = BasicConv2d(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv2d(80, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        pool = jnp.mean(x, axis=(1, 2))
        out = {"pool": pool}
        if self.num_classes:
            out["logits"] = nn.Dense(self.num_classes, name="fc")(pool)
        return out


def random_params(
    module: nn.Module, example: jax.ShapeDtypeStruct, seed: int = 0
) -> dict[str, Any]:
    """Random ``{"params": ...}`` for ``module`` without compiling its init (tests and random-weight
    metrics): He-scaled kernels, batch norms near identity with random statistics."""
    abstract = jax.eval_shape(module.init, jax.random.key(0), example)
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in traverse_util.flatten_dict(abstract["params"]).items():
        shape, name = leaf.shape, path[-1]
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif name == "scale":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name in ("bias", "mean"):
            value = 0.1 * rng.standard_normal(shape)
        elif name == "var":
            value = 0.5 + rng.uniform(size=shape)
        else:
            raise ValueError(f"random_params: no rule for parameter {'/'.join(path)}")
        flat[path] = value.astype(np.float32)
    return {"params": traverse_util.unflatten_dict(flat)}


def init_params(module: FIDInceptionV3, seed: int = 0) -> dict[str, Any]:
    """Random ``{"params": ...}`` of ``module`` (tests; real use loads the converted weights)."""
    return random_params(module, jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32),
                         seed)


def feature_fn(module: FIDInceptionV3, variables: dict, output: str = "pool"):
    """A jitted ``uint8 frames [n, H, W, 3] -> numpy [n, 2048]`` for
    :func:`nuwa_xl_jax.metrics.frechet.frame_statistics` (``output="logits"`` for the
    classifier)."""
    if output not in ("pool", "logits") or (output == "logits" and not module.num_classes):
        raise ValueError(f"feature_fn: output={output!r}; expected 'pool'"
                         + (" or 'logits'" if module.num_classes else " (this network has no fc)"))

    @jax.jit
    def apply(frames):
        return module.apply(variables, images_from_uint8(frames))[output]

    def fn(frames):
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            raise ValueError(f"FID feature_fn expects uint8 frames in [0, 255]; got {frames.dtype}")
        return np.asarray(apply(frames))

    return fn
