"""Where episodes come from: the TFDS dataset a data config names, its episode reader, and the
tokenizer of its captions. The input pipeline (``pipeline.py``) and the latent cache
(``latent_cache.py``) both read episodes through here, so neither imports the other's builder."""
from __future__ import annotations

import os
from typing import Any

from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.data.builders import chunks, flintstones_hd, synthetic_cartoon
from nuwa_xl_jax.models.tokenizers import make_tokenizer


def prepare(c: Any):
    """The TFDS builder of ``c.dataset``, built first if needed (synthetic: generated here;
    flintstones_hd: from ``c.manual_dir``)."""
    data_dir = os.path.expanduser(c.data_dir) if c.data_dir else None
    if c.dataset == "synthetic_cartoon":
        return synthetic_cartoon.prepare(
            data_dir, episodes=c.episodes, test_episodes=c.test_episodes,
            episode_length=c.episode_length, resolution=tuple(c.resolution),
            chunk_frames=c.chunk_frames, seed=c.world_seed)
    return flintstones_hd.prepare(data_dir, c.manual_dir or None, resolution=tuple(c.resolution),
                                  chunk_frames=c.chunk_frames)


def episode_reader(c: Any, split: str | None = None):
    """Random access to the frames and captions of ``split`` (default ``c.split``)."""
    split = split or c.split
    source = prepare(c).as_data_source(split)
    table, chunk_frames = chunks.split_table(source, split)
    return chunks.EpisodeReader(source, table, chunk_frames)


def default_tokenizer(c: Any):
    """The synthetic world's word tokenizer, or None for datasets with free-text captions."""
    if c.dataset == "synthetic_cartoon":
        return synthetic.tokenizer(c.max_length)
    return None


def caption_tokenizer(config: Any):
    """The tokenizer of ``config.data``'s captions: the dataset's own, else the text encoder's
    (``config.model.text``), cut to ``data.max_length``."""
    tokenizer = default_tokenizer(config.data)
    if tokenizer is None:
        tokenizer = make_tokenizer(config.model.text)
        if hasattr(tokenizer, "max_length"):
            tokenizer.max_length = config.data.max_length
    return tokenizer
