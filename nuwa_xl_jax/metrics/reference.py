"""Reference statistics: what generated videos are measured against, computed once and cached.

Three sources:

- the synthetic world acting out the evaluated storyboards (:mod:`nuwa_xl_jax.data.scripted`),
  rendered at the family's resolution, one real video per storyboard and staging seed -- the real
  counterpart of a video generated from that storyboard (and the probe's scores on them, the
  ceiling a generator can reach);
- real video files (``.mp4``, ``.gif``, PNG-frame folders; globs and folders of them);
- a ``.npz`` statistics file written by an earlier run (:meth:`VideoSetStats.save`).

The first two are cached in ``cache_dir`` under a name that hashes everything that determines them
(storyboard prompts, seeds, resolution, files with their sizes and times, feature networks), so a
second evaluation with the same settings reads the file and a changed setting computes afresh.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Optional, Sequence

import av
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from nuwa_xl_jax import io as nio
from nuwa_xl_jax.data import scripted
from nuwa_xl_jax.metrics import storyboard_probe
from nuwa_xl_jax.metrics.statistics import EvaluationError, VideoSetStats

VIDEO_SUFFIXES = (".mp4", ".gif")


def expand_videos(spec: str, flag: str = "--videos") -> list[str]:
    """Video paths of a comma-separated list of files, globs, folders of videos, or PNG-frame
    folders (a folder holding ``frame_*.png``), in a stable order."""
    out: list[str] = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
        if not matches:
            raise EvaluationError(f"{flag}: {item!r} matches no file")
        for path in matches:
            if os.path.isdir(path) and not glob.glob(os.path.join(path, "frame_*.png")):
                inside = sorted(p for p in glob.glob(os.path.join(path, "*"))
                                if p.lower().endswith(VIDEO_SUFFIXES)
                                or glob.glob(os.path.join(p, "frame_*.png")))
                if not inside:
                    raise EvaluationError(f"{flag}: folder {path!r} holds no .mp4 / .gif videos "
                                          "or PNG-frame folders")
                out += inside
            elif os.path.exists(path):
                out.append(path)
            else:
                raise EvaluationError(f"{flag}: {path!r} does not exist")
    if not out:
        raise EvaluationError(f"{flag} names no videos")
    return out


def frame_shape(path: str) -> tuple[int, int]:
    """(height, width) of a video file or PNG-frame folder, from its first frame only."""
    try:
        if os.path.isdir(path):
            files = sorted(glob.glob(os.path.join(path, "frame_*.png")))
            if not files:
                raise EvaluationError(f"{path!r} holds no frame_*.png files")
            with Image.open(files[0]) as im:
                return im.height, im.width
        if path.lower().endswith(".gif"):
            with Image.open(path) as im:
                return im.height, im.width
        with av.open(path) as container:
            stream = container.streams.video[0]
            return stream.codec_context.height, stream.codec_context.width
    except EvaluationError:
        raise
    except Exception as e:  # not a video, truncated, unknown codec
        raise EvaluationError(f"cannot read {path!r} as a video: {e}") from e


def frame_count(path: str) -> int:
    """Frames of a video file or PNG-frame folder, from its container (decoding only when the
    container does not say)."""
    try:
        if os.path.isdir(path):
            return len(glob.glob(os.path.join(path, "frame_*.png")))
        if path.lower().endswith(".gif"):
            with Image.open(path) as im:
                return int(getattr(im, "n_frames", 1))
        with av.open(path) as container:
            n = container.streams.video[0].frames
            return int(n) if n else sum(1 for _ in container.decode(video=0))
    except Exception as e:  # not a video, truncated, unknown codec
        raise EvaluationError(f"cannot read {path!r} as a video: {e}") from e


def check_resolutions(paths: Sequence[str], expected: Optional[tuple[int, int]],
                      what: str) -> tuple[int, int]:
    """One (height, width) for all ``paths`` (and equal to ``expected`` when given): a mismatch
    is an error naming the file, before any feature network runs."""
    for p in paths:
        shape = frame_shape(p)
        if expected is None:
            expected = shape
        elif shape != tuple(expected):
            raise EvaluationError(
                f"mismatched resolutions: {what} {p!r} is {shape[0]}x{shape[1]}, but "
                f"{expected[0]}x{expected[1]} is expected (the generated videos' / the first "
                "video's); FID and FVD compare sets at one resolution, resize the videos first")
    return tuple(expected)


def _key(what: dict) -> str:
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _cached(cache_dir: Optional[str], what: dict):
    if not cache_dir:
        return None, None
    path = os.path.join(cache_dir, f"reference_{_key(what)}.npz")
    if os.path.isfile(path):
        stats, meta = VideoSetStats.load(path)
        return path, (stats, meta)
    return path, None


def mean_scores(rows: Sequence[dict]) -> Optional[dict]:
    """Mean of each numeric probe score over videos (None-valued scores left out); nested parts
    (keyframes / in-between) averaged the same way."""
    rows = [r for r in rows if r]
    if not rows:
        return None
    out: dict = {}
    for k in rows[0]:
        vals = [r[k] for r in rows if r.get(k) is not None]
        if vals and isinstance(vals[0], dict):
            out[k] = mean_scores(vals)
        elif vals:
            out[k] = float(np.mean(vals))
        else:
            out[k] = None
    return out


def synthetic_reference(storyboards: dict, resolution: Sequence[int], seeds: Sequence[int], nets,
                        metrics: dict, cache_dir: Optional[str] = None, fid_batch: int = 32,
                        fvd_batch: int = 4, progress: bool = True) -> tuple[VideoSetStats, dict]:
    """The world acting out each storyboard (``{name: per-frame prompts}``) once per staging seed.
    Returns the statistics and ``{"videos", "cache", "probe"}`` (the probe's mean scores on these
    real frames when ``metrics["probe"]``)."""
    what = {"source": "synthetic", "storyboards": {k: list(v) for k, v in storyboards.items()},
            "resolution": list(resolution), "seeds": list(seeds), "identity": nets.identity,
            "fid": metrics["fid"], "fvd": metrics["fvd"], "probe": metrics["probe"]}
    path, hit = _cached(cache_dir, what)
    if hit:
        return hit[0], {"videos": hit[0].videos, "cache": path, "cached": True,
                        "probe": hit[1].get("probe")}
    stats = VideoSetStats(nets.identity, metrics["fid"], metrics["fvd"])
    scores = []
    jobs = [(name, seed) for name in storyboards for seed in seeds]
    for name, seed in tqdm(jobs, desc="reference (world acting out the storyboards)",
                           disable=not progress):
        prompts = storyboards[name]
        frames = scripted.render_storyboard(prompts, tuple(resolution), seed)
        if metrics["fid"] or metrics["fvd"]:
            stats.add(f"reference {name} seed {seed}", frames, nets, fid_batch, fvd_batch)
        else:
            stats.check(f"reference {name}", frames)
            stats.lengths.append(len(frames))
        if metrics["probe"]:
            scores.append(storyboard_probe.agreement(frames, prompts))
    stats.resolution = tuple(int(r) for r in resolution)
    probe = mean_scores(scores)
    if path:
        stats.save(path, {"source": "synthetic", "probe": probe})
    return stats, {"videos": stats.videos, "cache": path, "cached": False, "probe": probe}


def video_reference(spec: str, nets, metrics: dict, cache_dir: Optional[str] = None,
                    fid_batch: int = 32, fvd_batch: int = 4,
                    progress: bool = True) -> tuple[VideoSetStats, dict]:
    """Real videos from files (see :func:`expand_videos`), or a ``.npz`` of saved statistics."""
    if spec.endswith(".npz"):
        stats, meta = VideoSetStats.load(spec)
        return stats, {"videos": stats.videos, "cache": spec, "cached": True,
                       "probe": meta.get("probe")}
    paths = expand_videos(spec, "--reference")
    files = [[os.path.abspath(p), os.path.getsize(p) if os.path.isfile(p) else 0,
              int(os.path.getmtime(p))] for p in paths]
    what = {"source": "videos", "files": files, "identity": nets.identity,
            "fid": metrics["fid"], "fvd": metrics["fvd"]}
    path, hit = _cached(cache_dir, what)
    if hit:
        return hit[0], {"videos": hit[0].videos, "cache": path, "cached": True, "probe": None}
    stats = VideoSetStats(nets.identity, metrics["fid"], metrics["fvd"])
    for p in tqdm(paths, desc="reference videos", disable=not progress):
        stats.add(p, nio.read_video(p), nets, fid_batch, fvd_batch)
    if path:
        stats.save(path, {"source": "videos", "files": files})
    return stats, {"videos": stats.videos, "cache": path, "cached": False, "probe": None}
