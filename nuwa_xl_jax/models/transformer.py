"""diffusers' Transformer2DModel (continuous input) in Linen: the spatial self- and cross-attention
of
Stable Diffusion's UNet.

Names follow diffusers (``norm``, ``proj_in``, ``transformer_blocks_0/{norm1, attn1, norm2, attn2,
norm3, ff/net_0/proj, ff/net_2}``, ``proj_out``) so SD weights load by a rename and a transpose.
Numerics follow diffusers too: GroupNorm eps 1e-6 on the input, LayerNorms eps 1e-5, exact-erf
GEGLU with a 4x inner width, attention projections without bias.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from nuwa_xl_jax.models.layers import Attention, Dtype, conv2d, dense, group_norm, layer_norm


class GEGLUFeedForward(nn.Module):
    """``net_0/proj`` to twice the inner width, ``value * gelu(gate)``, then ``net_2`` back."""
    dim: int
    mult: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        inner = self.dim * self.mult
        # diffusers' FeedForward.net is a ModuleList: net.0 = GEGLU (holding .proj), net.2 = Linear.
        h = _GEGLU(inner, dtype=self.dtype, name="net_0")(x)
        return dense(self.dim, axes=("mlp", "embed"), dtype=self.dtype, name="net_2")(h)


class _GEGLU(nn.Module):
    """One Linear to ``2 * inner``; the first half is the value, the second the (erf-GELU) gate."""
    inner: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = dense(2 * self.inner, axes=("embed", "mlp"), dtype=self.dtype, name="proj")(x)
        value, gate = jnp.split(h, 2, axis=-1)
        return value * nn.gelu(gate, approximate=False)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention to ``context``, GEGLU feed-forward; each
    residual."""
    dim: int
    heads: int
    head_dim: int
    dtype: Dtype = jnp.float32
    attention: str = "xla"  # the implementation (layers.attend)

    @nn.compact
    def __call__(self, x, context):
        h = layer_norm(1e-5, name="norm1", dtype=self.dtype)(x)
        x = x + Attention(self.heads, self.head_dim, self.dim, dtype=self.dtype,
                          implementation=self.attention, name="attn1")(h)
        h = layer_norm(1e-5, name="norm2", dtype=self.dtype)(x)
        x = x + Attention(self.heads, self.head_dim, self.dim, dtype=self.dtype,
                          implementation=self.attention, name="attn2")(h, context)
        h = layer_norm(1e-5, name="norm3", dtype=self.dtype)(x)
        return x + GEGLUFeedForward(self.dim, dtype=self.dtype, name="ff")(h)


class Transformer2D(nn.Module):
    """GroupNorm, ``proj_in`` (1x1 conv, or linear when ``use_linear_projection``), one
    BasicTransformerBlock over the H*W tokens of each image, ``proj_out``, residual.

    ``x`` is ``[N, H, W, C]``; ``context`` is ``[N, T, D]`` (N images, each with its own prompt).
    """
    heads: int
    norm_groups: int = 32
    use_linear_projection: bool = False
    dtype: Dtype = jnp.float32
    attention: str = "xla"  # the implementation (layers.attend)

    @nn.compact
    def __call__(self, x, context):
        n, hgt, wid, c = x.shape
        head_dim = c // self.heads
        h = group_norm(self.norm_groups, 1e-6, name="norm")(x)
        if self.use_linear_projection:
            h = dense(c, axes=("embed", "mlp"), dtype=self.dtype, name="proj_in")(
                h.reshape(n, hgt * wid, c)
            )
        else:
            h = conv2d(c, kernel_size=1, dtype=self.dtype, name="proj_in")(h).reshape(
                n, hgt * wid, c
            )
        h = BasicTransformerBlock(
            c,
            self.heads,
            head_dim,
            dtype=self.dtype,
            attention=self.attention,
            name="transformer_blocks_0",
        )(h, context.astype(h.dtype))
        if self.use_linear_projection:
            h = dense(c, axes=("mlp", "embed"), dtype=self.dtype, name="proj_out")(h).reshape(
                n, hgt, wid, c
            )
        else:
            h = conv2d(c, kernel_size=1, dtype=self.dtype, name="proj_out")(
                h.reshape(n, hgt, wid, c)
            )
        return x + h.astype(x.dtype)
