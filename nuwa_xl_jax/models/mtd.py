"""Mask Temporal Diffusion (MTD) UNet: Stable Diffusion's UNet2DConditionModel, inflated for video.

Layout and parameter names are diffusers' (``conv_in``, ``time_embedding/linear_1``,
``down_blocks_0/resnets_0``, ``down_blocks_0/attentions_0/transformer_blocks_0/attn2``,
``mid_block``, ``up_blocks_1/upsamplers_0``, ``conv_norm_out``, ``conv_out``), so an SD UNet loads
by a rename and a transpose (nuwa_xl_jax/weights/unet.py). Inside every block layer the paper's
order is kept:

    spatial conv -> temporal conv (Dirac)      ResnetBlock, ``resnets_j/conv{1,2}_temporal``
    -> visual-condition injection               ``injections_j`` (zero-initialised scale/shift)
    -> spatial self-attention -> cross-attention to the frame's own prompt   ``attentions_j``
    -> temporal self-attention (zero out-proj)  ``attentions_j_temporal``

Every layer NUWA-XL adds is identity at init, so a fresh MTD is the image UNet frame by frame.
Choices the paper leaves open [ours]: the condition and mask cascades are per-frame conv stacks
(``cond_encoder`` with each block's width, ``mask_encoder`` with the first block's width) and the
scale/shift convs are 1x1; the injection sits after every resnet of a down / up block (not in the
mid block, which the paper's "every down and up block" does not name); a temporal attention follows
every spatial attention
(also in the mid block) with the spatial attention's number of heads; no temporal conv after
``conv_in`` / ``conv_out``; the level embedding is zero-initialised.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nuwa_xl_jax.configuration.model import MTDConfig, per_block
from nuwa_xl_jax.models.layers import (
    Downsample,
    Dtype,
    ResnetBlock,
    TemporalAttention,
    Upsample,
    conv2d,
    dense,
    group_norm,
    sinusoidal_embedding,
)
from nuwa_xl_jax.models.remat import remat_wrapper
from nuwa_xl_jax.models.transformer import Transformer2D

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# init_from says where training starts; dtype is a name in the config, a jnp dtype here
_NETWORK_FIELDS = tuple(f for f in MTDConfig().to_dict() if f not in ("init_from", "dtype"))


class ConditionCascade(nn.Module):
    """Per-frame conv stack bringing a map (condition latents or the mask) to resolutions
    ``1, 1/2, ..., 1/2**(levels-1)`` with ``widths[k]`` channels at level k."""
    widths: Sequence[int]
    levels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.silu(conv2d(self.widths[0], dtype=self.dtype, name="conv_in")(x))
        feats = []
        for k in range(self.levels):
            if k > 0:
                h = nn.silu(
                    conv2d(
                        self.widths[k],
                        stride=2,
                        padding=((1, 1), (1, 1)),
                        dtype=self.dtype,
                        name=f"downsample_{k}",
                    )(h)
                )
            h = nn.silu(conv2d(self.widths[k], dtype=self.dtype, name=f"conv_{k}")(h))
            feats.append(h)
        return feats


class ConditionInjection(nn.Module):
    """The paper's visual-condition injection, identity at init (all four convs start at zero):
    ``h = w_c*h + b_c + h``, then ``h = w_m*h + b_m + h``.

    The scale/shift convs are 1x1 [ours]: the cascades' 3x3 convs already give spatial context, and
    3x3 convs here would add ~680M parameters to SD's 860M UNet (1x1: ~76M)."""
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h, cond_feat, mask_feat):
        c = h.shape[-1]
        zconv = lambda name: conv2d(c, kernel_size=1, zero_init=True, dtype=self.dtype, name=name)
        h = zconv("cond_scale")(cond_feat) * h + zconv("cond_shift")(cond_feat) + h
        return zconv("mask_scale")(mask_feat) * h + zconv("mask_shift")(mask_feat) + h


