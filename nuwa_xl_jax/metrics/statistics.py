"""The feature statistics of one set of videos (all frames for Avg-FID, per 16-frame block index for
B-FVD-16), accumulated video by video, saved to / loaded from ``.npz``, and compared with another
set's. Only features are kept: a video can be dropped as soon as it has been added.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from nuwa_xl_jax.metrics import frechet


class EvaluationError(ValueError):
    """Videos, references or options that the metrics cannot be computed from; says which and
    why."""


class VideoSetStats:
    """Statistics of a set of videos under one pair of feature networks (``identity``)."""

    def __init__(self, identity: dict, fid: bool = True, fvd: bool = True):
        self.identity = dict(identity)
        self.fid, self.fvd = fid, fvd
        self.frames: Optional[frechet.RunningStats] = None
        self.blocks: list[frechet.RunningStats] = []
        self.resolution: Optional[tuple[int, int]] = None
        self.lengths: list[int] = []

    @property
    def videos(self) -> int:
        return len(self.lengths)

    def check(self, name: str, frames: np.ndarray) -> None:
        """A video this set can take (raises before any feature work)."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise EvaluationError(f"{name}: expected uint8 frames [T, H, W, 3]; got "
                                  f"{frames.dtype} {frames.shape}")
        res = tuple(frames.shape[1:3])
        if self.resolution is not None and res != self.resolution:
            raise EvaluationError(f"{name} is {res[0]}x{res[1]} but the set's earlier videos are "
                                  f"{self.resolution[0]}x{self.resolution[1]}: every video of a "
                                  "set must have one resolution")
        if self.fvd and len(frames) < frechet.BLOCK:
            raise EvaluationError(f"{name} has {len(frames)} frames; B-FVD-16 needs at least "
                                  f"{frechet.BLOCK} (one block). Generate or pass longer videos "
                                  "(--frames), or leave b_fvd16 out of --metrics")

    def add(self, name: str, frames: np.ndarray, nets, fid_batch: int = 32,
            fvd_batch: int = 4) -> None:
        frames = np.asarray(frames)
        self.check(name, frames)
        self.resolution = tuple(frames.shape[1:3])
        if self.fid:
            self.frames = frechet.frame_statistics([frames], nets.fid_fn, fid_batch, self.frames)
        if self.fvd:
            for i, s in enumerate(frechet.block_statistics([frames], nets.fvd_fn,
                                                           batch_size=fvd_batch)):
                if i == len(self.blocks):
                    self.blocks.append(frechet.RunningStats(s.dim))
                self.blocks[i].merge(s)
        self.lengths.append(len(frames))

    # ------------------------------------------------------------------------------- files

    def save(self, path: str, meta: Optional[dict] = None) -> str:
        stats = {}
        if self.frames is not None:
            stats["frames"] = self.frames
        stats.update({f"block_{i:05d}": s for i, s in enumerate(self.blocks)})
        header = {"identity": self.identity, "fid": self.fid, "fvd": self.fvd,
                  "resolution": list(self.resolution or ()), "lengths": self.lengths,
                  **(meta or {})}
        return frechet.save_statistics(path, stats, header)

    @classmethod
    def load(cls, path: str) -> tuple["VideoSetStats", dict]:
        try:
            stats, meta = frechet.load_statistics(path)
        except frechet.FrechetError as e:
            raise EvaluationError(str(e)) from e
        if "identity" not in meta or "lengths" not in meta:
            raise EvaluationError(f"{path!r} holds statistics but not a video set's (written by "
                                  "python -m nuwa_xl_jax.evaluate); compute the reference again")
        out = cls(meta["identity"], meta["fid"], meta["fvd"])
        out.frames = stats.get("frames")
        out.blocks = [stats[k] for k in sorted(k for k in stats if k.startswith("block_"))]
        out.resolution = tuple(meta["resolution"]) or None
        out.lengths = list(meta["lengths"])
        return out, meta


def compare(generated: VideoSetStats, reference: VideoSetStats) -> dict:
    """``{"avg_fid", "b_fvd16", "b_fvd16_per_block"}`` of ``generated`` against ``reference``
    (the metrics both sets hold)."""
    if generated.identity != reference.identity:
        raise EvaluationError(f"the reference statistics were made with other feature networks "
                              f"({reference.identity}) than these ({generated.identity}); compute "
                              "the reference again with the same networks and sizes")
    if generated.resolution != reference.resolution:
        g, r = generated.resolution, reference.resolution
        raise EvaluationError(f"mismatched resolutions: generated videos are {g[0]}x{g[1]}, the "
                              f"reference {r[0]}x{r[1]}; the reference must be at the generated "
                              "videos' resolution")
    out: dict = {}
    try:
        if generated.fid and reference.fid:
            out["avg_fid"] = frechet.avg_fid(generated.frames, reference.frames)
        if generated.fvd and reference.fvd:
            out["b_fvd16"], out["b_fvd16_per_block"] = frechet.b_fvd(generated.blocks,
                                                                     reference.blocks)
    except frechet.FrechetError as e:
        raise EvaluationError(str(e)) from e
    return out
