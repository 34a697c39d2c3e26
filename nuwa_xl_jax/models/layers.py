"""Building blocks shared by the T-KLVAE and the MTD UNet.

Conventions (see docs/DESIGN.md):
- Spatial layers see frames folded into the batch: ``[B*F, H, W, C]``. Temporal layers take the
  same array plus ``num_frames`` and fold positions into the batch instead: ``[B*H*W, F, C]``.
- Submodule and parameter names follow diffusers (``conv1``, ``norm1``, ``to_q``, ``to_out_0``),
  so importing public weights is a rename and a transpose. Temporal siblings add a suffix
  (``conv1_temporal``, ``attentions_0_temporal``).
- New temporal layers are identity at init: Dirac temporal convs, zero output projections.
- Every parameter carries logical axis names (nuwa_xl_jax/parallel.py maps them to the mesh).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from nuwa_xl_jax.models import attention_fallback

Dtype = Any

_default_kernel = nn.initializers.lecun_normal()


def conv_kernel_init(base=_default_kernel, ndim: int = 2):
    return nn.with_logical_partitioning(base, (None,) * ndim + ("conv_in", "conv_out"))


def dense_kernel_init(base=_default_kernel, axes=("embed", "mlp")):
    return nn.with_logical_partitioning(base, axes)


def bias_init(axis: str = "norm"):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis,))


def zero_conv_kernel(ndim: int = 2):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                        (None,) * ndim + ("conv_in", "conv_out"))


def conv2d(features, kernel_size=3, stride=1, padding="SAME", zero_init=False, dtype=jnp.float32,
           name=None):
    """A plain ``nn.Conv`` whose params sit directly under ``name`` (``name/kernel``,
    ``name/bias``)."""
    return nn.Conv(
        features, (kernel_size, kernel_size), strides=(stride, stride), padding=padding,
        dtype=dtype, param_dtype=jnp.float32,
        kernel_init=zero_conv_kernel() if zero_init else conv_kernel_init(),
        bias_init=bias_init("conv_out"), name=name)


def dense(features, use_bias=True, zero_init=False, axes=("embed", "mlp"), dtype=jnp.float32,
          name=None):
    init = nn.initializers.zeros_init() if zero_init else _default_kernel
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=dense_kernel_init(init, axes), bias_init=bias_init(axes[-1]),
                    name=name)


def group_norm(groups: int, eps: float, name=None, dtype=jnp.float32):
    """GroupNorm matching torch's (two-pass variance, per-sample statistics over H, W, C/groups)."""
    return nn.GroupNorm(
        num_groups=groups,
        epsilon=eps,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        bias_init=bias_init("norm"),
        name=name,
    )


def layer_norm(eps: float = 1e-5, name=None, dtype=jnp.float32):
    return nn.LayerNorm(
        epsilon=eps,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        bias_init=bias_init("norm"),
        name=name,
    )


