"""Fréchet distance, streaming feature statistics, and the paper's Avg-FID and B-FVD-16 on top.

**Fréchet distance** of two Gaussians, in float64::

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

The trace term is computed from the *symmetric* matrix ``A = S1^(1/2) S2 S1^(1/2)``: ``S1 S2`` is
similar to ``A`` (``S1^(1/2) (S1 S2) S1^(-1/2) = A``), so ``tr((S1 S2)^(1/2)) = sum(sqrt(eig(A)))``.
``S1^(1/2)`` and ``eig(A)`` come from ``numpy.linalg.eigh`` on symmetric positive semi-definite
matrices, whose eigenvalues are real; round-off negatives are clipped to 0. Why not
``scipy.linalg.sqrtm(S1 @ S2)`` as pytorch-fid does: ``S1 S2`` is not symmetric, ``sqrtm`` (a Schur
method) returns complex values with small imaginary parts and can fail outright when a covariance
is singular -- which it always is when there are fewer samples than feature dimensions (2048 for
FID; B-FVD-16 has one clip per video per block). pytorch-fid then retries with ``eps * I`` added to
both covariances, which moves the answer. The eigen route needs no offset, is exact for singular
covariances and agrees with ``sqrtm`` where that is well conditioned (tests hold both).

**Streaming statistics**: :class:`RunningStats` keeps the count, the mean and the scatter matrix
``M2 = sum (x - mean)(x - mean)^T`` in float64, and merges each batch with Chan et al.'s parallel
update (the batch's own mean and scatter, then one correction term), which does not lose precision
the way ``E[x x^T] - mean mean^T`` does when the mean is large. Only features are kept, never
frames:
the helpers below pull frames from iterators batch by batch, so a 3376-frame video or thousands of
reference frames never sit in memory. Statistics are saved to and loaded from ``.npz`` files
(:func:`save_statistics`, :func:`load_statistics`) so reference statistics are computed once.

**Metrics** (NUWA-XL, Table 1; the readings marked [ours] are documented in docs/evaluation.md):

* Avg-FID (:func:`avg_fid`): FID over individual frames -- one Gaussian fitted to the Inception
  features of every generated frame, one to every reference frame [ours: pooled over frames].
* B-FVD-16 (:func:`b_fvd`): every video cut into consecutive 16-frame blocks (a trailing partial
  block is dropped); block i of all generated videos against block i of all reference videos gives
  one FVD; B-FVD-16 is their average over blocks [ours: per block index, across the set of videos].

A ``feature_fn`` maps a batch of uint8 frames ``[n, H, W, 3]`` (FID) or clips ``[n, 16, H, W, 3]``
(FVD) to features ``[n, d]``; :func:`nuwa_xl_jax.models.inception.feature_fn` and
:func:`nuwa_xl_jax.models.i3d.feature_fn` build them from the networks.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

BLOCK = 16  # B-FVD-16's block length
FeatureFn = Callable[[np.ndarray], np.ndarray]


class FrechetError(ValueError):
    """Statistics or videos that a Fréchet distance cannot be computed from; says which and why."""


# ----------------------------------------------------------------------------------- distance


def _symmetric(m: np.ndarray) -> np.ndarray:
    return 0.5 * (m + m.T)


def psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(_symmetric(np.asarray(m, np.float64)))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((S1 S2)^(1/2))`` via the eigenvalues of the symmetric ``S1^(1/2) S2 S1^(1/2)``."""
    root = psd_sqrt(sigma1)
    inner = _symmetric(root @ np.asarray(sigma2, np.float64) @ root)
    return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0.0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64 (>= 0)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise FrechetError(f"means must be vectors of one length; got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise FrechetError(f"{name} must be [{d}, {d}] to match the means; got {s.shape}")
        if not np.all(np.isfinite(s)):
            raise FrechetError(f"{name} has NaN or inf entries (did the features overflow?)")
    if not (np.all(np.isfinite(mu1)) and np.all(np.isfinite(mu2))):
        raise FrechetError("a mean has NaN or inf entries (did the features overflow?)")
    diff = mu1 - mu2
    value = (diff @ diff + np.trace(sigma1) + np.trace(sigma2)
             - 2.0 * trace_sqrt_product(sigma1, sigma2))
    return max(float(value), 0.0)


# --------------------------------------------------------------------------------- statistics


class RunningStats:
    """Count, mean and covariance of feature vectors, updated batch by batch in float64."""

    def __init__(self, dim: int):
        if int(dim) < 1:
            raise FrechetError(f"RunningStats: dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.count = 0
        self.mean = np.zeros(self.dim, np.float64)
        self.m2 = np.zeros((self.dim, self.dim), np.float64)

    def _merge(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + np.outer(delta, delta) * (self.count * count / total)
        self.count = total

    def update(self, features) -> "RunningStats":
        """Adds a batch ``[n, dim]`` of feature vectors."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise FrechetError(f"features must be [n, {self.dim}]; got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise FrechetError("features contain NaN or inf")
        if x.shape[0]:
            mean = x.mean(axis=0)
            centred = x - mean
            self._merge(x.shape[0], mean, centred.T @ centred)
        return self

    def merge(self, other: "RunningStats") -> "RunningStats":
        """Adds another accumulator's samples (e.g. from another host or file)."""
        if other.dim != self.dim:
            raise FrechetError(
                f"cannot merge statistics of {other.dim}-d features into {self.dim}-d"
            )
        self._merge(other.count, other.mean, other.m2)
        return self

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (``numpy.cov`` of the samples); needs at least 2 samples."""
        if self.count < 2:
            raise FrechetError(f"a covariance needs at least 2 samples; these statistics hold "
                               f"{self.count}")
        return self.m2 / (self.count - 1)

    def __repr__(self) -> str:
        return f"RunningStats(dim={self.dim}, count={self.count})"


def fd_of_stats(a: RunningStats, b: RunningStats) -> float:
    """Fréchet distance between the Gaussians of two accumulators."""
    if a.dim != b.dim:
        raise FrechetError(f"statistics of {a.dim}-d and {b.dim}-d features cannot be compared "
                           "(features from different networks or outputs?)")
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


_FORMAT = "nuwa_xl_jax.frechet_stats/1"


def save_statistics(path: str, stats: Mapping[str, RunningStats] | RunningStats,
                    meta: Mapping[str, Any] | None = None) -> str:
    """Writes one or more named accumulators (count, mean, scatter) and JSON ``meta`` to ``.npz``.

    ``meta`` should say what made the features (network, output, resolution, weights file) so a
    later comparison can refuse mismatched statistics. A single accumulator is saved as ``"stats"``.
    """
    if isinstance(stats, RunningStats):
        stats = {"stats": stats}
    arrays: dict[str, np.ndarray] = {}
    for name, s in stats.items():
        if "/" in name:
            raise FrechetError(f"statistics name {name!r} may not contain '/'")
        arrays[f"{name}/count"] = np.asarray(s.count, np.int64)
        arrays[f"{name}/mean"] = s.mean
        arrays[f"{name}/m2"] = s.m2
    header = {"format": _FORMAT, "names": list(stats), "meta": dict(meta or {})}
    arrays["header"] = np.asarray(json.dumps(header))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if not path.endswith(".npz"):
        path = path + ".npz"
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_statistics(path: str) -> tuple[dict[str, RunningStats], dict[str, Any]]:
    """Reads what :func:`save_statistics` wrote: ``({name: RunningStats}, meta)``."""
    if not os.path.isfile(path):
        raise FrechetError(f"statistics file {path!r} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        header = json.loads(str(data["header"]))
    except Exception as e:  # not an npz, truncated, or no header
        raise FrechetError(
            f"{path!r} is not a statistics file written by save_statistics: {e}"
        ) from e
    if header.get("format") != _FORMAT:
        raise FrechetError(f"{path!r} has format {header.get('format')!r}; expected {_FORMAT!r}")
    out = {}
    for name in header["names"]:
        mean = np.asarray(data[f"{name}/mean"], np.float64)
        s = RunningStats(mean.shape[0])
        s.count, s.mean = int(data[f"{name}/count"]), mean
        s.m2 = np.asarray(data[f"{name}/m2"], np.float64)
        if s.m2.shape != (s.dim, s.dim):
            raise FrechetError(f"{path!r}: {name}/m2 has shape {s.m2.shape}, expected "
                               f"({s.dim}, {s.dim})")
        out[name] = s
    return out, header["meta"]


# ------------------------------------------------------------------------- streaming helpers


def _frames_of(video) -> Iterator[np.ndarray]:
    """Frames ``[H, W, 3]`` of an array ``[T, H, W, 3]`` or of any iterable of frames."""
    if isinstance(video, np.ndarray) and video.ndim == 4:
        yield from video
        return
    for frame in video:
        yield np.asarray(frame)


def _padded_call(feature_fn: FeatureFn, items: list[np.ndarray], batch_size: int) -> np.ndarray:
    """``feature_fn`` on a fixed-size batch (the last one padded by repetition; one compile)."""
    n = len(items)
    batch = np.stack(items + [items[-1]] * (batch_size - n))
    out = np.asarray(feature_fn(batch))
    if out.ndim != 2 or out.shape[0] != batch_size:
        raise FrechetError(f"feature_fn must return [batch, dim]; got shape {out.shape} for a "
                           f"batch of {batch_size}")
    return out[:n]


def frame_statistics(videos: Iterable, feature_fn: FeatureFn, batch_size: int = 32,
                     stats: RunningStats | None = None) -> RunningStats:
    """Statistics of ``feature_fn`` over every frame of every video, ``batch_size`` frames at a
    time.

    ``videos``: arrays ``[T, H, W, 3]`` or iterables of frames (generators stream long videos).
    All frames must share one shape.
    """
    pending: list[np.ndarray] = []
    shape = None
    for v, video in enumerate(videos):
        for t, frame in enumerate(_frames_of(video)):
            if shape is None:
                shape = frame.shape
            elif frame.shape != shape:
                raise FrechetError(f"video {v} frame {t} has shape {frame.shape}, earlier frames "
                                   f"{shape}: resize every video to one resolution first")
            pending.append(frame)
            if len(pending) == batch_size:
                feats = _padded_call(feature_fn, pending, batch_size)
                stats = stats or RunningStats(feats.shape[1])
                stats.update(feats)
                pending = []
    if pending:
        feats = _padded_call(feature_fn, pending, batch_size)
        stats = stats or RunningStats(feats.shape[1])
        stats.update(feats)
    if stats is None:
        raise FrechetError("no frames: the video list is empty")
    return stats


def _blocks_of(video, block: int, index: int) -> Iterator[np.ndarray]:
    buffer: list[np.ndarray] = []
    frames = 0
    for frame in _frames_of(video):
        buffer.append(frame)
        frames += 1
        if len(buffer) == block:
            yield np.stack(buffer)
            buffer = []
    if frames < block:
        raise FrechetError(f"video {index} has {frames} frames; B-FVD-{block} needs at least "
                           f"{block} (one block). Generate or pass longer videos")


def block_statistics(videos: Iterable, feature_fn: FeatureFn, block: int = BLOCK,
                     batch_size: int = 4) -> list[RunningStats]:
    """Per-block-index statistics: entry i holds the features of block i (frames
    ``[i*block, (i+1)*block)``) of every video. A trailing partial block is dropped. Videos may
    differ in length; a block index then holds fewer samples."""
    per_block: list[RunningStats] = []
    for v, video in enumerate(videos):
        pending: list[np.ndarray] = []
        first = 0  # block index of pending[0]

        def flush():
            feats = _padded_call(feature_fn, pending, batch_size)
            for j, f in enumerate(feats):
                i = first + j
                while len(per_block) <= i:
                    per_block.append(RunningStats(feats.shape[1]))
                per_block[i].update(f[None])

        for clip in _blocks_of(video, block, v):
            pending.append(clip)
            if len(pending) == batch_size:
                flush()
                first += len(pending)
                pending = []
        if pending:
            flush()
    if not per_block:
        raise FrechetError("no videos: the video list is empty")
    return per_block


def avg_fid(generated: RunningStats, reference: RunningStats) -> float:
    """Avg-FID from frame statistics (:func:`frame_statistics` of each set)."""
    return fd_of_stats(generated, reference)


def b_fvd(generated: Sequence[RunningStats], reference: Sequence[RunningStats]
          ) -> tuple[float, list[float]]:
    """B-FVD from per-block statistics (:func:`block_statistics`): (mean over blocks, per block).

    Block i is compared with block i; both sets must have the same number of blocks and at least
    2 videos in each (a covariance needs 2 samples).
    """
    if len(generated) != len(reference):
        raise FrechetError(f"generated videos have {len(generated)} blocks, the reference "
                           f"{len(reference)}: B-FVD compares block i with block i, so both sets "
                           "must have the same length (cut or generate to match)")
    per_block = []
    for i, (g, r) in enumerate(zip(generated, reference)):
        for name, s in (("generated", g), ("reference", r)):
            if s.count < 2:
                raise FrechetError(f"block {i}: the {name} set has {s.count} clip(s); B-FVD needs "
                                   "at least 2 videos per set to estimate a covariance")
        per_block.append(fd_of_stats(g, r))
    return float(np.mean(per_block)), per_block
