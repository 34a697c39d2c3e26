"""The ``data`` config block of record and its validation (wired into configs/ by the lead)."""
from __future__ import annotations

from typing import Any

import ml_collections

from nuwa_xl_jax.configuration.checks import ConfigError, check_fields

DATASETS = ("synthetic_cartoon", "flintstones_hd")
MODES = ("dod", "ar", "artv")


def data_block() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.dataset = "synthetic_cartoon"   # 'synthetic_cartoon' (built on demand) | 'flintstones_hd'
    c.data_dir = ""                   # TFDS data_dir; "" = TFDS's default (~/tensorflow_datasets)
    c.manual_dir = ""                 # flintstones_hd: the folder of videos + captions
    c.split = "train"
    # synthetic_cartoon world (ignored for flintstones_hd)
    c.episodes = 8
    c.test_episodes = 2
    c.episode_length = 3376
    c.world_seed = 0
    # storage
    c.resolution = (64, 64)
    c.chunk_frames = 16               # frames per stored record
    # examples (data/sampling.py)
    c.mode = "dod"                    # 'dod' levels | 'ar' autoregressive baseline | 'artv'
    c.frames_per_call = 16            # L
    c.depth = 3                       # m: the window is (L-1)^m + 1 frames
    c.level = 0                       # 0 global, d local depth d, -1 random level per example
    c.ar_stride = 1
    c.ar_prefix = 8
    c.samples_per_episode = 0         # examples per episode per epoch; 0 = frames // window
    # pipeline
    c.batch_size = 8                  # global, over all processes
    c.shuffle_seed = 0
    c.num_epochs = 0                  # 0 = repeat forever
    c.workers = 0                     # grain multiprocess prefetch workers; 0 = in-process
    c.max_length = 16                 # prompt tokens per frame (built-in word tokenizer)
    c.latent_dir = ""                 # a latent cache (data/latent_cache.py): read latents instead
    return c


def _int(c: Any, field: str, path: str, minimum: int) -> None:
    v = c[field]
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError(f"{path}.{field} must be an integer >= {minimum}, got {v!r}")


def validate_data(c: Any, path: str = "data") -> None:
    """Raises ConfigError naming the field for any value the pipeline cannot work with."""
    check_fields(c, data_block().keys(), path)
    if c.dataset not in DATASETS:
        raise ConfigError(f"{path}.dataset must be one of {', '.join(DATASETS)}, got {c.dataset!r}")
    if c.mode not in MODES:
        raise ConfigError(f"{path}.mode must be one of {', '.join(MODES)}, got {c.mode!r}")
    for f, lo in (("episodes", 1), ("test_episodes", 0), ("episode_length", 2),
                  ("chunk_frames", 1), ("frames_per_call", 3), ("depth", 1), ("ar_stride", 1),
                  ("ar_prefix", 0), ("samples_per_episode", 0), ("batch_size", 1),
                  ("num_epochs", 0), ("workers", 0), ("max_length", 3), ("world_seed", 0),
                  ("shuffle_seed", 0)):
        _int(c, f, path, lo)
    res = tuple(c.resolution)
    if len(res) != 2 or not all(isinstance(r, int) and r >= 8 for r in res):
        raise ConfigError(f"{path}.resolution must be (height, width) integers >= 8, got {res!r}")
    if c.mode == "dod" and not -1 <= c.level < c.depth:
        raise ConfigError(f"{path}.level must be -1 (random) or in 0..{c.depth - 1} for "
                          f"{path}.depth={c.depth}, got {c.level!r}")
    if c.mode == "ar" and c.ar_prefix >= c.frames_per_call:
        raise ConfigError(f"{path}.ar_prefix={c.ar_prefix} must be < {path}.frames_per_call="
                          f"{c.frames_per_call}")
    window = ((c.frames_per_call - 1) * c.ar_stride + 1 if c.mode == "ar"
              else (c.frames_per_call - 1) ** c.depth + 1)
    if c.dataset == "synthetic_cartoon" and c.episode_length < window:
        raise ConfigError(f"{path}.episode_length={c.episode_length} is shorter than one window of "
                          f"{window} frames (L={c.frames_per_call}, depth={c.depth}); raise it or "
                          f"lower {path}.frames_per_call / {path}.depth")
    if c.dataset == "flintstones_hd" and not c.data_dir and not c.manual_dir:
        raise ConfigError(f"{path}.dataset='flintstones_hd' needs {path}.manual_dir (the folder of "
                          f"episode videos + caption JSONs) or a {path}.data_dir where it is built")