def dirac_init(key, shape, dtype=jnp.float32):
    """Identity temporal kernel ``[k, C, C]``: zeros except ``w[k // 2, i, i] = 1``."""
    k, cin, cout = shape
    if cin != cout:
        raise ValueError(f"Dirac init needs equal in/out channels, got {cin} -> {cout}")
    return jnp.zeros(shape, dtype).at[k // 2].set(jnp.eye(cin, dtype=dtype))


def fold_frames(x, num_frames: int):
    """``[B*F, H, W, C]`` -> ``[B*H*W, F, C]`` (positions into batch, for temporal ops)."""
    bf, h, w, c = x.shape
    x = x.reshape(bf // num_frames, num_frames, h, w, c).transpose(0, 2, 3, 1, 4)
    return x.reshape(-1, num_frames, c)


def unfold_frames(x, num_frames: int, h: int, w: int):
    """Inverse of :func:`fold_frames`."""
    c = x.shape[-1]
    x = x.reshape(-1, h, w, num_frames, c).transpose(0, 3, 1, 2, 4)
    return x.reshape(-1, h, w, c)


class TemporalConv(nn.Module):
    """1-D conv over frames at every spatial position, Dirac-initialised (identity at init).

    Temporal padding [ours]: the ends are padded by repeating the edge frame ("replicate"), so a
    static clip stays static after training and a single frame (F=1) is a valid video.
    """
    kernel_size: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, num_frames: int):
        _, h, w, c = x.shape
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(dirac_init, (None, "conv_in", "conv_out")),
            (self.kernel_size, c, c),
        )
        bias = self.param("bias", bias_init("conv_out"), (c,))
        y = fold_frames(x, num_frames)
        pad = self.kernel_size // 2
        y = jnp.pad(y, ((0, 0), (pad, self.kernel_size - 1 - pad), (0, 0)), mode="edge")
        y = jax.lax.conv_general_dilated(
            y.astype(self.dtype), kernel.astype(self.dtype), window_strides=(1,), padding="VALID",
            dimension_numbers=("NWC", "WIO", "NWC"))
        y = y + bias.astype(self.dtype)
        return unfold_frames(y, num_frames, h, w)


def sinusoidal_embedding(positions, dim: int, max_period: float = 10000.0,
                         flip_sin_to_cos: bool = True, freq_shift: float = 0.0):
    """Sinusoidal embedding of (possibly fractional) positions ``[N] -> [N, dim]``.

    Same formula as diffusers' ``get_timestep_embedding`` (used for timesteps, with
    ``flip_sin_to_cos=True, freq_shift=0`` as in Stable Diffusion's UNet).
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    args = jnp.asarray(positions, jnp.float32)[:, None] * jnp.exp(exponent)[None]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")

# Mesh axes the splash kernel is shard_mapped over (the batch axes of parallel.batch_sharding).
SPLASH_BATCH_AXES = ("data", "fsdp")
_SPLASH_LANES = 128  # TPU lane width: splash's kv blocks (and our padded head dims) are multiples
_SPLASH_BLOCKS = (512, 256, 128)  # the largest that divides the 128-padded length is taken


def _on_nvidia_gpu() -> bool:
    device = jax.devices()[0]
    return device.platform == "gpu" and "rocm" not in device.client.platform_version.lower()


def _on_tpu() -> bool:
    return jax.devices()[0].platform == "tpu"


def _pallas_interpret() -> bool:
    """Pallas kernels run in its interpreter wherever the real backend is not a TPU. Tests that
    lower for 'tpu' from CPU patch this, so the real Mosaic kernel is lowered."""
    return jax.devices()[0].platform != "tpu"


def _cuda_compute_capability() -> tuple[int, int]:
    """The first device's CUDA compute capability, e.g. ``(9, 0)`` on Hopper; ``(0, 0)`` off
    NVIDIA GPUs. Tests patch this (with JAX's own probes) to trace for a GPU on CPU."""
    if not _on_nvidia_gpu():
        return (0, 0)
    major, minor = str(jax.devices()[0].compute_capability).split(".")[:2]
    return int(major), int(minor)


def cudnn_max_head_dim() -> int:
    """The largest head dim cuDNN's flash attention takes: 256 from Hopper (sm90) on, else 128."""
    return 256 if _cuda_compute_capability() >= (9, 0) else 128


def cudnn_applies(head_dim: int, dtype, mask, max_head_dim: Optional[int] = None) -> bool:
    """Whether cuDNN's fused (flash) attention takes these inputs: bf16/fp16, a head dim that is a
    multiple of 8 up to ``max_head_dim`` (None: :func:`cudnn_max_head_dim` of this GPU; SD's 40
    and 80 everywhere, its 160 from Hopper on), no explicit mask. Any sequence lengths: odd ones
    are padded by one and masked (:func:`cudnn_attention`)."""
    max_head_dim = cudnn_max_head_dim() if max_head_dim is None else max_head_dim
    return (jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
            and head_dim % 8 == 0 and head_dim <= max_head_dim and mask is None)


_CUDNN_REFUSED: set = set()  # shapes cuDNN refused, each logged once


def cudnn_attention(q, k, v):
    """``[N, S, H, D]`` attention through cuDNN's flash kernel.

    JAX's cuDNN wrapper always passes a (placeholder) bias, and with a bias the backward pass
    needs even query and key lengths: an odd length (77 prompt tokens) is padded by one token and
    the real lengths are passed (cuDNN's padding mask), so training works at any length; padded
    queries are cut. Where JAX's checks still refuse a shape (a newer rule, say), this falls back
    to XLA with one log line per shape."""
    q_len, kv_len = q.shape[1], k.shape[1]
    kw = {}
    if q_len % 2 or kv_len % 2:
        pad = lambda t: jnp.pad(t, ((0, 0), (0, t.shape[1] % 2), (0, 0), (0, 0)))
        q, k, v = pad(q), pad(k), pad(v)
        # Lengths computed from q's values, so that under vmap they are batched like q (JAX's
        # batching rule reshapes them to the batched size); the value is the constant length.
        like_q = jnp.isnan(q[:, 0, 0, 0])
        kw = dict(query_seq_lengths=jnp.where(like_q, q_len, q_len).astype(jnp.int32),
                  key_value_seq_lengths=jnp.where(like_q, kv_len, kv_len).astype(jnp.int32))
    try:
        out = jax.nn.dot_product_attention(q, k, v, implementation="cudnn", **kw)
    except NotImplementedError as e:  # JAX's shape rules for the kernel (trace time)
        key = (q.shape, k.shape, str(q.dtype))
        if key not in _CUDNN_REFUSED:
            _CUDNN_REFUSED.add(key)
            logging.warning("cuDNN attention refused q %s, k %s (%s): XLA attention instead",
                            q.shape, k.shape, e)
        out = jax.nn.dot_product_attention(q, k, v, implementation="xla", **kw)
    return out[:, :q_len]


def splash_supports(dtype, mask) -> bool:
    """Whether :func:`splash_attention` computes these inputs exactly (up to rounding): bf16 or fp32
    and no explicit mask. Any sequence lengths and head dims: both are zero-padded to multiples of
    128 and padded keys are masked out (segment ids), so padding never changes the result."""
    return jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)) and mask is None


