"""Loading and validating ml_collections configs.

Validation runs when a config is loaded, so a bad value is reported by its dotted field name
before any model is built. The ``model`` section is validated into the typed, frozen blocks of
:mod:`~nuwa_xl_jax.configuration.model` (:class:`VAEConfig`, :class:`MTDConfig`,
:class:`TextConfig`, together a :class:`ModelConfig`) that the networks are built from; the
ConfigDict blocks below are those classes' fields and defaults (the paper's), so an unknown field
is an error, not silently ignored. Field names of model blocks follow diffusers / transformers configs, so the
``config.json`` of a public model maps onto them one to one. configs/ composes these blocks
(through :mod:`~nuwa_xl_jax.configuration.presets`); :mod:`~nuwa_xl_jax.configuration.files` finds and
reads config files.
"""
from __future__ import annotations

from typing import Any, Optional

import ml_collections

from nuwa_xl_jax.configuration import files
from nuwa_xl_jax.configuration.checks import ConfigError, check_fields
from nuwa_xl_jax.configuration.data import validate_data
from nuwa_xl_jax.configuration.model import (MTDConfig, ModelConfig, TextConfig, VAEConfig,
                                             positive_int)
from nuwa_xl_jax.configuration.train import validate_train


def vae_block() -> ml_collections.ConfigDict:
    """The ``model.vae`` block of a config file: :class:`VAEConfig`'s fields and defaults."""
    return ml_collections.ConfigDict(VAEConfig().to_dict())


def mesh_block() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.shape = (-1, 1)  # -1: the remaining devices
    c.axes = ("data", "fsdp")
    return c


def mtd_block() -> ml_collections.ConfigDict:
    """The ``model.mtd`` block of a config file: :class:`MTDConfig`'s fields and defaults."""
    return ml_collections.ConfigDict(MTDConfig().to_dict())


def text_block() -> ml_collections.ConfigDict:
    """The ``model.text`` block of a config file: :class:`TextConfig`'s fields and defaults."""
    return ml_collections.ConfigDict(TextConfig().to_dict())


def diffusion_block() -> ml_collections.ConfigDict:
    """Noise schedule, parameterisation and default sampler."""
    c = ml_collections.ConfigDict()
    c.schedule = "scaled_linear"  # 'linear' | 'scaled_linear' (SD) | 'cosine'
    c.num_train_timesteps = 1000
    c.beta_start = 0.00085
    c.beta_end = 0.012
    c.prediction_type = "epsilon"  # 'epsilon' | 'v'
    # Min-SNR-gamma loss weighting (Hang et al. 2023): each timestep's loss weighted by
    # min(SNR, gamma) / SNR (eps) or min(SNR, gamma) / (SNR + 1) (v); 0 = plain MSE [ours: the
    # paper uses plain MSE; the short CPU runs converge much faster with gamma = 5].
    c.min_snr_gamma = 0.0
    c.sampler = "ddpm"  # 'ddpm' (the paper's) | 'ddim' | 'dpm++2m'
    c.sample_steps = 50
    c.guidance_scale = 1.0
    c.ddim_eta = 0.0
    return c


def artv_block() -> ml_collections.ConfigDict:
    """ART•V (stage ``mtd_artv``, ``--mode=artv``): one new frame per call from [anchor, previous,
    new]. Only the abstract is public (docs/PAPERS.md): every value here is ours [ours]."""
    c = ml_collections.ConfigDict()
    # Noise augmentation of the previous-frame condition: at training its latent is noised to a
    # timestep drawn uniformly from 0..noise_aug_max_t (the model is told that t); generation
    # noises the generated previous frame to noise_aug_t, hiding its small errors from the model.
    c.noise_aug_max_t = 200
    c.noise_aug_t = 50
    # Share of training examples with nothing given (text only): the first call of a video, which
    # draws the anchor when no first frame is given.
    c.first_share = 0.1
    c.mask_width = 32  # channels of the masked-diffusion head's convs
    return c


def validate_artv(c: Any, num_train_timesteps: int, path: str = "artv") -> None:
    check_fields(c, artv_block().keys(), path)
    for f in ("noise_aug_max_t", "noise_aug_t"):
        v = c[f]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < num_train_timesteps:
            raise ConfigError(f"{path}.{f} must be an integer timestep in 0..{num_train_timesteps - 1} "
                              f"(diffusion.num_train_timesteps), got {v!r}")
    if not 0.0 <= c.first_share < 1.0:
        raise ConfigError(f"{path}.first_share must be in [0, 1), got {c.first_share!r}")
    positive_int(c.mask_width, f"{path}.mask_width")


