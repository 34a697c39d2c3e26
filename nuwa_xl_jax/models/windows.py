"""Applying a temporal model to a long video in bounded windows, with temporal context.

Why one function for both directions: the T-KLVAE's temporal layers mix frames, so every frame's
latent (encoding) and every frame's pixels (decoding) must be computed among the same neighbours
the VAE was trained with. The latent cache encodes and generation decodes through this one
function, with the same call length (``config.vae_frames``, the VAE's training clip) and the same
context (``config.vae_context``): each output frame comes from a call of exactly the training
length in which it has at least ``context`` true neighbours on each side (fewer only at the ends
of the video, as in training clips that start or end there).

Every call has the same length ``window + 2*context`` (one compile): windows near the end shift
their call to end at the last frame instead of padding with fake frames, which would change the
model's edge padding. A video no longer than one call is processed in one call.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np


def vae_windows(vae_frames: int, vae_context: int) -> tuple[int, int]:
    """(window, context) of calls of ``vae_frames`` frames keeping the middle ``vae_frames - 2 *
    vae_context``: how the latent cache encodes and generation decodes."""
    window = int(vae_frames) - 2 * int(vae_context)
    if vae_context < 0 or window < 1:
        raise ValueError(f"vae_context={vae_context} must be in 0..{(vae_frames - 1) // 2} for "
                         f"vae_frames={vae_frames} (each call keeps vae_frames - 2 * vae_context "
                         "frames)")
    return window, int(vae_context)


def window_calls(frames: int, window: int, context: int) -> list[tuple[int, int, int, int]]:
    """``(lo, hi, a, b)`` for each window of :func:`apply_in_windows` over ``frames`` frames: the
    call reads input frames ``[lo, hi)`` and its output frames ``[a, b)`` are kept. An output
    frame depends on the inputs of its call only, so a frame whose call reads no changed input
    decodes as before (dod/decode.py ``redecode``)."""
    call = window + 2 * context
    if frames <= call:  # the whole video in one call
        return [(0, frames, a, min(a + window, frames)) for a in range(0, frames, window)]
    out = []
    for a in range(0, frames, window):
        lo = min(max(0, a - context), frames - call)
        out.append((lo, lo + call, a, min(a + window, frames)))
    return out


def apply_in_windows(fn: Callable, video: Union[np.ndarray, Iterable[np.ndarray]],
                     window: int, context: int, calls_per_batch: int = 1) -> Iterator[np.ndarray]:
    """Applies ``fn`` to ``video`` ``window`` frames at a time with ``context`` frames each side;
    yields numpy outputs in order.

    ``video``: one video ``[F, ...]`` (rank 4) or a batch ``[B, F, ...]`` (rank 5), or an iterable
    of such pieces along the frame axis (e.g. as a generator produces them); pieces are buffered
    only as far as the next call needs (at most ``window + 2*context`` frames plus one piece).
    ``fn`` maps ``[B, T, ...]`` to ``[B, T, ...]`` (a T-KLVAE decoder or encoder); it is always
    called with ``T = window + 2*context``, or once with the whole video if that is shorter.
    Yields ``[n, ...]`` (or ``[B, n, ...]`` for batched input), n <= window.
    ``calls_per_batch``: up to this many consecutive calls run as one ``fn`` call, stacked on the
    batch axis (``[k*B, T, ...]``): the same calls, so the same outputs, in fewer, larger device
    calls (a GPU decodes 16-frame windows one at a time far below its throughput).
    """
    for name, value, low in (("window", window, 1), ("context", context, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"apply_in_windows: {name} must be an integer >= {low}, got {value!r}")
    if isinstance(calls_per_batch, bool) or not isinstance(calls_per_batch, (int, np.integer)) \
            or calls_per_batch < 1:
        raise ValueError(f"apply_in_windows: calls_per_batch must be an integer >= 1, got "
                         f"{calls_per_batch!r}")
    window, context = int(window), int(context)
    pieces = iter([video] if hasattr(video, "shape") else video)
    call = window + 2 * context
    buf: Optional[np.ndarray] = None    # [B, n, h, w, c], frames [start, start + n) of the video
    start, batched, done, emitted = 0, None, False, 0
    queue = []  # calls not run yet: (input [B, T, ...], [(keep-from, keep-to), ...])
    # the last batch run: (device output, rows, queue); fetched after the next dispatch
    pending = []

    def dispatch():
        inputs = [x for x, _ in queue]
        out = fn(inputs[0] if len(inputs) == 1 else np.concatenate(inputs, axis=0))
        ran = (out, inputs[0].shape[0], list(queue))
        queue.clear()
        return [ran]

    def flush(p):
        out, rows, calls = p
        host = np.asarray(out)  # one transfer per batch
        for i, (_, keeps) in enumerate(calls):
            for a, b in keeps:
                frames = host[i * rows:(i + 1) * rows, a:b]
                yield frames if batched else frames[0]

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
                    raise ValueError(f"apply_in_windows: video must be rank 4 [F, ...] or "
                                     f"rank 5 [B, F, ...], got shape {piece.shape}")
                batched = piece.ndim == 5
            piece = piece if batched else piece[None]
            if piece.ndim != 5 or (buf is not None and (piece.shape[0] != buf.shape[0]
                                                         or piece.shape[2:] != buf.shape[2:])):
                raise ValueError(f"apply_in_windows: every piece must have the shape of the "
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
        queue.append((buf[:, lo - start:hi - start],
                      [(a - lo, min(a + window, stop) - lo) for a in range(emitted, stop, window)]))
        emitted = stop
        if len(queue) == calls_per_batch:
            ran = dispatch()
            for p in pending:
                yield from flush(p)
            pending = ran
        # Keep what the next call may need: from its start, and a whole call's worth before the
        # end so a shifted last call still finds its frames.
        keep = max(0, min(emitted - context, end - call))
        if keep > start:
            buf, start = buf[:, keep - start:], keep
    if queue:
        ran = dispatch()
        for p in pending:
            yield from flush(p)
        pending = ran
    for p in pending:
        yield from flush(p)
