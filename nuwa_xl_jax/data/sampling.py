"""Which frames a training example of each level uses: pure numpy index logic, no reading.

For L frames per call and depth m a window spans W = (L-1)^m + 1 frames (L=16, m=3: 3376):
- level 0 (global): frames start + i*(L-1)^(m-1), i < L (stride 225), nothing given;
- level d (local depth d, 1..m-1): one adjacent pair of level d-1 frames (which lie at stride
  (L-1)^(m-d)) and the L frames at stride (L-1)^(m-1-d) from one to the other (15, then 1),
  the two ends given. Every local example's frames are therefore level d-1 neighbours filled in,
  the same segments the diffusion-over-diffusion plan (dod/plan.py) runs at inference;
- autoregressive (the FDM* baseline): L consecutive frames at a chosen stride, a prefix of P given,
  or none (the first call of a video, see ``ar_prefix_length``);
- ART•V style: [anchor, previous, new]: the window's first frame and frame t-1 given, frame t new.

Indices are relative to the episode; a window start is drawn uniformly over the episode so all of
a long episode is used. Reading the frames is pipeline.py's job; tests check the indices here.
"""
from __future__ import annotations

import dataclasses

import numpy as np

MODES = ("dod", "ar", "artv")


class EpisodeTooShortError(ValueError):
    """An episode has fewer frames than one training window needs."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """How examples are drawn. level: 0 global, d local depth d, -1 a uniformly random local level
    per
    example (one shared model with a level embedding). ar_stride / ar_prefix: the autoregressive
    baseline's frame stride and given prefix; ar_no_prefix: the share of AR examples with nothing
    given (see ``ar_prefix_length``)."""
    mode: str = "dod"
    frames_per_call: int = 16
    depth: int = 3
    level: int = 0
    ar_stride: int = 1
    ar_prefix: int = 8
    ar_no_prefix: float = 0.25
    extra_given: float = 0.0

    def __post_init__(self):
        L, m = self.frames_per_call, self.depth
        if self.mode not in MODES:
            raise ValueError(f"data.mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(L, int) or L < 3:
            raise ValueError(f"data.frames_per_call (L) must be an integer >= 3, got {L!r}")
        if not isinstance(m, int) or m < 1:
            raise ValueError(f"data.depth (m) must be an integer >= 1, got {m!r}")
        if self.mode == "dod" and not -1 <= self.level < m:
            raise ValueError(f"data.level must be -1 (random) or in 0..{m - 1} for depth {m}, "
                             f"got {self.level!r}")
        if self.mode == "ar":
            if self.ar_stride < 1:
                raise ValueError(f"data.ar_stride must be >= 1, got {self.ar_stride!r}")
            if not 0 <= self.ar_prefix < L:
                raise ValueError(f"data.ar_prefix must be in 0..{L - 1}, got {self.ar_prefix!r}")
            if not 0 <= self.ar_no_prefix <= 1:
                raise ValueError(f"ar_no_prefix (share of AR examples with nothing given) must be "
                                 f"in [0, 1], got {self.ar_no_prefix!r}")

    @property
    def window(self) -> int:
        """Frames one example may span."""
        if self.mode == "ar":
            return (self.frames_per_call - 1) * self.ar_stride + 1
        return window_size(self.frames_per_call, self.depth)

    @property
    def length(self) -> int:
        """Frames per example (the leading dim of ``frames``)."""
        return 3 if self.mode == "artv" else self.frames_per_call


@dataclasses.dataclass(frozen=True)
class Indices:
    """One example's frames as indices into its episode: indices [n] int64, mask [n] float32
    (1 = given as a condition), level (-1 for the baselines), stride between generated frames."""
    indices: np.ndarray
    mask: np.ndarray
    level: int
    stride: int


def window_size(L: int, m: int) -> int:
    return (L - 1) ** m + 1


def level_stride(L: int, m: int, level: int) -> int:
    """Stride between the frames of ``level``: (L-1)^(m-1-level); 225 / 15 / 1 for L=16, m=3."""
    if not 0 <= level < m:
        raise ValueError(f"level must be in 0..{m - 1}, got {level}")
    return (L - 1) ** (m - 1 - level)


def num_pairs(L: int, level: int) -> int:
    """Adjacent pairs of level-1 frames in one window, i.e. examples a local level has per
    window."""
    return (L - 1) ** level


def global_indices(L: int, m: int, start: int = 0) -> Indices:
    s = level_stride(L, m, 0)
    return Indices(start + s * np.arange(L), np.zeros(L, np.float32), 0, s)


def local_indices(L: int, m: int, level: int, pair: int, start: int = 0) -> Indices:
    """Local depth ``level``: the ``pair``-th adjacent pair of level-1 frames, filled in."""
    if not 1 <= level < m:
        raise ValueError(f"local level must be in 1..{m - 1}, got {level}")
    if not 0 <= pair < num_pairs(L, level):
        raise ValueError(f"pair must be in 0..{num_pairs(L, level) - 1}, got {pair}")
    parent = level_stride(L, m, level - 1)
    s = level_stride(L, m, level)
    mask = np.zeros(L, np.float32)
    mask[[0, -1]] = 1
    return Indices(start + pair * parent + s * np.arange(L), mask, level, s)


def ar_prefix_length(prefix: int, no_prefix: float, rng: np.random.Generator) -> int:
    """How many frames one AR training example has given: 0 with probability ``no_prefix``, else
    ``prefix``.

    Why these two: generation (dod/baselines.autoregressive) only ever shows the model these two
    cases, the first call with nothing given and every later call with the last ``prefix`` frames
    given, so other lengths would spend training on inputs that never come. The first call is one
    per video, but it is the hardest (a clip from text alone) and it sets the scene every later
    call continues, hence a fixed share (default 1/4) rather than its 1-in-28 share of calls.
    Drawn from the example's own rng, so an example (and a resumed run) stays reproducible; with
    ``prefix`` 0 nothing is drawn, so the VAE stage's clips (mode 'ar', prefix 0) are unchanged.
    """
    if prefix == 0:
        return 0
    return 0 if rng.random() < no_prefix else prefix


def ar_indices(L: int, stride: int, prefix: int, start: int = 0) -> Indices:
    mask = np.zeros(L, np.float32)
    mask[:prefix] = 1
    return Indices(start + stride * np.arange(L), mask, -1, stride)


def artv_indices(start: int, t: int) -> Indices:
    """[anchor, previous, new] = [start, t-1, t], the first two given."""
    if t < start + 1:
        raise ValueError(f"ART•V frame t={t} must come after the anchor {start}")
    return Indices(np.array([start, t - 1, t]), np.array([1, 1, 0], np.float32), -1, 1)


def check_length(spec: Spec, episode_length: int, name: str = "episode") -> None:
    if episode_length < spec.window:
        raise EpisodeTooShortError(
            f"{name} has {episode_length} frames but a {spec.mode} window with L="
            f"{spec.frames_per_call}, depth={spec.depth} needs {spec.window}; use longer episodes "
            f"(data.episode_length) or a smaller data.frames_per_call / data.depth")


def sample(spec: Spec, episode_length: int, rng: np.random.Generator,
           name: str = "episode") -> Indices:
    """A random example of ``spec`` from an episode of ``episode_length`` frames."""
    check_length(spec, episode_length, name)
    start = int(rng.integers(0, episode_length - spec.window + 1))
    L, m = spec.frames_per_call, spec.depth
    if spec.mode == "ar":
        prefix = ar_prefix_length(spec.ar_prefix, spec.ar_no_prefix, rng)
        return ar_indices(L, spec.ar_stride, prefix, start)
    if spec.mode == "artv":
        return artv_indices(start, start + int(rng.integers(1, spec.window)))
    # -1: a random *local* level, for one shared local model (the global level has its own model)
    level = (int(rng.integers(1, m)) if m > 1 else 0) if spec.level < 0 else spec.level
    if level == 0:
        idx = global_indices(L, m, start)
    else:
        idx = local_indices(L, m, level, int(rng.integers(0, num_pairs(L, level))), start)
    return with_extra_given(idx, spec.extra_given, rng)


def with_extra_given(idx: Indices, p: float, rng: np.random.Generator) -> Indices:
    """``idx`` with each frame between the ends also given with probability ``p``.

    Why: a keyframe image pins a frame (dod/pins.py) that may fall between a segment's ends, or
    anywhere in the global level; the paper's masks (nothing given at the global level, the two
    ends at a local one) never show the model such a frame. MTD's masked condition takes any
    mask, so training draws some. With ``p`` 0 nothing is drawn: existing recipes' examples
    and rng streams are unchanged."""
    if p <= 0:
        return idx
    extra = np.zeros_like(idx.mask)
    extra[1:-1] = rng.random(len(idx.mask) - 2) < p
    return dataclasses.replace(idx, mask=np.maximum(idx.mask, extra))
