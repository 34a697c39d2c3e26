"""TFDS builder ``flintstones_hd``: the paper's FlintstonesHD from a folder you provide.

The dataset has no public download, so this is a manual-download builder: it reads episode videos
plus per-frame captions from the manual folder, decodes them with PyAV (bundled ffmpeg), resizes
the short side to the configured resolution and centre-crops, and writes the chunked ArrayRecord
storage of builders/chunks.py (JPEG frames). Readable with ``tfds.data_source``, no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import av
import numpy as np
import tensorflow_datasets as tfds

from nuwa_xl_jax.data.builders import chunks

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the episodes in the manual folder (by default <data_dir>/downloads/manual/, or pass
--manual_dir / download_config=tfds.download.DownloadConfig(manual_dir=...)):

  MANUAL_DIR/
    NAME.mp4         one episode (any of .mp4 .mkv .webm .avi .mov, any resolution)
    NAME.json        its captions: a JSON list of strings, exactly one per decoded video frame
    ...              (more episodes, each a video + a JSON of the same NAME)
    splits.json      optional: {"train": [NAME, ...], "test": [NAME, ...]};
                     without it every episode goes to the "train" split

Every video needs its captions file, and the list must have as many entries as the video has
frames (for the paper's data: GIT2 captions of every frame). Frames are resized so the short side
matches the configured resolution and centre-cropped.
"""


class ManualFolderError(FileNotFoundError):
    """The manual folder is missing or does not follow MANUAL_DOWNLOAD_INSTRUCTIONS."""


class CaptionsError(ValueError):
    """A captions file is malformed or does not match its video."""


@dataclasses.dataclass(kw_only=True)
class FlintstonesHDConfig(tfds.core.BuilderConfig):
    resolution: tuple = (256, 256)
    chunk_frames: int = 16
    jpeg_quality: int = 95


def make_config(resolution=(256, 256), chunk_frames: int = 16,
                jpeg_quality: int = 95) -> FlintstonesHDConfig:
    h, w = (int(r) for r in resolution)
    return FlintstonesHDConfig(name=f"r{h}x{w}_c{chunk_frames}_q{jpeg_quality}",
                               description=f"{h}x{w}, {chunk_frames} frames per record",
                               resolution=(h, w), chunk_frames=int(chunk_frames),
                               jpeg_quality=int(jpeg_quality))


def scan(manual_dir: str) -> dict[str, list[tuple[str, str, str]]]:
    """{split: [(name, video path, captions path)]} of a manual folder, checked for completeness."""
    manual_dir = os.fspath(manual_dir)
    if not os.path.isdir(manual_dir):
        raise ManualFolderError(
            f"FlintstonesHD manual folder {manual_dir!r} does not exist.\n"
            + MANUAL_DOWNLOAD_INSTRUCTIONS)
    files = sorted(os.listdir(manual_dir))
    videos = {os.path.splitext(f)[0]: os.path.join(manual_dir, f) for f in files
              if f.lower().endswith(VIDEO_EXTENSIONS)}
    if not videos:
        raise ManualFolderError(
            f"FlintstonesHD manual folder {manual_dir!r} holds no video files "
            f"({', '.join(VIDEO_EXTENSIONS)}).\n" + MANUAL_DOWNLOAD_INSTRUCTIONS)
    missing = [
        p for n, p in videos.items() if not os.path.isfile(os.path.join(manual_dir, n + ".json"))
    ]
    if missing:
        raise ManualFolderError(
            f"no captions file for video(s) {', '.join(missing)}: put a JSON list of one caption "
            f"per frame next to each video, named like the video with .json (e.g. "
            f"{os.path.splitext(missing[0])[0]}.json).")
    episodes = {n: (n, p, os.path.join(manual_dir, n + ".json")) for n, p in videos.items()}
    splits_path = os.path.join(manual_dir, "splits.json")
    if not os.path.isfile(splits_path):
        return {"train": [episodes[n] for n in sorted(episodes)]}
    try:
        with open(splits_path) as f:
            splits = json.load(f)
    except (OSError, ValueError) as err:
        raise ManualFolderError(f"{splits_path} is not valid JSON ({err}); expected "
                                '{"train": [NAME, ...], "test": [NAME, ...]}') from err
    if not isinstance(splits, dict) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in splits.values()):
        raise ManualFolderError(f"{splits_path} must map split names to lists of episode names, "
                                'e.g. {"train": ["ep1"], "test": ["ep2"]}')
    unknown = sorted({n for v in splits.values() for n in v} - set(episodes))
    if unknown:
        raise ManualFolderError(f"{splits_path} names episode(s) with no video in {manual_dir}: "
                                f"{', '.join(unknown)}")
    return {s: [episodes[n] for n in names] for s, names in splits.items() if names}