def splash_applies(q_len: int, dtype, mask) -> bool:
    """Whether ``'auto'`` takes splash on a TPU: :func:`splash_supports` and at least one full
    128-row query block (``q_len >= 128``). Shorter query sequences (the temporal attention over
    a few frames, the smallest spatial maps) stay on XLA: padding them to a block would multiply
    the work. Short key sequences (77 prompt tokens) are padded and masked."""
    return splash_supports(dtype, mask) and q_len >= _SPLASH_LANES


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def splash_block(length: int) -> tuple[int, int]:
    """``(block, padded_length)`` for a sequence: the length is padded to a multiple of 128 (never
    more) and the block is the largest of 512 / 256 / 128 that divides it."""
    padded = _round_up(length, _SPLASH_LANES)
    return next(b for b in _SPLASH_BLOCKS if padded % b == 0), padded


def _splash_local(q, k, v, interpret: bool):
    """Splash on one device's ``[N, S, H, D]`` arrays (already scaled and head-dim padded)."""
    # Deferred: the Pallas TPU kernels, imported only where splash attention runs.
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
    heads, q_len, kv_len = q.shape[2], q.shape[1], k.shape[1]
    bq, q_pad = splash_block(q_len)
    bkv, kv_pad = splash_block(kv_len)
    seq = lambda t, n: jnp.pad(t, ((0, 0), (0, n - t.shape[1]), (0, 0), (0, 0))).transpose(
        0, 2, 1, 3
    )
    q, k, v = seq(q, q_pad), seq(k, kv_pad), seq(v, kv_pad)  # [N, H, S, D] as splash wants
    segment_ids = None
    if kv_pad != kv_len:  # padded keys get segment 0, every query (padded ones too) segment 1
        segment_ids = kernel.SegmentIds(q=jnp.ones((q_pad,), jnp.int32),
                                        kv=(jnp.arange(kv_pad) < kv_len).astype(jnp.int32))
    sizes = kernel.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv,
                              block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
                              block_q_dq=bq, block_kv_dq=bkv)
    full = masks.MultiHeadMask([masks.FullMask((q_pad, kv_pad))] * heads)
    splash = kernel.make_splash_mha(full, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                    interpret=interpret)
    out = jax.vmap(splash, in_axes=(0, 0, 0, None))(q, k, v, segment_ids)  # over examples
    return out.transpose(0, 2, 1, 3)[:, :q_len]