def generate_block() -> ml_collections.ConfigDict:
    """What the training command generates once every stage is trained (the main job's video)."""
    c = ml_collections.ConfigDict()
    c.enabled = False
    c.storyboard = ""  # text / JSON / YAML storyboard file
    c.frames = 226
    c.out = "video.mp4"  # relative paths are inside the workdir
    c.sampler = ""  # "" = diffusion.sampler
    c.steps = 0  # 0 = diffusion.sample_steps
    c.guidance_scale = -1.0  # < 0 = diffusion.guidance_scale
    c.seed = 0
    c.fps = 8
    # Segments per batched sampler call: "auto" = the largest that fits memory_fraction of one
    # device's memory (dod/engine.py), a number as text ("16"), or "none" = no limit.
    c.max_segments_per_call = "auto"
    c.memory_fraction = 0.8
    return c


def text_trainable(c: Any, path: str = "model.text") -> bool:
    """Whether the text encoder of a ``model.text`` block (a ConfigDict, dict or
    :class:`TextConfig`) trains with the MTD: :attr:`TextConfig.trains`. Blocks written before
    ``trainable`` existed mean 'auto'."""
    return TextConfig.from_dict(c, path).trains


def validate_diffusion(c: Any, path: str = "diffusion") -> None:
    check_fields(c, diffusion_block().keys(), path)
    choices = {"schedule": ("linear", "scaled_linear", "cosine"), "prediction_type": ("epsilon", "v"),
               "sampler": ("ddpm", "ddim", "dpm++2m")}
    for f, allowed in choices.items():
        if c[f] not in allowed:
            raise ConfigError(f"{path}.{f}={c[f]!r} is unknown; choose one of {', '.join(allowed)}")
    positive_int(c.num_train_timesteps, f"{path}.num_train_timesteps")
    positive_int(c.sample_steps, f"{path}.sample_steps")
    if c.sample_steps > c.num_train_timesteps:
        raise ConfigError(f"{path}.sample_steps={c.sample_steps} exceeds "
                          f"{path}.num_train_timesteps={c.num_train_timesteps}")
    if not 0 < c.beta_start < c.beta_end < 1:
        raise ConfigError(f"{path}.beta_start={c.beta_start} and beta_end={c.beta_end} must satisfy "
                          "0 < beta_start < beta_end < 1")
    if not c.guidance_scale > 0:
        raise ConfigError(f"{path}.guidance_scale must be > 0 (1 = no guidance), got "
                          f"{c.guidance_scale}")
    if not c.ddim_eta >= 0:
        raise ConfigError(f"{path}.ddim_eta must be >= 0, got {c.ddim_eta}")
    if not c.min_snr_gamma >= 0:
        raise ConfigError(f"{path}.min_snr_gamma must be >= 0 (0 = plain MSE), got {c.min_snr_gamma}")


def model_config(config: Any) -> ModelConfig:
    """The typed ``model`` section of a config (a ConfigDict after overrides, or a family's stored
    ``config.json``): the one place its blocks are checked."""
    return ModelConfig.from_dict(config.model)


def check_resolution(resolution, factor: int, path: str) -> None:
    h, w = resolution
    for name, v in (("height", h), ("width", w)):
        positive_int(v, f"{path} {name}")
        if v % factor:
            raise ConfigError(f"{path}={tuple(resolution)}: {name} {v} is not divisible by the "
                              f"VAE downsampling factor {factor}; use a multiple of {factor}")


def load(spec: str) -> ml_collections.ConfigDict:
    """Reads ``path/to/config.py[:arg]`` (or a shipped ``configs/NAME.py``: see
    :mod:`~nuwa_xl_jax.configuration.files`) by calling its ``get_config(arg)``, and validates it."""
    config = files.read(spec)
    validate(config)
    return config


TOP_LEVEL = ("seed", "model", "vae_loss", "diffusion", "data", "vae_image_train", "vae_train",
             "vae_frames", "vae_context", "train", "local_train",
             "stages", "local_models", "mesh", "generate", "artv")
STAGE_NAMES = ("vae_image", "vae", "mtd_global", "mtd_local", "mtd_ar", "mtd_artv")  # + mtd_local<d> for each local depth


def train_block_name(config: Any, stage: str) -> str:
    """The config block that trains ``stage``: vae_image_train, vae_train, local_train (local MTD
    stages, when the config has that block) or train."""
    if stage in ("vae", "vae_image"):
        return f"{stage}_train"
    if stage.startswith("mtd_local") and config.get("local_train") is not None:
        return "local_train"
    return "train"


