"""Loading and validating ml_collections configs.

Validation runs when a config is loaded, so a bad value is reported by its dotted field name
before any model is built. Each model section is checked against its block of record below (the
complete set of fields, with the paper's defaults): an unknown field is an error, not silently
ignored. Field names of model blocks follow diffusers / transformers configs, so the
``config.json`` of a public model maps onto them one to one. configs/ composes these blocks
(through :mod:`~nuwa_xl_jax.configuration.presets`); :mod:`~nuwa_xl_jax.configuration.files` finds and
reads config files.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from nuwa_xl_jax.configuration import files
from nuwa_xl_jax.configuration.checks import ConfigError, check_fields
from nuwa_xl_jax.configuration.data import validate_data
from nuwa_xl_jax.configuration.train import validate_train


def vae_block() -> ml_collections.ConfigDict:
    """Temporal KL-VAE; defaults are Stable Diffusion v1's AutoencoderKL (downsampling x8)."""
    c = ml_collections.ConfigDict()
    c.in_channels = 3
    c.out_channels = 3
    c.latent_channels = 4
    c.block_out_channels = (128, 256, 512, 512)
    c.layers_per_block = 2
    c.norm_num_groups = 32
    c.mid_block_add_attention = True
    c.scaling_factor = 0.18215
    # NUWA-XL's inflation: a temporal conv after every spatial conv, a temporal attention after
    # every spatial attention. False = the image VAE applied frame by frame.
    c.temporal = True
    c.temporal_kernel_size = 3
    c.temporal_attention_heads = 1
    c.init_from = ""  # a `convert --kind=vae` folder: start from its weights (temporal at identity)
    return c


def mesh_block() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.shape = (-1, 1)  # -1: the remaining devices
    c.axes = ("data", "fsdp")
    return c


def mtd_block() -> ml_collections.ConfigDict:
    """Mask Temporal Diffusion UNet; defaults are Stable Diffusion v1's UNet2DConditionModel."""
    c = ml_collections.ConfigDict()
    c.in_channels = 4
    c.out_channels = 4
    c.block_out_channels = (320, 640, 1280, 1280)
    c.layers_per_block = 2
    c.down_block_types = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    c.up_block_types = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    c.attention_head_dim = 8  # diffusers' SD v1 meaning: the number of heads
    c.cross_attention_dim = 768
    c.use_linear_projection = False
    c.norm_num_groups = 32
    c.norm_eps = 1e-5
    c.flip_sin_to_cos = True
    c.freq_shift = 0
    # NUWA-XL's inflation and the paper's ablation switches.
    c.temporal = True
    c.temporal_kernel_size = 3
    c.condition_injection = "multiscale"  # 'multiscale' (every block) | 'highest' | 'none'
    c.condition_symmetric = True  # inject in down and up blocks (False: up blocks only)
    c.num_levels = 0  # > 0: a learned level embedding (one shared local model for all depths)
    c.dtype = "float32"  # compute dtype ('float32' | 'bfloat16'); parameters stay float32
    # Rematerialise each UNet block in training: 'none', 'full' (least memory) or
    # 'dots_saveable' (keeps matmul outputs; models/mtd.py REMAT_POLICIES).
    c.remat = "none"
    # Attention kernels (models/layers.attend): 'auto' = cuDNN's fused flash attention on NVIDIA GPUs
    # where it applies (bf16, head dim <= 128), else XLA; 'xla'; 'cudnn' (an error where it cannot).
    c.attention = "auto"
    # A `convert --kind=unet` folder: the spatial layers start from its weights, the temporal,
    # condition and level layers at identity (so step 0 is the image UNet frame by frame).
    c.init_from = ""
    return c


def text_block() -> ml_collections.ConfigDict:
    """CLIP text transformer; defaults are CLIP ViT-L/14's (Stable Diffusion v1)."""
    c = ml_collections.ConfigDict()
    c.vocab_size = 49408
    c.hidden_size = 768
    c.intermediate_size = 3072
    c.num_hidden_layers = 12
    c.num_attention_heads = 12
    c.max_position_embeddings = 77
    c.hidden_act = "quick_gelu"
    c.layer_norm_eps = 1e-5
    c.tokenizer = "word"  # 'word' (built-in, synthetic world) or a local CLIP tokenizer folder
    c.init_from = ""  # a `convert --kind=clip` folder: start from its weights
    # Train the text encoder with the MTD? 'auto': frozen when it starts from public weights
    # (init_from, CLIP), trained with the MTD otherwise (the built-in from-scratch encoder). A
    # frozen encoder's prompt states are computed once per distinct training prompt, not per step.
    c.trainable = "auto"  # 'auto' | 'true' | 'false'
    return c


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
    _positive_int(c.mask_width, f"{path}.mask_width")


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


