"""Temporal KL-VAE (T-KLVAE) of NUWA-XL: Stable Diffusion's AutoencoderKL inflated over time.

Structure and parameter names follow diffusers' ``AutoencoderKL`` (``encoder/down_blocks_0/
resnets_0/conv1``, ``encoder/mid_block/attentions_0/to_q``, ``quant_conv``, ...), so SD's weights
import by a rename and a transpose (nuwa_xl_jax/weights/vae.py). NUWA-XL's inflation adds

- a temporal 1-D conv after every 3x3 spatial conv (``conv_in_temporal``, ``conv1_temporal``,
  ``downsamplers_0/conv_temporal``, ...), Dirac-initialised; 1x1 convs (shortcuts,
  ``quant_conv``) get none: they mix channels only;
- a temporal self-attention after every spatial attention (``attentions_0_temporal``) whose output
  projection starts at zero.

So a freshly inflated model is exactly the image VAE applied frame by frame. Temporal padding at
the ends of a clip repeats the edge frame (layers.TemporalConv): any frame count F >= 1 works and a
static clip stays static. ``temporal=False`` builds the plain image VAE (same names, no temporal
layers).

Videos are ``[B, F, H, W, C]`` in [-1, 1]; spatial layers see ``[B*F, H, W, C]``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from nuwa_xl_jax.configuration.model import VAEConfig
from nuwa_xl_jax.models.layers import (
    Attention,
    Downsample,
    ResnetBlock,
    TemporalAttention,
    TemporalConv,
    Upsample,
    conv2d,
    group_norm,
)
from nuwa_xl_jax.models.remat import remat_wrapper

Dtype = Any

NORM_EPS = 1e-6  # SD's VAE uses 1e-6 in every GroupNorm
LOGVAR_RANGE = (-30.0, 20.0)


@flax.struct.dataclass
class DiagonalGaussian:
    """The encoder's posterior q(z|x) = N(mean, exp(logvar)), per latent element.

    A pytree, so it passes through jit. ``logvar`` is clipped to [-30, 20] like diffusers /
    LDM (keeps ``exp`` finite in bf16 and fp32).
    """
    mean: jax.Array
    logvar: jax.Array

    @classmethod
    def from_moments(cls, moments: jax.Array) -> "DiagonalGaussian":
        """Splits the last axis (2*C) into mean and logvar, clipping logvar."""
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean, jnp.clip(logvar, *LOGVAR_RANGE))

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    def sample(self, key: jax.Array) -> jax.Array:
        """Reparameterised sample: mean + std * eps (differentiable in mean and logvar)."""
        return self.mean + self.std * jax.random.normal(key, self.mean.shape, self.mean.dtype)

    def mode(self) -> jax.Array:
        return self.mean

    def kl(self) -> jax.Array:
        """KL(q || N(0, I)) summed over each frame's latent (h, w, c): shape ``[B, F]``.

        One frame plays the role of one LDM image sample, so LDM's ``kl_weight`` keeps its meaning.
        """
        per_element = jnp.square(self.mean) + jnp.exp(self.logvar) - 1.0 - self.logvar
        return 0.5 * jnp.sum(per_element, axis=(-3, -2, -1))


class MidBlockAttention(nn.Module):
    """diffusers' VAE mid-block attention: GroupNorm, one head over all H*W tokens, residual.

    ``layers.Attention`` shares this module's scope, so its projections sit directly under
    ``attentions_0`` (``attentions_0/to_q``) as in diffusers' state dict
    (layers.SpatialSelfAttention
    would nest them one level deeper).
    """
    channels: int
    norm_groups: int
    dtype: Dtype = jnp.float32

    def setup(self):
        self.group_norm = group_norm(self.norm_groups, NORM_EPS)
        self.attention = Attention(heads=1, head_dim=self.channels, out_features=self.channels,
                                   qkv_bias=True, dtype=self.dtype)
        nn.share_scope(self, self.attention)

    def __call__(self, x):
        n, h, w, c = x.shape
        y = self.attention(self.group_norm(x).reshape(n, h * w, c))
        return x + y.reshape(n, h, w, c).astype(x.dtype)


class MidBlock(nn.Module):
    """resnets_0 -> attentions_0 (+ attentions_0_temporal) -> resnets_1, at the lowest
    resolution."""
    channels: int
    norm_groups: int
    add_attention: bool = True
    temporal: bool = True
    temporal_kernel_size: int = 3
    temporal_attention_heads: int = 1
    dtype: Dtype = jnp.float32

    def _resnet(self, name):
        return ResnetBlock(self.channels, self.norm_groups, NORM_EPS, self.temporal,
                           self.temporal_kernel_size, dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, x, num_frames: int):
        x = self._resnet("resnets_0")(x, num_frames)
        if self.add_attention:
            x = MidBlockAttention(self.channels, self.norm_groups, self.dtype,
                                  name="attentions_0")(x)
            if self.temporal:
                x = TemporalAttention(heads=self.temporal_attention_heads, dtype=self.dtype,
                                      name="attentions_0_temporal")(x, num_frames)
        return self._resnet("resnets_1")(x, num_frames)


class _VAEModule(nn.Module):
    """Fields shared by the encoder and decoder: those of configuration.model.VAEConfig (its
    defaults and meanings; TKLVAE.from_config builds from one)."""
    in_channels: int
    out_channels: int
    latent_channels: int
    block_out_channels: Sequence[int]
    layers_per_block: int
    norm_num_groups: int
    mid_block_add_attention: bool
    temporal: bool
    temporal_kernel_size: int
    temporal_attention_heads: int
    dtype: Dtype = jnp.float32
    remat: str = "none"  # configuration.model.REMAT_POLICIES, applied to each block

    @nn.nowrap
    def _wrap(self, cls):
        """``cls`` rematerialised by the policy; the frame count (argument 2) stays static."""
        return remat_wrapper(self.remat, static_argnums=(2,))(cls)

    def _conv3x3(self, x, features, name, num_frames):
        """A spatial 3x3 conv followed (inflated) by its temporal sibling ``<name>_temporal``."""
        x = conv2d(features, dtype=self.dtype, name=name)(x)
        if self.temporal:
            x = TemporalConv(self.temporal_kernel_size, self.dtype, name=f"{name}_temporal")(
                x, num_frames)
        return x

    def _resnet(self, channels, name):
        return ResnetBlock(channels, self.norm_num_groups, NORM_EPS, self.temporal,
                           self.temporal_kernel_size, dtype=self.dtype, name=name)

    def _mid_block(self):
        return self._wrap(MidBlock)(self.block_out_channels[-1], self.norm_num_groups,
                        self.mid_block_add_attention, self.temporal, self.temporal_kernel_size,
                        self.temporal_attention_heads, self.dtype, name="mid_block")


class DownEncoderBlock(nn.Module):
    """diffusers' DownEncoderBlock2D: resnets, then (except the last level) a stride-2 conv."""
    channels: int
    num_layers: int
    add_downsample: bool
    norm_groups: int
    temporal: bool = True
    temporal_kernel_size: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, num_frames: int):
        for j in range(self.num_layers):
            x = ResnetBlock(self.channels, self.norm_groups, NORM_EPS, self.temporal,
                            self.temporal_kernel_size, dtype=self.dtype, name=f"resnets_{j}")(
                x, num_frames)
        if self.add_downsample:
            x = Downsample(self.channels, asymmetric_pad=True, temporal=self.temporal,
                           temporal_kernel_size=self.temporal_kernel_size, dtype=self.dtype,
                           name="downsamplers_0")(x, num_frames)
        return x