def splash_attention(q, k, v, interpret: Optional[bool] = None):
    """``[N, S, H, D]`` attention through Pallas' TPU splash kernel (what MaxText and MaxDiffusion
    use on TPU); equal to :func:`attend`'s XLA path up to rounding.

    - Scale: the kernel does not scale logits, so ``q`` is multiplied by ``1/sqrt(D)`` first.
    - Head dim: zero-padded to a multiple of 128 (SD's 40 and 80 -> 128, 160 -> 256; zero columns
      add nothing to ``q.k`` and give zero output columns, which are cut), as MaxDiffusion pads
      below 128: the TPU's lane width.
    - Sequences: padded to a multiple of 128 (see :func:`splash_block`); padded keys are masked
      with segment ids, padded queries are computed and cut.
    - Sharding: inside a mesh context (``jax.set_mesh(mesh)``) whose :data:`SPLASH_BATCH_AXES`
      divide ``N``, the kernel runs under ``jax.shard_map`` over those axes (each device its own
      examples, replicated over any other axis), as MaxDiffusion wraps it. Without a mesh context
      the traced function cannot know the mesh; a Pallas TPU call has no partitioning rule, so
      under ``jax.jit`` with a batch-sharded input XLA is expected to gather the batch to every
      device (what it does with the interpreted kernel on CPU): correct, but the work is not
      split. ``'auto'`` therefore takes splash on several devices only inside such a mesh.
    - ``interpret``: run the kernel in Pallas' interpreter (None: wherever the backend is not a
      TPU), which is how it is tested on CPU.
    """
    if interpret is None:
        interpret = _pallas_interpret()
    n, _, _, head_dim = q.shape
    dtype = q.dtype
    q = (q.astype(jnp.float32) * (1.0 / math.sqrt(head_dim))).astype(dtype)
    d_pad = _round_up(head_dim, _SPLASH_LANES) - head_dim
    if d_pad:
        pad = lambda t: jnp.pad(t, ((0, 0),) * 3 + ((0, d_pad),))
        q, k, v = pad(q), pad(k), pad(v)
    local = lambda q, k, v: _splash_local(q, k, v, interpret)
    axes = splash_shard_axes(n)
    if axes:
        spec = jax.sharding.PartitionSpec(axes)
        local = jax.shard_map(local, mesh=jax.sharding.get_abstract_mesh(), in_specs=(spec,) * 3,
                              out_specs=spec, check_vma=False)
    return local(q, k, v)[..., :head_dim]