def validate_mtd(c: Any, path: str = "model.mtd") -> None:
    check_fields(c, mtd_block().keys(), path)
    _init_from(c, path)
    block_types = {"down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                   "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}
    for f in ("in_channels", "out_channels", "layers_per_block", "norm_num_groups",
              "cross_attention_dim", "temporal_kernel_size"):
        _positive_int(c[f], f"{path}.{f}")
    widths = tuple(c.block_out_channels)
    if not widths:
        raise ConfigError(f"{path}.block_out_channels must list at least one width")
    n = len(widths)
    for f, known in block_types.items():
        types = tuple(c[f])
        if len(types) != n:
            raise ConfigError(f"{path}.{f} has {len(types)} entries but {path}.block_out_channels "
                              f"has {n}; give one block type per width")
        for i, t in enumerate(types):
            if t not in known:
                raise ConfigError(f"{path}.{f}[{i}]={t!r} is not a known block type; "
                                  f"use one of {', '.join(known)}")
    heads = c.attention_head_dim
    heads = (heads,) * n if isinstance(heads, int) else tuple(heads)
    if len(heads) != n:
        raise ConfigError(f"{path}.attention_head_dim has {len(heads)} entries but "
                          f"{path}.block_out_channels has {n}; give one int or one per block")
    for i, (w, hd) in enumerate(zip(widths, heads)):
        _positive_int(w, f"{path}.block_out_channels[{i}]")
        _positive_int(hd, f"{path}.attention_head_dim[{i}]")
        if w % c.norm_num_groups:
            raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by "
                              f"{path}.norm_num_groups={c.norm_num_groups}")
        if w % hd:
            raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by its number "
                              f"of attention heads {path}.attention_head_dim[{i}]={hd} (SD v1 "
                              "meaning: heads)")
    if c.temporal_kernel_size % 2 == 0:
        raise ConfigError(f"{path}.temporal_kernel_size must be odd (a centred Dirac tap), "
                          f"got {c.temporal_kernel_size}")
    if c.condition_injection not in ("multiscale", "highest", "none"):
        raise ConfigError(f"{path}.condition_injection={c.condition_injection!r}; use "
                          "'multiscale', 'highest' or 'none'")
    if c.get("attention", "auto") not in ("auto", "xla", "cudnn"):
        raise ConfigError(f"{path}.attention={c.attention!r}; use 'auto' (cuDNN flash attention on "
                          "NVIDIA GPUs where it applies, else XLA), 'xla' or 'cudnn'")
    if not isinstance(c.remat, bool) and c.remat not in ("none", "full", "dots_saveable"):
        raise ConfigError(f"{path}.remat={c.remat!r}; use 'none', 'full' (recompute each UNet block) "
                          "or 'dots_saveable' (keep matmul outputs, recompute the rest)")
    for f in ("use_linear_projection", "flip_sin_to_cos", "temporal", "condition_symmetric"):
        if not isinstance(c[f], bool):
            raise ConfigError(f"{path}.{f} must be True or False, got {c[f]!r}")
    if not isinstance(c.num_levels, int) or isinstance(c.num_levels, bool) or c.num_levels < 0:
        raise ConfigError(f"{path}.num_levels must be an integer >= 0, got {c.num_levels!r}")
    if c.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"{path}.dtype={c.dtype!r}; use 'float32' or 'bfloat16'")
    if not c.norm_eps > 0:
        raise ConfigError(f"{path}.norm_eps must be > 0, got {c.norm_eps}")


def validate_text(c: Any, path: str = "model.text") -> None:
    check_fields(c, text_block().keys(), path)
    _init_from(c, path)
    for f in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "max_position_embeddings"):
        _positive_int(c[f], f"{path}.{f}")
    if c.hidden_size % c.num_attention_heads:
        raise ConfigError(f"{path}.hidden_size={c.hidden_size} is not divisible by "
                          f"{path}.num_attention_heads={c.num_attention_heads}")
    if c.hidden_act not in ("quick_gelu", "gelu", "gelu_new"):
        raise ConfigError(f"{path}.hidden_act={c.hidden_act!r}; expected 'quick_gelu', 'gelu' or "
                          "'gelu_new'")
    if not c.layer_norm_eps > 0:
        raise ConfigError(f"{path}.layer_norm_eps must be > 0, got {c.layer_norm_eps}")
    if not isinstance(c.tokenizer, str) or not c.tokenizer:
        raise ConfigError(f"{path}.tokenizer must be 'word' or a CLIP tokenizer folder, "
                          f"got {c.tokenizer!r}")
    text_trainable(c, path)