class _BlockLayers(nn.Module):
    """Shared body of one block layer: injection, spatial transformer, temporal attention."""

    def inject_attend(self, j, h, context, cond_feat, mask_feat):
        if cond_feat is not None:
            h = ConditionInjection(self.dtype, name=f"injections_{j}")(h, cond_feat, mask_feat)
        if self.cross_attention:
            h = Transformer2D(self.heads, self.norm_groups, self.use_linear_projection, self.dtype,
                              self.attention, name=f"attentions_{j}")(h, context)
            if self.temporal:
                h = TemporalAttention(self.heads, dtype=self.dtype, attention=self.attention,
                                      name=f"attentions_{j}_temporal")(h, self.num_frames)
        return h


class DownBlock(_BlockLayers):
    """CrossAttnDownBlock2D (``cross_attention``) or DownBlock2D. Returns (h, skips)."""
    out_channels: int
    num_layers: int
    num_frames: int
    cross_attention: bool
    add_downsample: bool
    heads: int = 8
    norm_groups: int = 32
    norm_eps: float = 1e-5
    use_linear_projection: bool = False
    temporal: bool = True
    temporal_kernel_size: int = 3
    dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, h, temb, context, cond_feat=None, mask_feat=None):
        skips = []
        for j in range(self.num_layers):
            h = ResnetBlock(self.out_channels, self.norm_groups, self.norm_eps, self.temporal,
                            self.temporal_kernel_size, dtype=self.dtype, name=f"resnets_{j}")(
                                h, self.num_frames, temb)
            h = self.inject_attend(j, h, context, cond_feat, mask_feat)
            skips.append(h)
        if self.add_downsample:
            h = Downsample(self.out_channels, temporal=self.temporal,
                           temporal_kernel_size=self.temporal_kernel_size, dtype=self.dtype,
                           name="downsamplers_0")(h, self.num_frames)
            skips.append(h)
        return h, tuple(skips)


class UpBlock(_BlockLayers):
    """CrossAttnUpBlock2D (``cross_attention``) or UpBlock2D; each layer first concatenates the
    latest skip (``[h, skip]`` on channels, as diffusers does)."""
    out_channels: int
    num_layers: int
    num_frames: int
    cross_attention: bool
    add_upsample: bool
    heads: int = 8
    norm_groups: int = 32
    norm_eps: float = 1e-5
    use_linear_projection: bool = False
    temporal: bool = True
    temporal_kernel_size: int = 3
    dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, h, skips, temb, context, cond_feat=None, mask_feat=None):
        for j in range(self.num_layers):
            h = jnp.concatenate([h, skips[-1 - j].astype(h.dtype)], axis=-1)
            h = ResnetBlock(self.out_channels, self.norm_groups, self.norm_eps, self.temporal,
                            self.temporal_kernel_size, dtype=self.dtype, name=f"resnets_{j}")(
                                h, self.num_frames, temb)
            h = self.inject_attend(j, h, context, cond_feat, mask_feat)
        if self.add_upsample:
            h = Upsample(self.out_channels, temporal=self.temporal,
                         temporal_kernel_size=self.temporal_kernel_size, dtype=self.dtype,
                         name="upsamplers_0")(h, self.num_frames)
        return h


class MidBlock(_BlockLayers):
    """UNetMidBlock2DCrossAttn: resnet, transformer (+ temporal attention), resnet."""
    out_channels: int
    num_frames: int
    heads: int = 8
    norm_groups: int = 32
    norm_eps: float = 1e-5
    use_linear_projection: bool = False
    temporal: bool = True
    temporal_kernel_size: int = 3
    dtype: Dtype = jnp.float32
    attention: str = "auto"
    cross_attention: bool = True

    @nn.compact
    def __call__(self, h, temb, context):
        res = lambda name: ResnetBlock(
            self.out_channels,
            self.norm_groups,
            self.norm_eps,
            self.temporal,
            self.temporal_kernel_size,
            dtype=self.dtype,
            name=name,
        )
        h = res("resnets_0")(h, self.num_frames, temb)
        h = self.inject_attend(0, h, context, None, None)
        return res("resnets_1")(h, self.num_frames, temb)