class UpDecoderBlock(nn.Module):
    """diffusers' UpDecoderBlock2D: resnets, then (except the last level) nearest x2 + conv."""
    channels: int
    num_layers: int
    add_upsample: bool
    norm_groups: int
    temporal: bool = True
    temporal_kernel_size: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, num_frames: int):
        for j in range(self.num_layers):
            x = ResnetBlock(self.channels, self.norm_groups, NORM_EPS, self.temporal,
                            self.temporal_kernel_size, dtype=self.dtype, name=f"resnets_{j}")(
                x, num_frames)
        if self.add_upsample:
            x = Upsample(self.channels, temporal=self.temporal,
                         temporal_kernel_size=self.temporal_kernel_size, dtype=self.dtype,
                         name="upsamplers_0")(x, num_frames)
        return x


class Encoder(_VAEModule):
    """Frames ``[B*F, H, W, in_channels]`` -> posterior moments ``[B*F, H/f, W/f, 2*latent]``."""

    @nn.compact
    def __call__(self, x, num_frames: int):
        widths = tuple(self.block_out_channels)
        x = self._conv3x3(x, widths[0], "conv_in", num_frames)
        for i, width in enumerate(widths):
            x = self._wrap(DownEncoderBlock)(width, self.layers_per_block, i < len(widths) - 1,
                                 self.norm_num_groups, self.temporal, self.temporal_kernel_size,
                                 self.dtype, name=f"down_blocks_{i}")(x, num_frames)
        x = self._mid_block()(x, num_frames)
        x = nn.silu(group_norm(self.norm_num_groups, NORM_EPS, name="conv_norm_out")(x))
        return self._conv3x3(x, 2 * self.latent_channels, "conv_out", num_frames)