def text_trainable(c: Any, path: str = "model.text") -> bool:
    """Whether the text encoder of a ``model.text`` block trains with the MTD, from its
    ``trainable``: 'auto' (frozen exactly when it starts from public weights, ``init_from``),
    'true' / 'false' (any case; booleans too). Blocks written before the field existed mean 'auto'."""
    value = c.get("trainable", "auto")
    text = value if isinstance(value, bool) else str(value).strip().lower()
    if text == "auto":
        return not c.get("init_from", "")
    if text in (True, "true"):
        return True
    if text in (False, "false"):
        return False
    raise ConfigError(f"{path}.trainable={value!r}; use 'auto' (frozen when {path}.init_from names "
                      "public CLIP weights, trained otherwise), 'true' (train it with the MTD) or "
                      "'false' (frozen: its prompt states are computed once per distinct prompt)")


def validate_diffusion(c: Any, path: str = "diffusion") -> None:
    check_fields(c, diffusion_block().keys(), path)
    choices = {"schedule": ("linear", "scaled_linear", "cosine"), "prediction_type": ("epsilon", "v"),
               "sampler": ("ddpm", "ddim", "dpm++2m")}
    for f, allowed in choices.items():
        if c[f] not in allowed:
            raise ConfigError(f"{path}.{f}={c[f]!r} is unknown; choose one of {', '.join(allowed)}")
    _positive_int(c.num_train_timesteps, f"{path}.num_train_timesteps")
    _positive_int(c.sample_steps, f"{path}.sample_steps")
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


def _init_from(c: Any, path: str) -> None:
    value = c.get("init_from", "")  # configs written before the field existed have none
    if not isinstance(value, str):
        raise ConfigError(f"{path}.init_from must be a folder written by python -m "
                          f"nuwa_xl_jax.convert (or '' for a fresh init), got {value!r}")


def _positive_int(value, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{field} must be a positive integer, got {value!r}")


def validate_vae(c: Any, path: str = "model.vae") -> None:
    check_fields(c, vae_block().keys(), path)
    _init_from(c, path)
    for f in ("in_channels", "out_channels", "latent_channels", "layers_per_block",
              "norm_num_groups", "temporal_kernel_size", "temporal_attention_heads"):
        _positive_int(c[f], f"{path}.{f}")
    widths = tuple(c.block_out_channels)
    if not widths:
        raise ConfigError(f"{path}.block_out_channels must list at least one width")
    for i, w in enumerate(widths):
        _positive_int(w, f"{path}.block_out_channels[{i}]")
        if w % c.norm_num_groups:
            raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by "
                              f"{path}.norm_num_groups={c.norm_num_groups}")
        if w % c.temporal_attention_heads:
            raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by "
                              f"{path}.temporal_attention_heads={c.temporal_attention_heads}")
    if c.temporal_kernel_size % 2 == 0:
        raise ConfigError(f"{path}.temporal_kernel_size must be odd (a centred Dirac tap), "
                          f"got {c.temporal_kernel_size}")
    if not c.scaling_factor > 0:
        raise ConfigError(f"{path}.scaling_factor must be > 0, got {c.scaling_factor}")


def vae_downsampling(c: Any) -> int:
    return 2 ** (len(tuple(c.block_out_channels)) - 1)


def check_resolution(resolution, factor: int, path: str) -> None:
    h, w = resolution
    for name, v in (("height", h), ("width", w)):
        _positive_int(v, f"{path} {name}")
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


def validate(config: Any) -> None:
    """Validates every section present in ``config``."""
    check_fields(config, TOP_LEVEL, "config")
    model = config.get("model")
    if model is not None:
        check_fields(model, ("vae", "mtd", "text"), "model")
    if model is not None and model.get("vae") is not None:
        validate_vae(model.vae)
        if config.get("data") is not None and config.data.get("resolution") is not None:
            check_resolution(config.data.resolution, vae_downsampling(model.vae), "data.resolution")
    if model is not None and model.get("mtd") is not None:
        validate_mtd(model.mtd)
    if model is not None and model.get("text") is not None:
        validate_text(model.text)
    if config.get("diffusion") is not None:
        validate_diffusion(config.diffusion)
    if config.get("data") is not None:
        validate_data(config.data)
    for block in ("train", "local_train", "vae_train", "vae_image_train"):
        if config.get(block) is not None:
            validate_train(config[block], block)
    if model is not None and model.get("mtd") is not None and model.get("vae") is not None:
        lat = model.vae.latent_channels
        if (model.mtd.in_channels, model.mtd.out_channels) != (lat, lat):
            raise ConfigError(f"model.mtd.in_channels={model.mtd.in_channels} and out_channels="
                              f"{model.mtd.out_channels} must equal model.vae.latent_channels={lat} "
                              "(the MTD diffuses the VAE's latents)")
    if model is not None and model.get("mtd") is not None and model.get("text") is not None:
        if model.mtd.cross_attention_dim != model.text.hidden_size:
            raise ConfigError(f"model.mtd.cross_attention_dim={model.mtd.cross_attention_dim} must equal "
                              f"model.text.hidden_size={model.text.hidden_size} (the prompt states' width)")
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
        if model is not None and model.get("mtd") is not None and model.mtd.num_levels < 1:
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
