"""The typed training blocks (:class:`TrainConfig`: ``train``, ``local_train``, ``vae_train``,
``vae_image_train``): optimizer, schedule, EMA, checkpoints and the MTD loss options, checked
once; ``train_block()`` is its ConfigDict form for config files."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import ml_collections

from nuwa_xl_jax.configuration.block import Block, positive_int
from nuwa_xl_jax.configuration.checks import ConfigError

# The config's training blocks, each a TrainConfig under its own name.
BLOCKS = ("train", "local_train", "vae_train", "vae_image_train")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Block):
    steps: int = 1000
    batch_size: int = 8  # global, over all processes and devices
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    end_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 1.0  # global-norm gradient clipping; 0 = none
    b1: float = 0.9
    b2: float = 0.999
    ema_decay: float = 0.999
    accumulate_steps: int = 1  # gradient accumulation (optax.MultiSteps)
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    sample_every: int = 0  # MTD stages: write sample frames every N steps (0 = never)
    prompt_dropout: float = 0.1  # MTD: share of prompts replaced by the null prompt (guidance)
    # MTD [ours]: extra loss weight (up to 1 + this) on latent positions far from their frame's
    # median latent, i.e. on small objects over flat backgrounds; 0 = the paper's plain mean
    saliency_weight: float = 0.0
    # MTD [ours]: "" (random init) or an earlier stage whose exported weights start this one, e.g.
    # "mtd_global" for local stages: the paper starts every MTD from one pretrained text-to-image
    # UNet; without one, the trained global model is the nearest thing (same architecture)
    init_from: str = ""
    # Which layers train when the model starts from an image model (model.*.init_from, or the
    # vae stage after vae_image): 'all', or 'added' (only the layers NUWA-XL adds: temporal convs
    # and attentions, the condition cascades and injections, the level embedding; the image
    # model's own layers stay as they were), or 'decoder' (vae stages: only the VAE's decoder, the
    # encoder and so its latent space held, as SD's ft-EMA/ft-MSE decoders were fine-tuned). The
    # text encoder has its own switch (model.text.trainable).
    train_layers: str = "all"

    PATH: ClassVar[str] = "train"
    FLOATS: ClassVar[tuple[str, ...]] = ("learning_rate", "end_lr_fraction", "weight_decay",
                                         "clip_norm", "b1", "b2", "ema_decay", "prompt_dropout",
                                         "saliency_weight")
    BOOLS: ClassVar[tuple[str, ...]] = ("async_checkpoints",)

    def __post_init__(self):
        if self.clip_norm is None:  # ConfigDicts accept None for "no clipping": 0 says the same
            self._set("clip_norm", 0.0)
        path = self._normalise_and_check_types()
        for f in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
                  "accumulate_steps"):
            positive_int(getattr(self, f), f"{path}.{f}")
        for f in ("warmup_steps", "sample_every"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{path}.{f} must be an integer >= 0, got {v!r}")
        if not self.clip_norm >= 0:
            raise ConfigError(
                f"{path}.clip_norm must be >= 0 (0 = no clipping), got {self.clip_norm}"
            )
        if not self.learning_rate > 0:
            raise ConfigError(f"{path}.learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{path}.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not self.saliency_weight >= 0:
            raise ConfigError(f"{path}.saliency_weight must be >= 0 (0 = off), got "
                              f"{self.saliency_weight}")
        if not isinstance(self.init_from, str) or (self.init_from and
                                                   not self.init_from.startswith("mtd_")):
            raise ConfigError(f"{path}.init_from must be '' or an MTD stage (e.g. 'mtd_global'), "
                              f"got {self.init_from!r}")
        if self.train_layers not in ("all", "added", "decoder"):
            raise ConfigError(f"{path}.train_layers must be 'all', 'added' (only the layers "
                              "NUWA-XL adds to the image model) or 'decoder' (a VAE's decoder "
                              f"alone), got {self.train_layers!r}")
        if not 0.0 <= self.prompt_dropout <= 1.0:
            raise ConfigError(f"{path}.prompt_dropout must be in [0, 1], got {self.prompt_dropout}")


def train_block() -> ml_collections.ConfigDict:
    """A training block of a config file: :class:`TrainConfig`'s fields and defaults."""
    return ml_collections.ConfigDict(TrainConfig().to_dict())


def check_batch_divides(
    batch_size: int, devices: int, processes: int, path: str = "train.batch_size"
):
    """The global batch must split evenly over processes and the batch-axis devices."""
    if batch_size % devices:
        raise ConfigError(f"{path}={batch_size} is not divisible by the {devices} data-parallel "
                          f"devices of the mesh; use a multiple of {devices}")
    if batch_size % processes:
        raise ConfigError(f"{path}={batch_size} is not divisible by the {processes} processes")