class Decoder(_VAEModule):
    """Latents ``[B*F, h, w, latent]`` -> frames ``[B*F, h*f, w*f, out_channels]``."""

    @nn.compact
    def __call__(self, z, num_frames: int):
        widths = tuple(reversed(tuple(self.block_out_channels)))
        x = self._conv3x3(z, widths[0], "conv_in", num_frames)
        x = self._mid_block()(x, num_frames)
        for i, width in enumerate(widths):
            x = self._wrap(UpDecoderBlock)(width, self.layers_per_block + 1, i < len(widths) - 1,
                               self.norm_num_groups, self.temporal, self.temporal_kernel_size,
                               self.dtype, name=f"up_blocks_{i}")(x, num_frames)
        x = nn.silu(group_norm(self.norm_num_groups, NORM_EPS, name="conv_norm_out")(x))
        return self._conv3x3(x, self.out_channels, "conv_out", num_frames)


# init_from says where training starts, not what the network is; dtype is a name in the config,
# a jnp dtype here
_NETWORK_FIELDS = tuple(f for f in VAEConfig().to_dict() if f not in ("init_from", "dtype"))


class TKLVAE(_VAEModule):
    """The Temporal KL-VAE. Fields are those of ``configuration.model.VAEConfig``.

    ``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``); parameters are always fp32 and the
    posterior and decoded video are returned in fp32. ``remat`` rematerialises each encoder and
    decoder block in the backward pass.

    - ``apply(v, video, method="encode")`` -> ``(mean, logvar)``, each ``[B, F, H/f, W/f, C]``
      (unscaled latents, like diffusers' ``latent_dist``; multiply by ``scaling_factor`` for
      diffusion).
    - ``apply(v, latents, method="decode")`` -> video ``[B, F, H, W, out_channels]``.
    - ``apply(v, video, key)`` -> ``(reconstruction, mean, logvar)`` (the training forward; ``key``
      None decodes the posterior mean).
    """
    scaling_factor: float = VAEConfig.scaling_factor

    def setup(self):
        fields = dict(in_channels=self.in_channels, out_channels=self.out_channels,
                      latent_channels=self.latent_channels,
                      block_out_channels=tuple(self.block_out_channels),
                      layers_per_block=self.layers_per_block, norm_num_groups=self.norm_num_groups,
                      mid_block_add_attention=self.mid_block_add_attention,
                      temporal=self.temporal, temporal_kernel_size=self.temporal_kernel_size,
                      temporal_attention_heads=self.temporal_attention_heads, dtype=self.dtype,
                      remat=self.remat)
        self.encoder = Encoder(**fields)
        self.decoder = Decoder(**fields)
        self.quant_conv = conv2d(2 * self.latent_channels, kernel_size=1, dtype=self.dtype)
        self.post_quant_conv = conv2d(self.latent_channels, kernel_size=1, dtype=self.dtype)

    @nn.nowrap
    def downsampling_factor(self) -> int:
        return 2 ** (len(tuple(self.block_out_channels)) - 1)

    @nn.nowrap
    def to_config(self) -> VAEConfig:
        """The typed ``model.vae`` block that rebuilds this module (see :meth:`from_config`)."""
        return VAEConfig(**{f: getattr(self, f) for f in _NETWORK_FIELDS},
                         dtype=jnp.dtype(self.dtype).name)

    @classmethod
    def from_config(cls, cfg: Any, dtype: Any = None) -> "TKLVAE":
        """The module for a :class:`~nuwa_xl_jax.configuration.model.VAEConfig`; a ConfigDict or
        plain dict block is first validated into one (``VAEConfig.from_dict``). ``dtype``, when
        given, overrides the block's compute dtype."""
        cfg = VAEConfig.from_dict(cfg)
        return cls(**{f: getattr(cfg, f) for f in _NETWORK_FIELDS},
                   dtype=jnp.dtype(cfg.dtype if dtype is None else dtype))

    @nn.nowrap
    def _check_video(self, x, name: str, channels: int, spatial_factor: int):
        expected = f"[batch, frames, height, width, {channels}]"
        if getattr(x, "ndim", None) != 5:
            raise ValueError(f"{name} must be a 5-D array {expected}, got shape "
                             f"{tuple(getattr(x, 'shape', ()))}; a single clip needs a batch axis "
                             f"and a single image needs a frame axis")
        b, f, h, w, c = x.shape
        if c != channels:
            raise ValueError(f"{name} must have {channels} channels in its last axis {expected}, "
                             f"got shape {tuple(x.shape)}")
        if min(b, f, h, w) < 1:
            raise ValueError(f"{name} has an empty axis: shape {tuple(x.shape)}")
        if h % spatial_factor or w % spatial_factor:
            raise ValueError(f"{name} height and width must be divisible by the VAE's downsampling "
                             f"factor {spatial_factor}, got {h}x{w}")

    def encode(self, video) -> tuple[jax.Array, jax.Array]:
        """Video ``[B, F, H, W, 3]`` in [-1, 1] -> posterior ``(mean, logvar)`` ``[B, F, h, w,
        C]``."""
        self._check_video(video, "video", self.in_channels, self.downsampling_factor())
        b, f, h, w, c = video.shape
        frames = jnp.asarray(video).reshape(b * f, h, w, c)
        moments = self.quant_conv(self.encoder(frames, f)).astype(jnp.float32)
        posterior = DiagonalGaussian.from_moments(moments.reshape(b, f, *moments.shape[1:]))
        return posterior.mean, posterior.logvar

    def decode(self, latents) -> jax.Array:
        """Latents ``[B, F, h, w, C]`` (unscaled) -> video ``[B, F, h*f, w*f, 3]``, fp32."""
        self._check_video(latents, "latents", self.latent_channels, 1)
        b, f, h, w, c = latents.shape
        z = self.post_quant_conv(jnp.asarray(latents).reshape(b * f, h, w, c))
        frames = self.decoder(z, f).astype(jnp.float32)
        return frames.reshape(b, f, *frames.shape[1:])

    def __call__(self, video, key: Optional[jax.Array] = None):
        mean, logvar = self.encode(video)
        posterior = DiagonalGaussian(mean, logvar)
        z = posterior.mode() if key is None else posterior.sample(key)
        return self.decode(z), mean, logvar


def is_temporal_param(path: str) -> bool:
    """True for parameters NUWA-XL adds to the image VAE (``.../<name>_temporal/...``)."""
    return any(part.endswith("_temporal") for part in path.split("/"))
