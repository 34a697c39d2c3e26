"""Streaming windowed decoding of a long latent video with the T-KLVAE.

Why: a 3376-frame video at 256 px is ~660 MB of uint8 and far more as decoder activations, so it
is decoded in bounded windows and each window goes to the writer as it comes. The T-KLVAE decoder
mixes frames (temporal convs of kernel 3 after every spatial conv, and one temporal attention in
the mid block), so decoding windows independently would leave seams. Each call therefore decodes
``window`` frames plus ``context`` latent frames on each side and keeps only the middle.

- Temporal convs: an output frame depends on at most :func:`receptive_field` latent frames on each
  side. Padding artefacts at a call's edge move inward one frame per conv layer, so with
  ``context >= receptive_field`` the kept frames see exactly the features of whole-sequence
  decoding. At the true ends of the video the context is clamped and the decoder's own
  edge-replicate padding is what whole-sequence decoding does too, so the ends are exact as well.
- Temporal attention attends over every frame of the call, so a call of ``window + 2*context``
  frames differs from one over the whole video: the match is then approximate, not exact (the
  softmax weights of far frames are small and the context frames dominate nearby ones; the error
  is measured in tests/dod/test_decode.py and docs/generation.md).

Every call has the same length ``window + 2*context`` (one compile): windows near the end shift
their call to end at the last frame instead of padding with fake frames, which would change the
decoder's edge padding. A video no longer than one call is decoded in one call.

Generation (dod/runner.py) decodes with :func:`config_windows`: calls exactly as long as the
VAE's training clips, so its temporal attention never sees more positions than it was trained
on; the latent cache encodes MTD's training targets with the same calls.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator, Union

import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.dod import memory
from nuwa_xl_jax.dod.compiled import program_bytes
from nuwa_xl_jax.models import windows


def receptive_field(vae_config) -> int:
    """Latent frames on each side of a frame that the decoder's temporal convs reach.

    Counts the decoder's temporal convs (conv_in, the mid block's two resnets, every up block's
    ``layers_per_block + 1`` resnets and upsampler, conv_out) times the one-sided reach of the
    kernel. The temporal attention is global and not counted (see module doc). SD-size: 33; the
    tiny test VAE: 20. 0 for an image VAE (``temporal=False``).
    """
    if not vae_config.temporal:
        return 0
    k = int(vae_config.temporal_kernel_size)
    reach = max(k // 2, k - 1 - k // 2)
    blocks = len(tuple(vae_config.block_out_channels))
    convs = (1                                                   # conv_in
             + 2 * 2                                             # mid block: resnets_0, resnets_1
             + blocks * (vae_config.layers_per_block + 1) * 2    # up blocks' resnets
             + (blocks - 1)                                      # upsamplers
             + 1)                                                # conv_out
    return convs * reach


def config_windows(config) -> tuple[int, int]:
    """(window, context) of the decode calls of a family: calls of ``config.vae_frames`` frames
    (the VAE's training clip) keeping the middle, ``config.vae_context`` frames each side; the
    latent cache encodes with the same calls (models/windows.py)."""
    return windows.vae_windows(config.vae_frames, config.vae_context)


def compute_decoder(vae, variables, dtype):
    """``(vae, variables)`` that decode in ``dtype``, the family's compute dtype: the module
    computes in it and the float weights are cast to it once here (bf16 halves the decoder's
    resident weights and leaves no per-call casts). Generation decodes with the MTD's dtype
    (``model.mtd.dtype``); the fp32 family of the embedded default is returned unchanged."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.dtype(vae.dtype):
        return vae, variables
    cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return vae.clone(dtype=dtype), jax.tree.map(cast, variables)


def vae_decode_fn(vae, variables, *, scaled: bool = False, uint8: bool = True) -> Callable:
    """A jitted ``latents [B, F, h, w, c] -> frames [B, F, H, W, 3]`` for :func:`decode_windows`.

    ``scaled=True`` takes diffusion latents (multiplied by ``vae.scaling_factor``) and unscales
    them first. ``uint8=True`` converts [-1, 1] to uint8 on the device, so a quarter of the bytes
    cross to the host.
    """
    return functools.partial(_jitted_decode(vae, scaled, uint8), variables)


@functools.lru_cache(maxsize=8)
def _jitted_decode(vae, scaled: bool, uint8: bool):
    """One jitted decoder per (module, options): variables are an argument, not baked-in
    constants (SD has 80M of them), so new weights reuse the compiled function."""
    def decode(v, z):
        if scaled:
            z = z / vae.scaling_factor
        x = vae.apply(v, z.astype(vae.dtype), method="decode").astype(jnp.float32)
        if uint8:
            x = jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
        return x

    return jax.jit(decode)


def decode_windows(decode_fn: Callable, latents: Union[np.ndarray, Iterable[np.ndarray]],
                   window: int, context: int, calls_per_batch: int = 1) -> Iterator[np.ndarray]:
    """Decodes ``latents`` (``[F, h, w, c]``, ``[B, F, h, w, c]`` or an iterable of pieces along
    the frame axis) ``window`` frames at a time with ``context`` frames each side; yields numpy
    frames in order (:func:`nuwa_xl_jax.models.windows.apply_in_windows`), ``calls_per_batch``
    windows' calls per device call (:func:`sized_decode_fn` picks it from memory)."""
    return windows.apply_in_windows(decode_fn, latents, window, context, calls_per_batch)


def sized_decode_fn(vae, variables, latent_shape, frames: int, window: int, context: int,
                    budget: int, *, scaled: bool = True) -> tuple[Callable, int]:
    """``(decode_fn, calls_per_batch)`` for decoding ``frames`` latent frames of ``latent_shape``
    (``(h, w, c)``) with :func:`decode_windows`: as many windows' calls per device call as XLA's
    memory analysis of the compiled decoder fits in ``budget`` bytes (all of them when they fit),
    sized like the DoD engine's chunks (:func:`memory.auto_chunk_size`). The returned function runs
    those compiled executables (a short last batch is padded, not recompiled) and falls back to
    the jitted decoder for a video shorter than one call."""
    call = window + 2 * context
    jitted = _jitted_decode(vae, scaled, True)
    compiled = {}

    def executable(k: int):
        if k not in compiled:
            shape = jax.ShapeDtypeStruct((k, call, *latent_shape), np.float32)
            compiled[k] = jitted.lower(variables, shape).compile()
        return compiled[k]

    calls = -(-frames // window) if frames > call else 1  # one call per window
    k = memory.auto_chunk_size(calls, 1, lambda n: program_bytes(executable(n)), budget)

    def decode_fn(z):
        z = np.asarray(z, np.float32)
        if z.shape[1] != call:  # the whole video in one shorter call
            return jitted(variables, z)
        n = z.shape[0]
        if n < k:
            z = np.concatenate([z, np.repeat(z[-1:], k - n, axis=0)])
        return executable(k)(variables, z)[:n]

    return decode_fn, k


def redecode(decode_fn: Callable, latents: np.ndarray, frames: np.ndarray, changed: np.ndarray,
             window: int, context: int, calls_per_batch: int = 1
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, redecoded [N] bool)`` after an edit: ``frames`` (the old video, uint8
    ``[N, H, W, 3]``) with each window whose call reads a ``changed`` latent decoded again from
    ``latents``, in the calls :func:`decode_windows` makes (windows.window_calls); every other
    frame is kept byte for byte (its call reads the same latents as before)."""
    latents = np.asarray(latents)
    changed = np.asarray(changed, bool)
    out = np.array(frames, copy=True)
    redone = np.zeros(len(out), bool)
    redo = [w for w in windows.window_calls(len(latents), window, context)
            if changed[w[0]:w[1]].any()]
    calls = sorted({(lo, hi) for lo, hi, _, _ in redo})
    for i in range(0, len(calls), calls_per_batch):
        batch = calls[i:i + calls_per_batch]
        decoded = np.asarray(decode_fn(np.stack([latents[lo:hi] for lo, hi in batch])))
        for (lo, hi), x in zip(batch, decoded):
            for lo2, hi2, a, b in redo:
                if (lo2, hi2) == (lo, hi):
                    out[a:b] = x[a - lo:b - lo]
                    redone[a:b] = True
    return out, redone
