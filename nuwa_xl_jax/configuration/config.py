"""The typed, frozen whole config (:class:`Config`): every block of a config file as the object
the library reads (``config.data`` a :class:`DataConfig`, ``config.train`` a :class:`TrainConfig`,
...), plus the checks that span blocks (stage order, the VAE's clip, resolution vs downsampling).

:meth:`Config.from_dict` is THE validation: the CLIs call it once on the ConfigDict after
``--config.a.b=v`` overrides, a family's stored ``config.json`` goes through it when loaded (a
field missing from an older file takes its default), and library entry points handed a ConfigDict
(Python callers, tests) call it too. A :class:`Config` passes through it unchanged, so nothing
is checked twice.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from nuwa_xl_jax.configuration.artv import ARTVConfig
from nuwa_xl_jax.configuration.block import positive_int
from nuwa_xl_jax.configuration.checks import ConfigError, check_fields
from nuwa_xl_jax.configuration.data import DataConfig
from nuwa_xl_jax.configuration.diffusion import DiffusionConfig
from nuwa_xl_jax.configuration.generate import GenerateConfig
from nuwa_xl_jax.configuration.mesh import MeshConfig
from nuwa_xl_jax.configuration.model import ModelConfig
from nuwa_xl_jax.configuration.train import TrainConfig
from nuwa_xl_jax.configuration.vae_loss import VAELossConfig

# + mtd_local<d> for each local depth; mtd_image is a text-to-image base's UNet (single frames)
STAGE_NAMES = ("vae_image", "vae", "mtd_image", "mtd_global", "mtd_local", "mtd_ar", "mtd_artv")
# The blocks of a config and their types; None (absent) blocks stay absent.
BLOCKS = {"model": ModelConfig, "vae_loss": VAELossConfig, "diffusion": DiffusionConfig,
          "data": DataConfig, "vae_image_train": TrainConfig, "vae_train": TrainConfig,
          "train": TrainConfig, "local_train": TrainConfig, "mesh": MeshConfig,
          "generate": GenerateConfig, "artv": ARTVConfig}
SCALARS = ("seed", "vae_frames", "vae_context", "stages", "local_models")
TOP_LEVEL = ("seed", "model", "vae_loss", "diffusion", "data", "vae_image_train", "vae_train",
             "vae_frames", "vae_context", "train", "local_train",
             "stages", "local_models", "mesh", "generate", "artv")


def train_block_name(config: Any, stage: str) -> str:
    """The config block that trains ``stage``: vae_image_train, vae_train, local_train (local MTD
    stages, when the config has that block) or train."""
    if stage in ("vae", "vae_image"):
        return f"{stage}_train"
    if stage.startswith("mtd_local") and getattr(config, "local_train", None) is not None:
        return "local_train"
    return "train"


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    model: Optional[ModelConfig] = None
    vae_loss: Optional[VAELossConfig] = None
    diffusion: Optional[DiffusionConfig] = None
    data: Optional[DataConfig] = None
    vae_image_train: Optional[TrainConfig] = None
    vae_train: Optional[TrainConfig] = None
    # The VAE's training clip, also the length of every encode / decode call, and the frames of
    # context each side of a call.
    vae_frames: int = 16
    vae_context: int = 0
    train: Optional[TrainConfig] = None
    local_train: Optional[TrainConfig] = None  # local MTD stages (default: train)
    stages: tuple[str, ...] = ()
    local_models: str = "separate"  # 'separate' (one MTD per depth) | 'shared' (level embedding)
    mesh: Optional[MeshConfig] = None
    generate: Optional[GenerateConfig] = None
    artv: Optional[ARTVConfig] = None

    @classmethod
    def from_dict(cls, config: Any) -> "Config":
        """The typed config of a ConfigDict / dict (a config file after overrides, a stored
        ``config.json``): every block checked, an unknown field an error, a missing one its
        default. A :class:`Config` is returned as it is."""
        if isinstance(config, cls):
            return config
        check_fields(config, TOP_LEVEL, "config")
        fields = {}
        for name in config.keys():
            value = config[name]
            if name in BLOCKS and value is not None:
                block = BLOCKS[name]
                value = (
                    block.from_dict(value) if block is ModelConfig else block.from_dict(value, name)
                )
            fields[name] = value
        return cls(**fields)

    def to_dict(self) -> dict:
        """The config as plain data (absent blocks left out): what ``config.json`` holds."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = v.to_dict() if hasattr(v, "to_dict") else v
        return out

    def train_block(self, stage: str) -> TrainConfig:
        """The train block of ``stage`` (:func:`train_block_name`)."""
        return getattr(self, train_block_name(self, stage))

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages or ()))  # a list in config.json
        for name, block in BLOCKS.items():
            v = getattr(self, name)
            if v is not None and not isinstance(v, block):
                raise ConfigError(f"{name} must be a {block.__name__} (or built with "
                                  f"{block.__name__}.from_dict), got {type(v).__name__}")
        model, data = self.model, self.data
        if model is not None and model.vae is not None and data is not None:
            check_resolution(data.resolution, model.vae.downsampling_factor, "data.resolution")
        F, C = self.vae_frames, self.vae_context
        if not isinstance(F, int) or F < 1 or not isinstance(C, int) or not 0 <= C <= (F - 1) // 2:
            raise ConfigError(
                f"vae_frames={F!r} (the VAE's training clip, also the length of every "
                f"encode / decode call) must be >= 1 and vae_context={C!r} (frames of "
                f"context each side of a call) in 0..{(max(F, 1) - 1) // 2}"
            )
        if self.local_models not in ("separate", "shared"):
            raise ConfigError(f"local_models={self.local_models!r}; use 'separate' or 'shared'")
        self._check_stages()
        if self.artv is not None:
            self.artv.check_timesteps((self.diffusion or DiffusionConfig()).num_train_timesteps)

    def _check_stages(self) -> None:
        stages = list(self.stages)
        if self.local_models == "shared" and stages:
            if any(s.startswith("mtd_local") and s != "mtd_local" for s in stages) or \
                    "mtd_local" not in stages:
                raise ConfigError("local_models='shared' trains one local model: stages must list "
                                  "'mtd_local' (not mtd_local<d>), e.g. ('vae', 'mtd_global', "
                                  "'mtd_local')")
            if (
                self.model is not None
                and self.model.mtd is not None
                and self.model.mtd.num_levels < 1
            ):
                raise ConfigError("local_models='shared' needs model.mtd.num_levels > 0 (its level "
                                  "embedding); set it to data.depth")
        if "vae_image" in stages and self.vae_image_train is None:
            raise ConfigError(
                "stage 'vae_image' needs a vae_image_train block (steps, batch_size, ...)"
            )
        mtd = self.model.mtd if self.model is not None else None
        if "mtd_image" in stages and mtd is not None and (mtd.temporal or
                                                          mtd.condition_injection != "none"):
            raise ConfigError("stage 'mtd_image' trains an image UNet (single frames, nothing "
                              "given): set model.mtd.temporal=False and "
                              "model.mtd.condition_injection='none'")
        for i, s in enumerate(stages):
            if s not in STAGE_NAMES and not (s.startswith("mtd_local") and s[9:].isdigit()):
                raise ConfigError(f"stages[{i}]={s!r} is not a stage; use {', '.join(STAGE_NAMES)} "
                                  "or mtd_local<depth>")
            block = self.train_block(s)
            start = block.init_from if block is not None and s.startswith("mtd_") else ""
            if start and start not in stages[:i]:
                raise ConfigError(f"{train_block_name(self, s)}.init_from={start!r} must name a "
                                  f"stage trained before {s!r} in stages {tuple(stages)}")


def check_resolution(resolution, factor: int, path: str) -> None:
    h, w = resolution
    for name, v in (("height", h), ("width", w)):
        positive_int(v, f"{path} {name}")
        if v % factor:
            raise ConfigError(f"{path}={tuple(resolution)}: {name} {v} is not divisible by the "
                              f"VAE downsampling factor {factor}; use a multiple of {factor}")
