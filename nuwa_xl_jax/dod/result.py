"""What a generation scheme returns: the latents of one video and what they cost. DoD
(dod/engine.py), its per-segment and autoregressive baselines (dod/baselines.py) and ART•V
(dod/artv.py) return the same type; dod/runner.sample adds where each level's frames are."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class LevelStats:
    """What one level cost: ``segments`` real segments, ``calls`` sequential sampler loops
    (chunks), ``chunk`` the padded batch of each call, ``traces`` new traces of the level program
    (0 when an earlier level or run had the same shape), ``wall_s`` seconds incl. gather/scatter,
    ``program_bytes`` the compiled level program's peak memory on one device (XLA's estimate:
    arguments + outputs + temporaries - aliased)."""
    level: int
    segments: int
    calls: int
    chunk: int
    traces: int
    wall_s: float
    program_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class Sampled:
    """The latents of one video, before decoding.

    ``latents`` ``[N, h, w, c]`` as the MTD diffuses them (a device array from the schemes, numpy
    from dod/runner.sample); ``sequential_calls`` the sampler loops that ran one after another
    (one per chunk of each DoD level, one per AR call, one per ART•V frame); ``wall_s`` their
    seconds; ``levels`` DoD's per-level stats (empty for the baselines). From
    dod/runner.sample also ``level_indices`` (per level, level 0 first, the frame indices it
    generated, < N; one row of evenly spaced frames for AR and ART•V) and ``keyframes`` (``[N]``
    bool: frames written by a level above the last one, which the storyboard probe scores apart).
    """
    latents: Any
    sequential_calls: int = 0
    wall_s: float = 0.0
    levels: tuple[LevelStats, ...] = ()
    level_indices: tuple = ()
    keyframes: Optional[np.ndarray] = None
