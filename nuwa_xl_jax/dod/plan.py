"""The plan of a diffusion-over-diffusion run, as pure data (numpy only, no JAX).

For L frames per call and depth m the full video has N_m = (L-1)^m + 1 frames (L=16: 16, 226,
3376). Level 0 (global) draws L keyframes at stride (L-1)^(m-1). Level k takes every adjacent pair
of level k-1 frames as the ends of a segment and fills the L-2 frames between them at stride
(L-1)^(m-1-k). Every segment of a level is independent of the others, which is what lets the
engine run a whole level as one batched call.

A requested length N that is not of the form above uses the smallest depth whose N_m >= N
[ours; the paper reports 256 and 1024 frames without saying how]; with both ``depth`` and
``frames`` the plan keeps ``depth`` and is cut at N (what a family trained at that depth must run:
dod/runner.plan_for). Frames >= N are cut; a segment that starts at or past N - 1 is never
computed (it would write no frame < N, and neither would any segment below it). A segment that
straddles N is computed whole, because its right end is needed as the condition of the segments
below it.
"""
from __future__ import annotations

import dataclasses

import numpy as np


def num_frames(L: int, depth: int) -> int:
    """Frames of a full diffusion-over-diffusion video: (L-1)^depth + 1."""
    _check_L(L)
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    return (L - 1) ** depth + 1


def depth_for(L: int, frames: int) -> int:
    """The smallest depth whose full video has at least ``frames`` frames."""
    _check_L(L)
    if not isinstance(frames, (int, np.integer)) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    depth = 1
    while num_frames(L, depth) < frames:
        depth += 1
    return depth


def _check_L(L) -> None:
    if not isinstance(L, (int, np.integer)) or L < 3:
        raise ValueError(f"L (frames per call) must be an integer >= 3, got {L!r}")


@dataclasses.dataclass(frozen=True)
class Level:
    """All segments of one level, stacked: every array is ``[S, L]``.

    frames   absolute frame index of each position (may exceed the video's end for the last one)
    given    True where the frame is a condition produced by the level above (the two ends)
    writes   True where this level produces a frame of the output video (not given, < N)
    prompts  which prompt (frame index into the storyboard) each position is guided by
    segment_ids  ``[S]``: which segment of the whole level each row is (its noise key); None for
             a whole level (row i is segment i). Set by :meth:`subset`, for an edit that reruns
             some segments only.
    """
    level: int
    stride: int
    frames: np.ndarray
    given: np.ndarray
    writes: np.ndarray
    prompts: np.ndarray
    segment_ids: np.ndarray | None = None

    @property
    def num_segments(self) -> int:
        return int(self.frames.shape[0])

    @property
    def ids(self) -> np.ndarray:
        """``[S]`` the segment index of each row (what its noise key folds in)."""
        if self.segment_ids is None:
            return np.arange(self.num_segments)
        return np.asarray(self.segment_ids)

    def subset(self, rows) -> "Level":
        """These rows (segments) only, each keeping its segment index, so its noise is the one
        it draws in the whole level."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        return dataclasses.replace(self, frames=self.frames[rows], given=self.given[rows],
                                   writes=self.writes[rows], prompts=self.prompts[rows],
                                   segment_ids=self.ids[rows])


@dataclasses.dataclass(frozen=True)
class Plan:
    L: int
    depth: int
    frames: int  # N: the requested length
    levels: tuple[Level, ...]
    # Frames the run touches: one past the largest frame index any segment uses (the latent
    # buffer's length; an edit's plan, whose levels hold some segments only, keeps the video's).
    span: int

    @property
    def full_frames(self) -> int:
        return num_frames(self.L, self.depth)

    def sequential_calls(self) -> int:
        """Model calls that must run one after another when each level is one batched call."""
        return len(self.levels)


def make_plan(L: int, depth: int | None = None, frames: int | None = None) -> Plan:
    """The plan for L frames per call; give ``depth`` (full length), ``frames`` (exact length), or
    both.

    With both, ``frames`` must fit in ``num_frames(L, depth)``.
    """
    _check_L(L)
    if depth is None and frames is None:
        raise ValueError("make_plan needs depth, frames, or both")
    if depth is None:
        depth = depth_for(L, frames)
    full = num_frames(L, depth)
    if frames is None:
        frames = full
    if not isinstance(frames, (int, np.integer)) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    if frames > full:
        raise ValueError(f"frames={frames} exceeds the {full} frames of depth {depth} with L={L}; "
                         f"use depth={depth_for(L, frames)} or fewer frames")

    j = np.arange(L)
    levels = []
    starts = np.array([0])  # level 0: one segment starting at frame 0
    for k in range(depth):
        stride = (L - 1) ** (depth - 1 - k)
        # A segment starting at N - 1 or later writes only frames >= N (and so do the segments
        # below it): never computed.
        starts = starts[starts < frames - 1]
        seg_frames = starts[:, None] + stride * j[None]
        given = np.zeros_like(seg_frames, bool)
        if k > 0:
            given[:, [0, -1]] = True
        writes = ~given & (seg_frames < frames)
        prompts = np.minimum(seg_frames, frames - 1)
        levels.append(Level(k, stride, seg_frames, given, writes, prompts))
        # Next level: one segment per adjacent pair of this level's frames.
        starts = np.unique(seg_frames[:, :-1].ravel())
    span = int(max(lv.frames.max() for lv in levels)) + 1
    return Plan(L, depth, int(frames), tuple(levels), span)
