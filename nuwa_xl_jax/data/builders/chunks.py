"""The chunked episode storage both TFDS builders write, and its reader.

Why chunks: a training window of 3376 frames samples 16 of them; storing an episode as records of
C consecutive frames (each frame its own PNG / JPEG) lets a reader fetch one record per needed
chunk and decode only the needed frames, never a whole episode.

Record (one per chunk, in episode order; shuffling is disabled so the record of chunk c of an
episode is ``first_record + c``): frames [n] encoded images, captions [n] utf-8, episode, chunk,
start (episode frame index of the chunk's first frame), plus any extra per-frame arrays a builder
adds (the synthetic world's ground truth). The episode table lives in the dataset's metadata:
``metadata["splits"][split] = [{"name", "frames", "first_record", "chunks"}, ...]``.
"""
from __future__ import annotations

import inspect
import io
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image


class PlainCodePath:
    """Mixin for builders: TFDS's own ``code_path`` needs the ``importlib_resources`` backport when
    the builder lives in a package; the plain file path is what it computes anyway."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return epath.Path(inspect.getfile(cls))


def features(extra: Mapping[str, Any] | None = None) -> "tfds.features.FeaturesDict":
    spec = {
        "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),
        "captions": tfds.features.Tensor(shape=(None,), dtype=np.object_),
        "episode": np.int32,
        "chunk": np.int32,
        "start": np.int32,
    }
    spec.update(extra or {})
    return tfds.features.FeaturesDict(spec)


def encode_image(frame: np.ndarray, image_format: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    elif image_format == "jpeg":
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def episode_table(names: Sequence[str], lengths: Sequence[int], chunk_frames: int) -> list[dict]:
    table, first = [], 0
    for name, n in zip(names, lengths):
        chunks = -(-int(n) // chunk_frames)
        table.append({"name": str(name), "frames": int(n), "first_record": first, "chunks": chunks})
        first += chunks
    return table


def key(episode: int, chunk: int) -> str:
    """Record keys that sort in episode, chunk order."""
    return f"{episode:06d}_{chunk:07d}"


def chunk_records(episode: int, frames: Iterator[np.ndarray], captions: Sequence[str],
                  chunk_frames: int, image_format: str, quality: int = 95,
                  extra: Mapping[str, np.ndarray] | None = None) -> Iterator[tuple[str, dict]]:
    """(key, record) per chunk from an iterator over the episode's frames, consumed C at a time."""
    buf: list[np.ndarray] = []
    chunk = 0

    def emit(start):
        rec = {"frames": np.array([encode_image(f, image_format, quality) for f in buf], object),
               "captions": np.array([c.encode() for c in captions[start:start + len(buf)]], object),
               "episode": episode, "chunk": chunk, "start": start}
        for k, v in (extra or {}).items():
            rec[k] = v[start:start + len(buf)]
        return key(episode, chunk), rec

    for f in frames:
        buf.append(f)
        if len(buf) == chunk_frames:
            yield emit(chunk * chunk_frames)
            buf, chunk = [], chunk + 1
    if buf:
        yield emit(chunk * chunk_frames)


class EpisodeReader:
    """Random access to frames and captions of the episodes of one split of a chunked dataset.

    ``source`` is anything indexable by record number (a ``tfds`` ArrayRecordDataSource);
    ``table`` the split's episode table from the metadata.
    """

    def __init__(self, source: Any, table: Sequence[Mapping[str, Any]], chunk_frames: int):
        self.source = source
        self.table = list(table)
        self.chunk_frames = int(chunk_frames)

    def __len__(self) -> int:
        return len(self.table)

    def length(self, episode: int) -> int:
        return int(self.table[episode]["frames"])

    def read(self, episode: int, indices: Sequence[int]) -> tuple[np.ndarray, list[str]]:
        """Frames [n, H, W, 3] uint8 and captions of ``indices`` (any order, repeats allowed)."""
        row = self.table[episode]
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= row["frames"]):
            raise IndexError(f"episode {row['name']!r} has {row['frames']} frames; asked for "
                             f"{indices.min()}..{indices.max()}")
        frames: list[np.ndarray | None] = [None] * len(indices)
        captions: list[str] = [""] * len(indices)
        chunk_of = indices // self.chunk_frames
        for c in np.unique(chunk_of):
            rec = self.source[int(row["first_record"] + c)]
            if int(rec["episode"]) != episode or int(rec["chunk"]) != c:
                raise ValueError(
                    f"record {row['first_record'] + c} holds episode {int(rec['episode'])} chunk "
                    f"{int(rec['chunk'])}, expected episode {episode} chunk {c}: the dataset's "
                    "episode table does not match its records; rebuild the dataset")
            for i in np.flatnonzero(chunk_of == c):
                j = int(indices[i] - c * self.chunk_frames)
                frames[i] = decode_image(rec["frames"][j])
                cap = rec["captions"][j]
                captions[i] = cap.decode() if isinstance(cap, bytes) else str(cap)
        return np.stack(frames), captions


def split_table(source: Any, split: str) -> tuple[list[dict], int]:
    """(episode table, chunk_frames) of ``split`` from a data source's dataset metadata."""
    meta = source.dataset_info.metadata
    if meta is None or "splits" not in meta or split not in meta["splits"]:
        raise ValueError(f"dataset {source.dataset_info.full_name} has no episode table for split "
                         f"{split!r} in its metadata; it was not written by nuwa_xl_jax's builders")
    return list(meta["splits"][split]), int(meta["chunk_frames"])
