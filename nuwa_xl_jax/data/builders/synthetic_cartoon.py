"""TFDS builder ``synthetic_cartoon``: episodes of the procedural cartoon world (data/synthetic.py)
written as chunked ArrayRecord (builders/chunks.py), readable with ``tfds.data_source`` without
TensorFlow. Frames are lossless PNG, so probes on stored frames see exactly the rendered truth;
each record also carries the per-frame ground truth.

Any (episodes, length, resolution, chunk, seed) is a builder config: ``make_builder`` names it
from its parameters, so one data_dir holds several variants side by side.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.data.builders import chunks

TEST_SEED_OFFSET = 1_000_003  # test episodes come from another seed stream than training ones


@dataclasses.dataclass(kw_only=True)
class SyntheticCartoonConfig(tfds.core.BuilderConfig):
    episodes: int = 8
    test_episodes: int = 2
    episode_length: int = 3376
    resolution: tuple = (64, 64)
    chunk_frames: int = 16
    seed: int = 0


def config_name(episodes, test_episodes, episode_length, resolution, chunk_frames, seed) -> str:
    h, w = resolution
    return f"e{episodes}_v{test_episodes}_t{episode_length}_r{h}x{w}_c{chunk_frames}_s{seed}"


def make_config(
    episodes: int = 8,
    test_episodes: int = 2,
    episode_length: int = 3376,
    resolution=(64, 64),
    chunk_frames: int = 16,
    seed: int = 0,
) -> SyntheticCartoonConfig:
    for field, v in (("episodes", episodes), ("episode_length", episode_length),
                     ("chunk_frames", chunk_frames)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"synthetic_cartoon {field} must be a positive integer, got {v!r}")
    if test_episodes < 0:
        raise ValueError(f"synthetic_cartoon test_episodes must be >= 0, got {test_episodes!r}")
    resolution = tuple(int(r) for r in resolution)
    name = config_name(episodes, test_episodes, episode_length, resolution, chunk_frames, seed)
    return SyntheticCartoonConfig(
        name=name, description="procedural cartoon world", episodes=int(episodes),
        test_episodes=int(test_episodes), episode_length=int(episode_length),
        resolution=resolution, chunk_frames=int(chunk_frames), seed=int(seed))


class SyntheticCartoon(chunks.PlainCodePath, tfds.core.GeneratorBasedBuilder):
    """Chunked episodes of the synthetic cartoon world with captions and ground truth."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [make_config(4, 1, 256, (32, 32), 16, 0), make_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        K = len(synthetic.CHARACTERS)
        extra = {
            "scene": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "visible": tfds.features.Tensor(shape=(None, K), dtype=np.bool_),
            "x": tfds.features.Tensor(shape=(None, K), dtype=np.float32),
            "y": tfds.features.Tensor(shape=(None, K), dtype=np.float32),
            "size": tfds.features.Tensor(shape=(None, K), dtype=np.float32),
            "action": tfds.features.Tensor(shape=(None, K), dtype=np.int8),
        }
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=chunks.features(extra),
            disable_shuffling=True, metadata=tfds.core.MetadataDict())

    def _episodes(self, split: str) -> list[tuple[int, int]]:
        """(seed, episode index) of each episode of ``split``."""
        c = self.builder_config
        if split == "train":
            return [(c.seed, i) for i in range(c.episodes)]
        return [(c.seed + TEST_SEED_OFFSET, i) for i in range(c.test_episodes)]

    def _split_generators(self, dl_manager):
        c = self.builder_config
        splits = ["train"] + (["test"] if c.test_episodes else [])
        self.info.metadata["chunk_frames"] = c.chunk_frames
        self.info.metadata["resolution"] = list(c.resolution)
        self.info.metadata["image_format"] = "png"
        self.info.metadata["splits"] = {
            s: chunks.episode_table([f"{s}_{i:05d}" for i in range(len(self._episodes(s)))],
                                    [c.episode_length] * len(self._episodes(s)), c.chunk_frames)
            for s in splits}
        return {s: self._generate_examples(s) for s in splits}

    def _generate_examples(self, split: str):
        c = self.builder_config
        for e, (seed, index) in enumerate(self._episodes(split)):
            truth = synthetic.simulate(seed, c.episode_length, index)
            extra = {"scene": truth.scene, "visible": truth.visible, "x": truth.x, "y": truth.y,
                     "size": truth.size, "action": truth.action}
            frames = (f for a in range(0, c.episode_length, c.chunk_frames)
                      for f in synthetic.render(truth.take(slice(a, a + c.chunk_frames)),
                                                c.resolution))
            yield from chunks.chunk_records(e, frames, truth.captions, c.chunk_frames, "png",
                                            extra=extra)


def make_builder(data_dir: str, **config) -> SyntheticCartoon:
    """The builder for these parameters (see ``make_config``); ``download_and_prepare()`` builds
    it."""
    cfg = make_config(**config)
    # TFDS refuses a custom config named like a predefined one: pass the predefined one's name.
    if any(c.name == cfg.name for c in SyntheticCartoon.BUILDER_CONFIGS):
        cfg = cfg.name
    return SyntheticCartoon(config=cfg, data_dir=data_dir,
                            file_format="array_record")


def prepare(data_dir: str, **config) -> SyntheticCartoon:
    """Builds the dataset if it is not in ``data_dir`` yet (generation needs no download)."""
    builder = make_builder(data_dir, **config)
    builder.download_and_prepare()
    return builder