def read_captions(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            captions = json.load(f)
    except (OSError, ValueError) as err:
        raise CaptionsError(f"captions file {path} is not valid JSON ({err}); expected a JSON list "
                            "of strings, one per video frame") from err
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise CaptionsError(f"captions file {path} must hold a JSON list of strings, one per video "
                            f"frame; got {type(captions).__name__}")
    if not captions:
        raise CaptionsError(f"captions file {path} is empty; it needs one caption per video frame")
    return captions


def video_frame_count(path: str) -> int:
    """The frame count the container declares (0 when it does not say)."""
    with av.open(path) as container:
        return int(container.streams.video[0].frames or 0)


def decode_frames(path: str, resolution: tuple[int, int]):
    """Yields uint8 [H, W, 3] frames: short side resized to the resolution, then centre-cropped."""
    h, w = resolution
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            scale = max(h / frame.height, w / frame.width)
            rh, rw = max(h, round(frame.height * scale)), max(w, round(frame.width * scale))
            img = frame.reformat(width=rw, height=rh, format="rgb24",
                                 interpolation="AREA").to_ndarray()
            top, left = (rh - h) // 2, (rw - w) // 2
            yield np.ascontiguousarray(img[top:top + h, left:left + w])


def _counted(frames, expected: int, video: str, captions: str):
    n = 0
    for f in frames:
        n += 1
        if n > expected:
            raise CaptionsError(f"video {video} has more frames than the {expected} captions in "
                                f"{captions}; the captions file needs one entry per frame")
        yield f
    if n != expected:
        raise CaptionsError(f"video {video} has {n} frames but {captions} holds {expected} "
                            "captions; the captions file needs one entry per frame")


class FlintstonesHD(chunks.PlainCodePath, tfds.core.GeneratorBasedBuilder):
    """FlintstonesHD episodes with per-frame captions, chunked for window sampling."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [make_config((256, 256)), make_config((128, 128))]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                     features=chunks.features(), disable_shuffling=True,
                                     metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        c = self.builder_config
        splits = scan(dl_manager.manual_dir)
        tables, episodes = {}, {}
        for split, eps in splits.items():
            caps = []
            for name, video, cap_path in eps:
                captions = read_captions(cap_path)
                declared = video_frame_count(video)
                if declared and declared != len(captions):
                    raise CaptionsError(
                        f"video {video} declares {declared} frames but {cap_path} holds "
                        f"{len(captions)} captions; the captions file needs one entry per frame")
                caps.append(captions)
            tables[split] = chunks.episode_table([e[0] for e in eps], [len(x) for x in caps],
                                                 c.chunk_frames)
            episodes[split] = [(e[1], e[2], x) for e, x in zip(eps, caps)]
            logging.info("flintstones_hd %s: %d episodes, %d frames", split, len(eps),
                         sum(len(x) for x in caps))
        self.info.metadata["chunk_frames"] = c.chunk_frames
        self.info.metadata["resolution"] = list(c.resolution)
        self.info.metadata["image_format"] = "jpeg"
        self.info.metadata["splits"] = tables
        return {s: self._generate_examples(episodes[s]) for s in splits}

    def _generate_examples(self, episodes):
        c = self.builder_config
        for e, (video, cap_path, captions) in enumerate(episodes):
            frames = _counted(decode_frames(video, c.resolution), len(captions), video, cap_path)
            yield from chunks.chunk_records(e, frames, captions, c.chunk_frames, "jpeg",
                                            c.jpeg_quality)


def make_builder(data_dir: str, manual_dir: str | None = None, **config) -> FlintstonesHD:
    """The builder for ``config`` (see ``make_config``); ``prepare`` builds it from
    ``manual_dir``."""
    cfg = make_config(**config)
    # TFDS refuses a custom config named like a predefined one: pass the predefined one's name.
    if any(c.name == cfg.name for c in FlintstonesHD.BUILDER_CONFIGS):
        cfg = cfg.name
    return FlintstonesHD(config=cfg, data_dir=data_dir,
                         file_format="array_record")


def prepare(data_dir: str, manual_dir: str | None = None, **config) -> FlintstonesHD:
    """Builds the dataset from ``manual_dir`` (default <data_dir>/downloads/manual) if not built
    yet;
    checks the folder first so a bad one is a ManualFolderError / CaptionsError naming the file."""
    builder = make_builder(data_dir, **config)
    if builder.is_prepared():
        return builder
    scan(manual_dir or os.path.join(os.fspath(data_dir), "downloads", "manual"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None)
    return builder