def validate(config: Any) -> Optional[ModelConfig]:
    """Validates every section present in ``config``; returns its typed ``model`` section (the
    objects the networks are built from), None when it has none."""
    check_fields(config, TOP_LEVEL, "config")
    model = model_config(config) if config.get("model") is not None else None
    if model is not None and model.vae is not None:
        if config.get("data") is not None and config.data.get("resolution") is not None:
            check_resolution(config.data.resolution, model.vae.downsampling_factor, "data.resolution")
    if config.get("diffusion") is not None:
        validate_diffusion(config.diffusion)
    if config.get("data") is not None:
        validate_data(config.data)
    for block in ("train", "local_train", "vae_train", "vae_image_train"):
        if config.get(block) is not None:
            validate_train(config[block], block)
    if config.get("vae_frames") is not None:
        F, C = config.vae_frames, config.get("vae_context", 0)
        if not isinstance(F, int) or F < 1 or not isinstance(C, int) or not 0 <= C <= (F - 1) // 2:
            raise ConfigError(f"vae_frames={F!r} (the VAE's training clip, also the length of every "
                              f"encode / decode call) must be >= 1 and vae_context={C!r} (frames of "
                              f"context each side of a call) in 0..{(max(F, 1) - 1) // 2}")
    if config.get("local_models") is not None and config.local_models not in ("separate", "shared"):
        raise ConfigError(f"local_models={config.local_models!r}; use 'separate' or 'shared'")
    if config.get("local_models") == "shared" and config.get("stages"):
        if any(s.startswith("mtd_local") and s != "mtd_local" for s in config.stages) or \
                "mtd_local" not in config.stages:
            raise ConfigError("local_models='shared' trains one local model: stages must list "
                              "'mtd_local' (not mtd_local<d>), e.g. ('vae', 'mtd_global', 'mtd_local')")
        if model is not None and model.mtd is not None and model.mtd.num_levels < 1:
            raise ConfigError("local_models='shared' needs model.mtd.num_levels > 0 (its level "
                              "embedding); set it to data.depth")
    if "vae_image" in (config.get("stages") or ()) and config.get("vae_image_train") is None:
        raise ConfigError("stage 'vae_image' needs a vae_image_train block (steps, batch_size, ...)")
    stage_list = list(config.get("stages") or ())
    for i, s in enumerate(stage_list):
        if s not in STAGE_NAMES and not (s.startswith("mtd_local") and s[9:].isdigit()):
            raise ConfigError(f"stages[{i}]={s!r} is not a stage; use {', '.join(STAGE_NAMES)} "
                              "or mtd_local<depth>")
        block = config.get(train_block_name(config, s)) or {}
        start = block.get("init_from", "") if s.startswith("mtd_") else ""
        if start and start not in stage_list[:i]:
            raise ConfigError(f"{train_block_name(config, s)}.init_from={start!r} must name a stage "
                              f"trained before {s!r} in stages {tuple(stage_list)}")
    if config.get("artv") is not None:
        steps = (config.get("diffusion") or diffusion_block()).num_train_timesteps
        validate_artv(config.artv, steps)
    if config.get("generate") is not None:
        g = config.generate
        check_fields(g, generate_block().keys(), "generate")
        if g.enabled and not g.storyboard:
            raise ConfigError("generate.enabled needs generate.storyboard (a storyboard file)")
        if g.frames < 2:
            raise ConfigError(f"generate.frames must be >= 2, got {g.frames}")
        m = str(g.get("max_segments_per_call", "auto")).strip().lower()
        if not (m in ("auto", "none", "") or m.isdigit()):
            raise ConfigError(f"generate.max_segments_per_call={m!r}: use 'auto' (sized to memory), "
                              f"a number of segments such as '16', or 'none' (no limit)")
        if not 0.0 < g.get("memory_fraction", 0.8) <= 1.0:
            raise ConfigError(f"generate.memory_fraction must be in (0, 1], got {g.memory_fraction}")
    if config.get("mesh") is not None:
        check_fields(config.mesh, mesh_block().keys(), "mesh")
        if len(tuple(config.mesh.shape)) != len(tuple(config.mesh.axes)):
            raise ConfigError(f"mesh.shape {tuple(config.mesh.shape)} and mesh.axes "
                              f"{tuple(config.mesh.axes)} must have the same length")
    return model
