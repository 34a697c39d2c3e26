"""The ``train`` config block of record and its validation."""
from __future__ import annotations

from typing import Any

import ml_collections

from nuwa_xl_jax.configuration.checks import ConfigError, check_fields


def train_block() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.steps = 1000
    c.batch_size = 8  # global, over all processes and devices
    c.learning_rate = 1e-4
    c.warmup_steps = 100
    c.end_lr_fraction = 0.1
    c.weight_decay = 0.01
    c.clip_norm = 1.0
    c.b1 = 0.9
    c.b2 = 0.999
    c.ema_decay = 0.999
    c.accumulate_steps = 1  # gradient accumulation (optax.MultiSteps)
    c.log_every = 10
    c.checkpoint_every = 200
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    c.sample_every = 0  # MTD stages: write sample frames every N steps (0 = never)
    c.prompt_dropout = 0.1  # MTD: share of prompts replaced by the null prompt (guidance)
    # MTD [ours]: extra loss weight (up to 1 + this) on latent positions far from their frame's
    # median latent, i.e. on small objects over flat backgrounds; 0 = the paper's plain mean
    c.saliency_weight = 0.0
    # MTD [ours]: "" (random init) or an earlier stage whose exported weights start this one, e.g.
    # "mtd_global" for local stages: the paper starts every MTD from one pretrained text-to-image
    # UNet; without one, the trained global model is the nearest thing (same architecture)
    c.init_from = ""
    return c


def validate_train(c: Any, path: str = "train") -> None:
    check_fields(c, train_block().keys(), path)
    for f in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
              "accumulate_steps"):
        v = c[f]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{path}.{f} must be a positive integer, got {v!r}")
    if c.warmup_steps < 0 or c.sample_every < 0:
        raise ConfigError(f"{path}.warmup_steps and {path}.sample_every must be >= 0")
    if not c.learning_rate > 0:
        raise ConfigError(f"{path}.learning_rate must be > 0, got {c.learning_rate}")
    if not 0.0 <= c.ema_decay < 1.0:
        raise ConfigError(f"{path}.ema_decay must be in [0, 1), got {c.ema_decay}")
    if not c.saliency_weight >= 0:
        raise ConfigError(f"{path}.saliency_weight must be >= 0 (0 = off), got {c.saliency_weight}")
    if not isinstance(c.init_from, str) or (c.init_from and not c.init_from.startswith("mtd_")):
        raise ConfigError(f"{path}.init_from must be '' or an MTD stage (e.g. 'mtd_global'), "
                          f"got {c.init_from!r}")
    if not 0.0 <= c.prompt_dropout <= 1.0:
        raise ConfigError(f"{path}.prompt_dropout must be in [0, 1], got {c.prompt_dropout}")


def check_batch_divides(batch_size: int, devices: int, processes: int, path: str = "train.batch_size"):
    """The global batch must split evenly over processes and the batch-axis devices."""
    if batch_size % devices:
        raise ConfigError(f"{path}={batch_size} is not divisible by the {devices} data-parallel "
                          f"devices of the mesh; use a multiple of {devices}")
    if batch_size % processes:
        raise ConfigError(f"{path}={batch_size} is not divisible by the {processes} processes")