def splash_shard_axes(n: int) -> Optional[tuple[str, ...]]:
    """The context mesh's (``jax.set_mesh``) :data:`SPLASH_BATCH_AXES` of size > 1, when their
    product divides the batch ``n``: the axes :func:`splash_attention` shard_maps over. None
    without a mesh context, without such axes, or when they do not divide ``n``."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None
    axes = tuple(a for a in SPLASH_BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
    if not axes or n % math.prod(mesh.shape[a] for a in axes):
        return None
    return axes


def attend(q, k, v, mask=None, implementation: str = "xla"):
    """``[N, S, H, D]`` multi-head attention.

    ``"xla"``: ``jax.nn.dot_product_attention``'s XLA ops (every backend; on CPU the only one).
    ``"cudnn"``: cuDNN's fused flash kernel (NVIDIA GPUs; an error where it does not apply).
    ``"splash"``: Pallas' TPU splash kernel (:func:`splash_attention`; an error off a TPU or where
    :func:`splash_supports` is false). ``"auto"``: cuDNN on an NVIDIA GPU where
    :func:`cudnn_applies` (unless a compile-time fallback is tracing: models/
    attention_fallback.py), splash on a TPU where :func:`splash_applies` and the kernel's work
    is split over the devices (one device, or a context mesh whose batch axes divide ``N``: see
    :func:`splash_shard_axes`), else XLA."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}; use one of "
                         f"{ATTENTION_IMPLEMENTATIONS}")
    fits = cudnn_applies(q.shape[-1], q.dtype, mask)
    if implementation == "auto":
        if fits and _on_nvidia_gpu() and not attention_fallback.xla_only_active():
            implementation = "cudnn"
        elif (_on_tpu() and splash_applies(q.shape[1], q.dtype, mask)
              and (jax.device_count() == 1 or splash_shard_axes(q.shape[0]))):
            implementation = "splash"
        else:
            implementation = "xla"
    elif implementation == "cudnn" and not (fits and _on_nvidia_gpu()):
        raise ValueError(
            f"attention='cudnn' needs an NVIDIA GPU, bf16/fp16 inputs, a head dim that is "
            f"a multiple of 8 up to {cudnn_max_head_dim()} and no mask; got "
            f"{jax.devices()[0].platform}, "
            f"{q.dtype}, head dim {q.shape[-1]}, mask {mask is not None}: use 'auto'"
        )
    elif implementation == "splash" and not (_on_tpu() and splash_supports(q.dtype, mask)):
        raise ValueError(f"attention='splash' (model.mtd.attention) needs a TPU, bf16/fp32 inputs "
                         f"and no mask; got {jax.devices()[0].platform}, {q.dtype}, mask "
                         f"{mask is not None}: set model.mtd.attention='auto' (splash on TPU where "
                         "it applies, else XLA) or 'xla'")
    if implementation == "splash":
        return splash_attention(q, k, v)
    if implementation == "cudnn":
        return cudnn_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


class Attention(nn.Module):
    """Multi-head attention with diffusers' names (``to_q``, ``to_k``, ``to_v``, ``to_out_0``).

    ``x`` is ``[N, S, C]``; ``context`` (cross-attention) is ``[N, T, D]`` or None (self-attention).
    ``implementation``: see :func:`attend`.
    """
    heads: int
    head_dim: int
    out_features: int
    qkv_bias: bool = False
    zero_out: bool = False
    dtype: Dtype = jnp.float32
    implementation: str = "xla"

    @nn.compact
    def __call__(self, x, context=None, mask=None):
        context = x if context is None else context
        inner = self.heads * self.head_dim
        q = dense(inner, self.qkv_bias, axes=("embed", "heads"), dtype=self.dtype, name="to_q")(x)
        k = dense(inner, self.qkv_bias, axes=("embed", "heads"), dtype=self.dtype, name="to_k")(
            context
        )
        v = dense(inner, self.qkv_bias, axes=("embed", "heads"), dtype=self.dtype, name="to_v")(
            context
        )
        split = lambda t: t.reshape(*t.shape[:-1], self.heads, self.head_dim)
        out = attend(split(q), split(k), split(v), mask, self.implementation)
        out = out.reshape(*out.shape[:-2], inner)
        return dense(self.out_features, True, zero_init=self.zero_out, axes=("heads", "embed"),
                     dtype=self.dtype, name="to_out_0")(out)


