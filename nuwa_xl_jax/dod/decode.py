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
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np


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
    import jax
    import jax.numpy as jnp

    def decode(v, z):
        if scaled:
            z = z / vae.scaling_factor
        x = vae.apply(v, z, method="decode")
        if uint8:
            x = jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
        return x

    return jax.jit(decode)


def decode_windows(decode_fn: Callable, latents: Union[np.ndarray, Iterable[np.ndarray]],
                   window: int, context: int) -> Iterator[np.ndarray]:
    """Decodes ``latents`` ``window`` frames at a time with ``context`` frames each side; yields
    numpy frames in order.

    ``latents``: one video ``[F, h, w, c]`` or a batch ``[B, F, h, w, c]``, or an iterable of such
    pieces along the frame axis (e.g. as a generator produces them); pieces are buffered only
    as far as the next call needs (at most ``window + 2*context`` frames plus one piece).
    ``decode_fn`` maps ``[B, T, h, w, c]`` to ``[B, T, H, W, 3]`` (e.g. :func:`vae_decode_fn`);
    it is always called with ``T = window + 2*context``, or once with the whole video if that is
    shorter. Yields ``[n, H, W, 3]`` (or ``[B, n, H, W, 3]`` for batched input), n <= window.
    """
    for name, value, low in (("window", window, 1), ("context", context, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"decode_windows: {name} must be an integer >= {low}, got {value!r}")
    window, context = int(window), int(context)
    pieces = iter([latents] if hasattr(latents, "shape") else latents)
    call = window + 2 * context
    buf: Optional[np.ndarray] = None    # [B, n, h, w, c], frames [start, start + n) of the video
    start, batched, done, emitted = 0, None, False, 0
    pending = []  # the previous call's (device output, keep-from, keep-to): overlaps the transfer

    def flush(p):
        out, a, b = p
        frames = np.asarray(out[:, a:b])
        return frames if batched else frames[0]

    while True:
        lo = max(0, emitted - context)          # where this window's call starts, if not at the end
        while not done and (buf is None or start + buf.shape[1] < lo + call):
            try:
                piece = next(pieces)
            except StopIteration:
                done = True
                break
            piece = np.asarray(piece)
            if batched is None:
                if piece.ndim not in (4, 5):
                    raise ValueError(f"decode_windows: latents must be [F, h, w, c] or "
                                     f"[B, F, h, w, c], got shape {piece.shape}")
                batched = piece.ndim == 5
            piece = piece if batched else piece[None]
            if piece.ndim != 5 or (buf is not None and (piece.shape[0] != buf.shape[0]
                                                         or piece.shape[2:] != buf.shape[2:])):
                raise ValueError(f"decode_windows: every latent piece must have the shape of the "
                                 f"first but with any frame count; got {piece.shape} after "
                                 f"{None if buf is None else buf.shape}")
            buf = piece if buf is None else np.concatenate([buf, piece], axis=1)
        end = start + (0 if buf is None else buf.shape[1])
        if emitted >= end:
            if done:
                break
            continue
        if done and end <= call:                # the whole video fits in one call
            lo, hi, stop = 0, end, end
        else:
            lo = min(lo, end - call)            # near the end: shift the call, never pad
            hi, stop = lo + call, min(emitted + window, end)
        out = decode_fn(buf[:, lo - start:hi - start])
        for p in pending:
            yield flush(p)
        pending = [(out, a - lo, min(a + window, stop) - lo) for a in range(emitted, stop, window)]
        emitted = stop
        # Keep what the next call may need: from its start, and a whole call's worth before the
        # end so a shifted last call still finds its frames.
        keep = max(0, min(emitted - context, end - call))
        if keep > start:
            buf, start = buf[:, keep - start:], keep
    for p in pending:
        yield flush(p)