class MTDUNet(nn.Module):
    """The MTD denoiser. ``apply(variables, x_t, t, text, cond, mask, level=None)``:

    x_t ``[B, F, h, w, c]`` noisy latents; t ``[B]`` or ``[B, F]`` (per-frame noise levels); text
    ``[B, F, T, D]`` (frame i cross-attends only to prompt i); cond ``[B, F, h, w, c]`` latents of
    the given frames (zeros elsewhere); mask ``[B, F]`` (1 = given); level ``[B]`` ints when
    ``num_levels > 0``. Returns ``[B, F, h, w, out_channels]`` in float32.

    The condition cascades depend only on (cond, mask), which a sampler keeps fixed over all its
    steps: ``apply(variables, cond, mask, method="condition")`` computes them once, and
    ``apply(variables, x_t, t, text, level=level, features=...)`` runs the UNet on them (same
    result as passing cond and mask).
    """
    # The fields of configuration.model.MTDConfig (its defaults and meanings; built with
    # from_config), less init_from, with dtype a jnp dtype.
    in_channels: int
    out_channels: int
    block_out_channels: Sequence[int]
    layers_per_block: int
    down_block_types: Sequence[str]
    up_block_types: Sequence[str]
    attention_head_dim: Any  # SD v1 meaning: heads per block (int or one per block)
    cross_attention_dim: int
    use_linear_projection: bool
    norm_num_groups: int
    norm_eps: float
    flip_sin_to_cos: bool
    freq_shift: float
    temporal: bool
    temporal_kernel_size: int
    condition_injection: str
    condition_symmetric: bool
    num_levels: int
    dtype: Dtype
    remat: str  # one of REMAT_POLICIES
    attention: (
        str  # layers.attend: 'auto' = cuDNN flash on NVIDIA GPUs, splash on TPU, where they apply
    )

    @classmethod
    def from_config(cls, cfg) -> "MTDUNet":
        """The module for a :class:`~nuwa_xl_jax.configuration.model.MTDConfig`; a ConfigDict or
        plain dict block (e.g. a converted checkpoint's ``config.json``) is first validated into
        one (``MTDConfig.from_dict``)."""
        cfg = MTDConfig.from_dict(cfg)
        kw = {f: getattr(cfg, f) for f in _NETWORK_FIELDS}
        return cls(**kw, dtype=_DTYPES[cfg.dtype])

    def to_config(self) -> MTDConfig:
        """The typed ``model.mtd`` block that rebuilds this module (inverse of
        :meth:`from_config`)."""
        return MTDConfig(**{f: getattr(self, f) for f in _NETWORK_FIELDS},
                         dtype=jnp.dtype(self.dtype).name)

    # ----------------------------------------------------------------------------- helpers
    def injected_levels(self) -> tuple[set, set]:
        """Resolution levels (0 = highest) that get condition injection in down / up blocks."""
        levels = {"none": set(), "highest": {0},
                  "multiscale": set(range(len(self.block_out_channels)))}[self.condition_injection]
        return (levels if self.condition_symmetric else set()), levels

    def _check_inputs(self, x_t, t, text, cond, mask, level):
        def need(name, arr, ndim, what):
            if getattr(arr, "ndim", None) != ndim:
                raise ValueError(f"{name} must be {what} (rank {ndim}), got shape "
                                 f"{getattr(arr, 'shape', type(arr).__name__)}")
        need("x_t", x_t, 5, "[B, F, h, w, c]")
        need("text", text, 4, "[B, F, T, D]")
        need("cond", cond, 5, "[B, F, h, w, c]")
        need("mask", mask, 2, "[B, F]")
        b, f, h, w, c = x_t.shape
        for name, arr in (("text", text), ("cond", cond), ("mask", mask)):
            if arr.shape[0] != b:
                raise ValueError(f"{name} has batch {arr.shape[0]} but x_t has batch {b}")
            if arr.shape[1] != f:
                raise ValueError(f"{name} has {arr.shape[1]} frames but x_t has {f} frames; give "
                                 f"one {name} entry per frame")
        if c != self.in_channels:
            raise ValueError(
                f"x_t has {c} channels but the model expects in_channels={self.in_channels}"
            )
        if cond.shape != x_t.shape:
            raise ValueError(f"cond must have x_t's shape {x_t.shape} (condition latents, zeros "
                             f"where not given), got {cond.shape}")
        if text.shape[-1] != self.cross_attention_dim:
            raise ValueError(f"text has width {text.shape[-1]} but the model expects "
                             f"cross_attention_dim={self.cross_attention_dim}")
        factor = 2 ** (len(self.block_out_channels) - 1)
        if h % factor or w % factor:
            raise ValueError(f"x_t spatial size {h}x{w} is not divisible by {factor} "
                             f"(2**(number of down blocks - 1)); pad or resize the latents")
        t = jnp.asarray(t)
        if t.shape not in ((b,), (b, f)):
            raise ValueError(f"t must be [B]={(b,)} or [B, F]={(b, f)}, got shape {t.shape}")
        if self.num_levels > 0:
            if level is None:
                raise ValueError(
                    f"level ([B] ints in [0, {self.num_levels})) is required: the model "
                    f"was built with num_levels={self.num_levels}"
                )
            if jnp.shape(level) != (b,):
                raise ValueError(f"level must be [B]={(b,)}, got shape {jnp.shape(level)}")
        elif level is not None:
            raise ValueError("level was given but the model has num_levels=0 (no level embedding)")
        return t

    def _cascade_depth(self) -> int:
        """Resolutions the cascades reach: only as deep as the deepest injected one."""
        down_levels, up_levels = self.injected_levels()
        return max(down_levels | up_levels, default=-1) + 1

    def setup(self):
        # Defined here (not inline in __call__) so `condition` can run them alone.
        depth = self._cascade_depth()
        if depth:
            widths = tuple(self.block_out_channels)
            self.cond_encoder = ConditionCascade(widths, depth, self.dtype)
            # The mask is one bit per frame: a narrow cascade (the first block's width) suffices.
            self.mask_encoder = ConditionCascade((widths[0],) * len(widths), depth, self.dtype)

    def condition(self, cond, mask):
        """Condition and mask features, ``(cond_feats, mask_feats)``: one ``[B, F, h_k, w_k, c_k]``
        per injected resolution k, or ``()`` with no injection. Step-invariant: a sampler computes
        them once per call and passes them as ``features``."""
        if not self._cascade_depth():
            return ()
        if getattr(cond, "ndim", None) != 5 or getattr(mask, "ndim", None) != 2:
            raise ValueError(f"cond must be [B, F, h, w, c] and mask [B, F], got shapes "
                             f"{getattr(cond, 'shape', None)} and {getattr(mask, 'shape', None)}")
        b, f, hgt, wid, _ = cond.shape
        mask_map = jnp.broadcast_to(mask.reshape(b * f, 1, 1, 1).astype(self.dtype),
                                    (b * f, hgt, wid, 1))
        cond_feats = self.cond_encoder(cond.reshape(b * f, hgt, wid, -1).astype(self.dtype))
        mask_feats = self.mask_encoder(mask_map)
        unfold = lambda feats: tuple(a.reshape(b, f, *a.shape[1:]) for a in feats)
        return unfold(cond_feats), unfold(mask_feats)

    # ----------------------------------------------------------------------------- forward
    @nn.compact
    def __call__(self, x_t, t, text, cond=None, mask=None, level=None, features=None):
        if features is not None and cond is None:  # x_t stands in for cond in the shape checks
            cond, mask = x_t, jnp.zeros(jnp.shape(x_t)[:2])
        t = self._check_inputs(x_t, t, text, cond, mask, level)
        if features is None:
            features = self.condition(cond, mask)
        b, f, hgt, wid, _ = x_t.shape
        n = len(self.block_out_channels)
        widths = tuple(self.block_out_channels)
        heads = per_block(self.attention_head_dim, n)
        down_levels, up_levels = self.injected_levels()
        common = dict(norm_groups=self.norm_num_groups, norm_eps=self.norm_eps,
                      use_linear_projection=self.use_linear_projection, temporal=self.temporal,
                      temporal_kernel_size=self.temporal_kernel_size, dtype=self.dtype,
                      attention=self.attention)
        wrap = remat_wrapper(self.remat)

        # Frames fold into the batch for every spatial op; each frame keeps its own prompt and t.
        x = x_t.reshape(b * f, hgt, wid, -1)
        context = text.reshape(b * f, *text.shape[2:]).astype(self.dtype)
        t_frames = jnp.broadcast_to(t.reshape(b, -1), (b, f)).reshape(-1).astype(jnp.float32)

        t_emb = sinusoidal_embedding(t_frames, widths[0], flip_sin_to_cos=self.flip_sin_to_cos,
                                     freq_shift=self.freq_shift)
        temb = _TimeEmbedding(4 * widths[0], self.dtype, name="time_embedding")(t_emb)
        if self.num_levels > 0:
            lvl = nn.Embed(self.num_levels, 4 * widths[0], param_dtype=jnp.float32,
                           embedding_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                       ("vocab", "embed")),
                           name="level_embedding")(jnp.asarray(level, jnp.int32))
            temb = temb + jnp.repeat(lvl, f, axis=0).astype(temb.dtype)

        # Condition features per resolution (None past the cascades' depth), frames folded.
        cond_feats = mask_feats = [None] * n
        if features:
            fold = lambda feats: [a.reshape(b * f, *a.shape[2:]) for a in feats]
            cond_feats = fold(features[0]) + [None] * (n - len(features[0]))
            mask_feats = fold(features[1]) + [None] * (n - len(features[1]))

        h = conv2d(widths[0], dtype=self.dtype, name="conv_in")(x.astype(self.dtype))
        skips = [h]
        for i, ty in enumerate(self.down_block_types):
            on = i in down_levels
            h, s = wrap(DownBlock)(
                widths[i],
                self.layers_per_block,
                f,
                ty == "CrossAttnDownBlock2D",
                i < n - 1,
                heads[i],
                name=f"down_blocks_{i}",
                **common,
            )(h, temb, context, cond_feats[i] if on else None, mask_feats[i] if on else None)
            skips.extend(s)

        h = wrap(MidBlock)(widths[-1], f, heads[-1], name="mid_block", **common)(h, temb, context)

        for i, ty in enumerate(self.up_block_types):
            lv = n - 1 - i  # resolution level (and width index) of this up block
            on = lv in up_levels
            take = self.layers_per_block + 1
            block_skips, skips = tuple(skips[-take:]), skips[:-take]
            h = wrap(UpBlock)(widths[lv], take, f, ty == "CrossAttnUpBlock2D", i < n - 1, heads[lv],
                              name=f"up_blocks_{i}", **common)(
                h, block_skips, temb, context, cond_feats[lv] if on else None,
                mask_feats[lv] if on else None)

        h = nn.silu(group_norm(self.norm_num_groups, self.norm_eps, name="conv_norm_out")(h))
        h = conv2d(self.out_channels, dtype=self.dtype, name="conv_out")(h)
        return h.astype(jnp.float32).reshape(b, f, hgt, wid, self.out_channels)


class _TimeEmbedding(nn.Module):
    """diffusers' TimestepEmbedding: ``linear_1``, SiLU, ``linear_2``."""
    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = dense(self.features, dtype=self.dtype, name="linear_1")(x)
        return dense(self.features, dtype=self.dtype, name="linear_2")(nn.silu(h))
