"""The typed ``data`` block (:class:`DataConfig`): dataset, storage, examples and pipeline
settings, checked once; ``data_block()`` is its ConfigDict form for config files."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import ml_collections

from nuwa_xl_jax.configuration.block import Block, int_at_least
from nuwa_xl_jax.configuration.checks import ConfigError

DATASETS = ("synthetic_cartoon", "flintstones_hd")
MODES = ("dod", "ar", "artv")
_INT_MINIMA = (("episodes", 1), ("test_episodes", 0), ("episode_length", 2), ("chunk_frames", 1),
               ("frames_per_call", 3), ("depth", 1), ("ar_stride", 1), ("ar_prefix", 0),
               ("samples_per_episode", 0), ("batch_size", 1), ("num_epochs", 0), ("workers", 0),
               ("max_length", 3), ("world_seed", 0), ("shuffle_seed", 0))


@dataclasses.dataclass(frozen=True)
class DataConfig(Block):
    dataset: str = "synthetic_cartoon"  # 'synthetic_cartoon' (built on demand) | 'flintstones_hd'
    data_dir: str = ""                  # TFDS data_dir; "" = TFDS's default (~/tensorflow_datasets)
    manual_dir: str = ""                # flintstones_hd: the folder of videos + captions
    split: str = "train"
    # synthetic_cartoon world (ignored for flintstones_hd)
    episodes: int = 8
    test_episodes: int = 2
    episode_length: int = 3376
    world_seed: int = 0
    # storage
    resolution: tuple[int, int] = (64, 64)
    chunk_frames: int = 16              # frames per stored record
    # examples (data/sampling.py)
    mode: str = "dod"                   # 'dod' levels | 'ar' autoregressive baseline | 'artv'
    frames_per_call: int = 16           # L
    depth: int = 3                      # m: the window is (L-1)^m + 1 frames
    level: int = 0                      # 0 global, d local depth d, -1 random level per example
    ar_stride: int = 1
    ar_prefix: int = 8
    # dod: each frame between a segment's ends also given with this probability, so frames pinned
    # by keyframe images (dod/pins.py) are in distribution; 0 = the paper's masks (ends only)
    extra_given: float = 0.0
    samples_per_episode: int = 0        # examples per episode per epoch; 0 = frames // window
    # pipeline
    batch_size: int = 8                 # global, over all processes
    shuffle_seed: int = 0
    num_epochs: int = 0                 # 0 = repeat forever
    workers: int = 0                    # grain multiprocess prefetch workers; 0 = in-process
    max_length: int = 16  # prompt tokens per frame (built-in word tokenizer)
    latent_dir: str = ""  # a latent cache (data/latent_cache.py): read latents instead

    PATH: ClassVar[str] = "data"
    TUPLES: ClassVar[tuple[str, ...]] = ("resolution",)
    STRINGS: ClassVar[tuple[str, ...]] = ("data_dir", "manual_dir", "split", "latent_dir")

    def __post_init__(self):
        path = self._normalise_and_check_types()
        if self.dataset not in DATASETS:
            raise ConfigError(f"{path}.dataset must be one of {', '.join(DATASETS)}, "
                              f"got {self.dataset!r}")
        if self.mode not in MODES:
            raise ConfigError(f"{path}.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for f, lo in _INT_MINIMA:
            int_at_least(getattr(self, f), f"{path}.{f}", lo)
        if isinstance(self.extra_given, bool) or not isinstance(self.extra_given, (int, float)) \
                or not 0 <= self.extra_given < 1:
            raise ConfigError(f"{path}.extra_given must be a probability in [0, 1), got "
                              f"{self.extra_given!r}; 0 keeps the paper's masks (ends given)")
        res = self.resolution
        if len(res) != 2 or not all(isinstance(r, int) and r >= 8 for r in res):
            raise ConfigError(
                f"{path}.resolution must be (height, width) integers >= 8, got {res!r}"
            )
        if self.mode == "dod" and not -1 <= self.level < self.depth:
            raise ConfigError(f"{path}.level must be -1 (random) or in 0..{self.depth - 1} for "
                              f"{path}.depth={self.depth}, got {self.level!r}")
        if self.mode == "ar" and self.ar_prefix >= self.frames_per_call:
            raise ConfigError(f"{path}.ar_prefix={self.ar_prefix} must be < {path}.frames_per_call="
                              f"{self.frames_per_call}")
        if self.dataset == "synthetic_cartoon" and self.episode_length < self.window:
            raise ConfigError(f"{path}.episode_length={self.episode_length} is shorter than one "
                              f"window of {self.window} frames (L={self.frames_per_call}, "
                              f"depth={self.depth}); raise it or lower {path}.frames_per_call / "
                              f"{path}.depth")
        if self.dataset == "flintstones_hd" and not self.data_dir and not self.manual_dir:
            raise ConfigError(
                f"{path}.dataset='flintstones_hd' needs {path}.manual_dir (the folder "
                f"of episode videos + caption JSONs) or a {path}.data_dir where it is "
                "built"
            )

    @property
    def window(self) -> int:
        """Frames one example spans: (L-1) * stride + 1 (ar), else (L-1)^depth + 1."""
        L = self.frames_per_call
        return (L - 1) * self.ar_stride + 1 if self.mode == "ar" else (L - 1) ** self.depth + 1


def data_block() -> ml_collections.ConfigDict:
    """The ``data`` block of a config file: :class:`DataConfig`'s fields and defaults."""
    return ml_collections.ConfigDict(DataConfig().to_dict())