class SpatialSelfAttention(nn.Module):
    """The VAE mid-block attention: GroupNorm, one attention over H*W tokens, residual."""
    norm_groups: int = 32
    eps: float = 1e-6
    head_dim: Optional[int] = None  # None = one head over all channels (SD's VAE)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        head_dim = self.head_dim or c
        y = group_norm(self.norm_groups, self.eps, name="group_norm")(x).reshape(n, h * w, c)
        y = Attention(c // head_dim, head_dim, c, qkv_bias=True, dtype=self.dtype)(y)
        return x + y.reshape(n, h, w, c).astype(x.dtype)


class TemporalAttention(nn.Module):
    """Self-attention over frames at every spatial position; identity at init (zero out-projection).

    LayerNorm, then a sinusoidal frame-position encoding added to queries' and keys' input so the
    layer knows frame order for any frame count [ours], multi-head attention, residual.
    """
    heads: int = 1
    head_dim: Optional[int] = None
    eps: float = 1e-5
    dtype: Dtype = jnp.float32
    attention: str = "xla"  # the implementation (:func:`attend`)

    @nn.compact
    def __call__(self, x, num_frames: int):
        _, h, w, c = x.shape
        head_dim = self.head_dim or c // self.heads
        y = fold_frames(x, num_frames)
        y = layer_norm(self.eps, name="norm", dtype=self.dtype)(y)
        y = y + sinusoidal_embedding(jnp.arange(num_frames), c).astype(y.dtype)[None]
        y = Attention(self.heads, head_dim, c, qkv_bias=False, zero_out=True, dtype=self.dtype,
                      implementation=self.attention, name="attention")(y)
        return x + unfold_frames(y, num_frames, h, w).astype(x.dtype)


class ResnetBlock(nn.Module):
    """diffusers' ResnetBlock2D, inflated with a temporal conv after each spatial conv.

    ``temb`` (``[B*F, D]``) is added after ``conv1`` when given (UNet); the VAE passes None.
    """
    out_channels: int
    norm_groups: int = 32
    eps: float = 1e-6
    temporal: bool = True
    temporal_kernel_size: int = 3
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, num_frames: int, temb=None, deterministic: bool = True):
        h = nn.silu(group_norm(self.norm_groups, self.eps, name="norm1")(x))
        h = conv2d(self.out_channels, dtype=self.dtype, name="conv1")(h)
        if self.temporal:
            h = TemporalConv(self.temporal_kernel_size, self.dtype, name="conv1_temporal")(
                h, num_frames
            )
        if temb is not None:
            t = dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))
            h = h + t[:, None, None, :]
        h = nn.silu(group_norm(self.norm_groups, self.eps, name="norm2")(h))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = conv2d(self.out_channels, dtype=self.dtype, name="conv2")(h)
        if self.temporal:
            h = TemporalConv(self.temporal_kernel_size, self.dtype, name="conv2_temporal")(
                h, num_frames
            )
        if x.shape[-1] != self.out_channels:
            x = conv2d(self.out_channels, kernel_size=1, dtype=self.dtype, name="conv_shortcut")(x)
        return x + h


class Downsample(nn.Module):
    """Stride-2 conv. ``asymmetric_pad`` pads (0, 1) on H and W as SD's VAE does; else pad 1
    (UNet)."""
    out_channels: int
    asymmetric_pad: bool = False
    temporal: bool = True
    temporal_kernel_size: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, num_frames: int):
        if self.asymmetric_pad:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
            padding = "VALID"
        else:
            padding = ((1, 1), (1, 1))
        x = conv2d(self.out_channels, stride=2, padding=padding, dtype=self.dtype, name="conv")(x)
        if self.temporal:
            x = TemporalConv(self.temporal_kernel_size, self.dtype, name="conv_temporal")(
                x, num_frames
            )
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv (diffusers' Upsample2D)."""
    out_channels: int
    temporal: bool = True
    temporal_kernel_size: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, num_frames: int):
        n, h, w, c = x.shape
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = conv2d(self.out_channels, dtype=self.dtype, name="conv")(x)
        if self.temporal:
            x = TemporalConv(self.temporal_kernel_size, self.dtype, name="conv_temporal")(
                x, num_frames
            )
        return x
