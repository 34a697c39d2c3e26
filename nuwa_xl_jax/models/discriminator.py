"""PatchGAN discriminator (LDM / taming's NLayerDiscriminator), applied to every frame.

Each output logit judges one overlapping patch of a frame (70x70 pixels for 3 layers), so the
adversarial term sharpens local texture without a global "realness" judgement. Frames are folded
into the batch: the T-KLVAE's adversarial loss is per frame, like the image VAE's it starts from.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def _conv(features, stride, use_bias, name, dtype):
    # taming's weights_init: conv weights ~ N(0, 0.02).
    return nn.Conv(
        features,
        (4, 4),
        strides=(stride, stride),
        padding=((1, 1), (1, 1)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.normal(0.02), (None, None, "conv_in", "conv_out")
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
        name=name,
    )


def _batch_norm(name):
    # taming's weights_init: BatchNorm scale ~ N(1, 0.02), bias 0.
    scale_init = lambda key, shape, dtype=jnp.float32: (
        1.0 + 0.02 * nn.initializers.normal(1.0)(key, shape, dtype)
    )
    return nn.BatchNorm(
        momentum=0.9,
        epsilon=1e-5,
        param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(scale_init, ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
        name=name,
    )


class NLayerDiscriminator(nn.Module):
    """conv(s2) -> [conv(s2) BN LReLU] x (n-1) -> conv(s1) BN LReLU -> conv(s1) to 1 logit per
    patch.

    Input ``[B, F, H, W, C]`` (or ``[N, H, W, C]``) in [-1, 1]; output logits of the same leading
    axes, ``[..., h, w, 1]``. BatchNorm statistics come from the batch when ``train`` (call with
    ``mutable=["batch_stats"]``) and from the running averages otherwise.
    """
    num_layers: int = 3
    channels: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        if x.ndim not in (4, 5):
            raise ValueError(
                f"discriminator input must be [batch, frames, height, width, channels] "
                f"or [batch, height, width, channels], got shape {tuple(x.shape)}"
            )
        leading = x.shape[:-3]
        h = x.reshape(-1, *x.shape[-3:])
        h = nn.leaky_relu(_conv(self.channels, 2, True, "conv_0", self.dtype)(h), 0.2)
        for n in range(1, self.num_layers + 1):
            width = self.channels * min(2 ** n, 8)
            stride = 2 if n < self.num_layers else 1
            h = _conv(width, stride, False, f"conv_{n}", self.dtype)(h)
            h = _batch_norm(f"norm_{n}")(h, use_running_average=not train)
            h = nn.leaky_relu(h, 0.2)
        logits = _conv(1, 1, True, f"conv_{self.num_layers + 1}", self.dtype)(h)
        return logits.astype(jnp.float32).reshape(*leading, *logits.shape[1:])
