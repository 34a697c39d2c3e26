"""Sizing calls to device memory: the budget of one call (a fraction of one device's memory),
and batches that fit it, read from the compiled programs' own memory analysis. The DoD engine
sizes its chunks of segments with it, and decoding (dod/decode.py) its windows per call."""
from __future__ import annotations

import os
from typing import Callable, Optional, Union

import jax
import numpy as np
from jax.sharding import Mesh

MaxSegments = Union[int, str, None]  # segments per call: an int >= 1, "auto" (memory-sized) or None
DEFAULT_MEMORY_FRACTION = 0.8  # of one device's memory, for max_segments_per_call="auto"


def check_memory_fraction(fraction) -> float:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"memory_fraction must be in (0, 1], got {fraction!r}")
    return fraction


def check_max_segments(max_segments_per_call) -> MaxSegments:
    """``max_segments_per_call`` as the engine takes it: an int >= 1, ``"auto"`` or None (no
    limit). Also read from configs and flags: ``0``, ``"none"`` and ``""`` mean no limit, and a
    string of digits is its number."""
    value = max_segments_per_call
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", ""):
            return None
        value = int(text) if text.isdigit() else text
    if value is None or value == "auto":
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value) or None
    raise ValueError(f"max_segments_per_call must be an integer >= 1, 'auto' (sized to memory) or "
                     f"None/0 (no limit), got {max_segments_per_call!r}")


def memory_budget(mesh: Mesh, fraction: float = DEFAULT_MEMORY_FRACTION) -> int:
    """Bytes one call may use on one device: ``fraction`` of the device's memory limit
    (``memory_stats()["bytes_limit"]``: on GPU that is the pool JAX preallocated). CPU devices
    report none; there the host's physical memory is shared by its local devices."""
    check_memory_fraction(fraction)
    # one of this process's devices: another host's device cannot be queried (multi-host)
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    device = local[0] if local else jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        limit = int(stats["bytes_limit"])
    else:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        limit = host // max(1, len(local))
    return int(limit * fraction)


def chunk_size(segments: int, max_segments: Optional[int], devices: int) -> int:
    """One chunk size per level, a multiple of the batch devices (max_segments rounded up to
    one): as few calls as the budget allows, and balanced, so the padding is spread instead of
    left to the last chunk (69 segments at 16: 5 calls of 14, not 5 of 16)."""
    if segments == 1:
        return 1  # one segment (level 0): no padding, replicated
    up = lambda n: -(-n // devices) * devices
    cap = up(segments if max_segments is None else min(segments, max_segments))
    calls = -(-segments // cap)
    return up(-(-segments // calls))


def _next_chunk(segments: int, chunk: int, devices: int) -> int:
    """The smallest balanced chunk size above ``chunk``."""
    cap = chunk + devices
    while chunk_size(segments, cap, devices) <= chunk:
        cap += devices
    return chunk_size(segments, cap, devices)


def auto_chunk_size(segments: int, devices: int, peak: Callable[[int], int], budget: int) -> int:
    """The chunk size for ``max_segments_per_call="auto"``: the whole level (balanced over the
    devices) when ``peak(chunk)`` fits ``budget``, else the largest balanced chunk that does.
    Memory grows about linearly with the chunk (every row is one more segment's activations), so
    two small probes predict the size, a compile confirms it and the next larger balanced size is
    tried; ``peak`` compiles (cached, and the chosen size's executable is the one that runs)."""
    whole = chunk_size(segments, None, devices)
    if peak(whole) <= budget:
        return whole
    c1 = devices
    p1 = peak(c1)
    if p1 > budget:
        raise MemoryError(
            f"one chunk of {c1} segment(s) needs {p1 / 2**30:.2f} GiB per device, over the "
            f"{budget / 2**30:.2f} GiB budget: raise memory_fraction, add devices, or use a "
            f"smaller model or resolution")
    c2 = 2 * devices
    if c2 >= whole:
        return c1
    per_row = max(1, peak(c2) - p1) / (c2 - c1)
    cap = c1 + int((budget - p1) // (per_row * devices)) * devices
    chunk = chunk_size(segments, max(c1, min(cap, whole - devices)), devices)
    while chunk > c1 and peak(chunk) > budget:  # the estimate was optimistic: step down
        chunk = chunk_size(segments, chunk - devices, devices)
    while True:  # XLA reuses buffers, so memory can grow slower than linearly: step up
        bigger = _next_chunk(segments, chunk, devices)
        if bigger >= whole or peak(bigger) > budget:
            return chunk
        chunk = bigger
