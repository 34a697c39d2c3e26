"""The typed, frozen model configs the library builds its networks from: :class:`VAEConfig`,
:class:`MTDConfig`, :class:`TextConfig` and :class:`ModelConfig` (the three together).

Config files and ``--config.model.mtd.x=y`` overrides stay ml_collections ConfigDicts (the
``model.*`` blocks of configuration.py are built from these classes' defaults); validation turns a
block into one of these objects, checking every field's type and allowed values once. Building one
directly (``MTDConfig(block_out_channels=(32, 64), ...)``) and :meth:`from_dict` (a ConfigDict, a
plain dict, a stored ``config.json``'s block) run the same checks; a bad value is one ConfigError
naming the dotted field and the fix. Models take these objects as they are (no re-checks).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional, Union

from nuwa_xl_jax.configuration.block import Block, positive_int
from nuwa_xl_jax.configuration.block import is_number as _is_number
from nuwa_xl_jax.configuration.checks import ConfigError, check_fields

# What each block keeps for the backward pass (models/remat.py).
REMAT_POLICIES = ("none", "full", "dots_saveable")
DTYPES = ("float32", "bfloat16")


def check_compute(block, path: str) -> None:
    """``dtype`` and ``remat``, the compute settings the VAE and the MTD share."""
    if isinstance(block.remat, bool):  # the older spelling
        block._set("remat", "full" if block.remat else "none")
    if block.remat not in REMAT_POLICIES:
        raise ConfigError(f"{path}.remat={block.remat!r}; use 'none', 'full' (recompute each "
                          "block) or 'dots_saveable' (keep matmul outputs, recompute the rest)")
    if block.dtype not in DTYPES:
        raise ConfigError(f"{path}.dtype={block.dtype!r}; use 'float32' or 'bfloat16'")


class _Block(Block):
    """What the three model blocks add: ``init_from`` (where the weights start) is a folder."""

    def _normalise_and_check_types(self) -> str:
        path = super()._normalise_and_check_types()
        v = getattr(self, "init_from", "")
        if not isinstance(v, str):
            raise ConfigError(f"{path}.init_from must be a folder written by python -m "
                              f"nuwa_xl_jax.convert (or '' for a fresh init), got {v!r}")
        return path


@dataclasses.dataclass(frozen=True)
class VAEConfig(_Block):
    """Temporal KL-VAE (``model.vae``); defaults are Stable Diffusion v1's AutoencoderKL
    (downsampling x8)."""
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    scaling_factor: float = 0.18215
    # NUWA-XL's inflation: a temporal conv after every spatial conv, a temporal attention after
    # every spatial attention. False = the image VAE applied frame by frame.
    temporal: bool = True
    temporal_kernel_size: int = 3
    temporal_attention_heads: int = 1
    init_from: str = (
        ""  # a `convert --kind=vae` folder: start from its weights (temporal at identity)
    )
    dtype: str = "float32"  # compute dtype ('float32' | 'bfloat16'); parameters stay float32
    # Rematerialise each encoder / decoder block in training: 'none', 'full' or 'dots_saveable'
    # (as model.mtd.remat).
    remat: str = "none"

    PATH: ClassVar[str] = "model.vae"
    TUPLES: ClassVar[tuple[str, ...]] = ("block_out_channels",)
    FLOATS: ClassVar[tuple[str, ...]] = ("scaling_factor",)
    BOOLS: ClassVar[tuple[str, ...]] = ("mid_block_add_attention", "temporal")

    def __post_init__(self):
        path = self._normalise_and_check_types()
        check_compute(self, path)
        for f in ("in_channels", "out_channels", "latent_channels", "layers_per_block",
                  "norm_num_groups", "temporal_kernel_size", "temporal_attention_heads"):
            positive_int(getattr(self, f), f"{path}.{f}")
        if not self.block_out_channels:
            raise ConfigError(f"{path}.block_out_channels must list at least one width")
        for i, w in enumerate(self.block_out_channels):
            positive_int(w, f"{path}.block_out_channels[{i}]")
            if w % self.norm_num_groups:
                raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by "
                                  f"{path}.norm_num_groups={self.norm_num_groups}")
            if w % self.temporal_attention_heads:
                raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by "
                                  f"{path}.temporal_attention_heads={self.temporal_attention_heads}")
        if self.temporal_kernel_size % 2 == 0:
            raise ConfigError(f"{path}.temporal_kernel_size must be odd (a centred Dirac tap), "
                              f"got {self.temporal_kernel_size}")
        if not self.scaling_factor > 0:
            raise ConfigError(f"{path}.scaling_factor must be > 0, got {self.scaling_factor}")

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


MTD_DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
MTD_UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")


@dataclasses.dataclass(frozen=True)
class MTDConfig(_Block):
    """Mask Temporal Diffusion UNet (``model.mtd``); defaults are Stable Diffusion v1's
    UNet2DConditionModel."""
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    # diffusers' SD v1 meaning: the number of heads (one int, or one per block)
    attention_head_dim: Union[int, tuple[int, ...]] = 8
    cross_attention_dim: int = 768
    use_linear_projection: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0
    # NUWA-XL's inflation and the paper's ablation switches.
    temporal: bool = True
    temporal_kernel_size: int = 3
    condition_injection: str = "multiscale"  # 'multiscale' (every block) | 'highest' | 'none'
    condition_symmetric: bool = True  # inject in down and up blocks (False: up blocks only)
    num_levels: int = 0  # > 0: a learned level embedding (one shared local model for all depths)
    dtype: str = "float32"  # compute dtype ('float32' | 'bfloat16'); parameters stay float32
    # Rematerialise each UNet block in training: 'none', 'full' (least memory) or
    # 'dots_saveable' (keeps matmul outputs; models/mtd.py). True / False (configs exported
    # before the policies existed) read as 'full' / 'none'.
    remat: str = "none"
    # Attention kernels (models/layers.attend): 'auto' = cuDNN's fused flash attention on NVIDIA
    # GPUs where it applies (bf16, head dim <= 128), Pallas splash attention on TPU where it applies
    # (queries >= 128, bf16/fp32), else XLA; 'xla'; 'cudnn' / 'splash' (an error where they cannot).
    attention: str = "auto"
    # A `convert --kind=unet` folder: the spatial layers start from its weights, the temporal,
    # condition and level layers at identity (so step 0 is the image UNet frame by frame).
    init_from: str = ""

    PATH: ClassVar[str] = "model.mtd"
    TUPLES: ClassVar[tuple[str, ...]] = ("block_out_channels", "down_block_types", "up_block_types")
    FLOATS: ClassVar[tuple[str, ...]] = ("norm_eps",)
    BOOLS: ClassVar[tuple[str, ...]] = ("use_linear_projection", "flip_sin_to_cos", "temporal",
                                        "condition_symmetric")

    def __post_init__(self):
        if isinstance(self.attention_head_dim, list):
            self._set("attention_head_dim", tuple(self.attention_head_dim))
        path = self._normalise_and_check_types()
        check_compute(self, path)
        if not _is_number(self.freq_shift):
            raise ConfigError(f"{path}.freq_shift must be a number, got {self.freq_shift!r}")
        for f in ("in_channels", "out_channels", "layers_per_block", "norm_num_groups",
                  "cross_attention_dim", "temporal_kernel_size"):
            positive_int(getattr(self, f), f"{path}.{f}")
        widths = self.block_out_channels
        if not widths:
            raise ConfigError(f"{path}.block_out_channels must list at least one width")
        n = len(widths)
        for f, known in (("down_block_types", MTD_DOWN_BLOCK_TYPES),
                         ("up_block_types", MTD_UP_BLOCK_TYPES)):
            types = getattr(self, f)
            if len(types) != n:
                raise ConfigError(
                    f"{path}.{f} has {len(types)} entries but {path}.block_out_channels "
                    f"has {n}; give one block type per width"
                )
            for i, t in enumerate(types):
                if t not in known:
                    raise ConfigError(f"{path}.{f}[{i}]={t!r} is not a known block type; "
                                      f"use one of {', '.join(known)}")
        heads = self.heads_per_block
        if len(heads) != n:
            raise ConfigError(f"{path}.attention_head_dim has {len(heads)} entries but "
                              f"{path}.block_out_channels has {n}; give one int or one per block")
        for i, (w, hd) in enumerate(zip(widths, heads)):
            positive_int(w, f"{path}.block_out_channels[{i}]")
            positive_int(hd, f"{path}.attention_head_dim[{i}]")
            if w % self.norm_num_groups:
                raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by "
                                  f"{path}.norm_num_groups={self.norm_num_groups}")
            if w % hd:
                raise ConfigError(f"{path}.block_out_channels[{i}]={w} is not divisible by its "
                                  f"number of attention heads {path}.attention_head_dim[{i}]={hd} "
                                  "(SD v1 meaning: heads)")
        if self.temporal_kernel_size % 2 == 0:
            raise ConfigError(f"{path}.temporal_kernel_size must be odd (a centred Dirac tap), "
                              f"got {self.temporal_kernel_size}")
        if self.condition_injection not in ("multiscale", "highest", "none"):
            raise ConfigError(f"{path}.condition_injection={self.condition_injection!r}; use "
                              "'multiscale', 'highest' or 'none'")
        if self.attention not in ("auto", "xla", "cudnn", "splash"):
            raise ConfigError(
                f"{path}.attention={self.attention!r}; use 'auto' (cuDNN flash attention "
                "on NVIDIA GPUs, splash attention on TPU, where they apply, else XLA), "
                "'xla', 'cudnn' or 'splash'"
            )
        if not isinstance(self.num_levels, int) or isinstance(self.num_levels, bool) or \
                self.num_levels < 0:
            raise ConfigError(f"{path}.num_levels must be an integer >= 0, got {self.num_levels!r}")
        if not self.norm_eps > 0:
            raise ConfigError(f"{path}.norm_eps must be > 0, got {self.norm_eps}")

    @property
    def heads_per_block(self) -> tuple:
        return per_block(self.attention_head_dim, len(self.block_out_channels))


def per_block(value, n: int) -> tuple:
    """``attention_head_dim``: one int for every block, or one per block."""
    return (value,) * n if isinstance(value, int) else tuple(value)


TEXT_ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new")


@dataclasses.dataclass(frozen=True)
class TextConfig(_Block):
    """CLIP text transformer (``model.text``); defaults are CLIP ViT-L/14's (Stable Diffusion
    v1)."""
    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    tokenizer: str = "word"  # 'word' (built-in, synthetic world) or a local CLIP tokenizer folder
    init_from: str = ""  # a `convert --kind=clip` folder: start from its weights
    # Train the text encoder with the MTD? 'auto': frozen when it starts from public weights
    # (init_from, CLIP), trained with the MTD otherwise (the built-in from-scratch encoder). A
    # frozen encoder's prompt states are computed once per distinct training prompt, not per step.
    # 'true' / 'false' in any case, or booleans, read as 'true' / 'false'.
    trainable: str = "auto"

    PATH: ClassVar[str] = "model.text"
    FLOATS: ClassVar[tuple[str, ...]] = ("layer_norm_eps",)

    def __post_init__(self):
        path = self._normalise_and_check_types()
        value = self.trainable
        text = (
            ("true" if value else "false")
            if isinstance(value, bool)
            else str(value).strip().lower()
        )
        if text not in ("auto", "true", "false"):
            raise ConfigError(
                f"{path}.trainable={value!r}; use 'auto' (frozen when {path}.init_from "
                "names public CLIP weights, trained otherwise), 'true' (train it with "
                "the MTD) or 'false' (frozen: its prompt states are computed once per "
                "distinct prompt)"
            )
        self._set("trainable", text)
        for f in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "max_position_embeddings"):
            positive_int(getattr(self, f), f"{path}.{f}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"{path}.hidden_size={self.hidden_size} is not divisible by "
                              f"{path}.num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in TEXT_ACTIVATIONS:
            raise ConfigError(f"{path}.hidden_act={self.hidden_act!r}; expected 'quick_gelu', "
                              "'gelu' or 'gelu_new'")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"{path}.layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise ConfigError(f"{path}.tokenizer must be 'word' or a CLIP tokenizer folder, "
                              f"got {self.tokenizer!r}")

    @property
    def trains(self) -> bool:
        """Whether the text encoder trains with the MTD (``trainable``; 'auto': unless it starts
        from public weights)."""
        return not self.init_from if self.trainable == "auto" else self.trainable == "true"


_BLOCKS = {"vae": VAEConfig, "mtd": MTDConfig, "text": TextConfig}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A family's three networks (``model``), each block optional, checked against each other."""
    vae: Optional[VAEConfig] = None
    mtd: Optional[MTDConfig] = None
    text: Optional[TextConfig] = None

    def __post_init__(self):
        for name, cls in _BLOCKS.items():
            block = getattr(self, name)
            if block is not None and not isinstance(block, cls):
                raise ConfigError(f"model.{name} must be a {cls.__name__} (or built with "
                                  f"{cls.__name__}.from_dict), got {type(block).__name__}")
        vae, mtd, text = self.vae, self.mtd, self.text
        if mtd is not None and vae is not None:
            lat = vae.latent_channels
            if (mtd.in_channels, mtd.out_channels) != (lat, lat):
                raise ConfigError(f"model.mtd.in_channels={mtd.in_channels} and out_channels="
                                  f"{mtd.out_channels} must equal model.vae.latent_channels={lat} "
                                  "(the MTD diffuses the VAE's latents)")
        if mtd is not None and text is not None and mtd.cross_attention_dim != text.hidden_size:
            raise ConfigError(
                f"model.mtd.cross_attention_dim={mtd.cross_attention_dim} must equal "
                f"model.text.hidden_size={text.hidden_size} (the prompt states' width)"
            )

    @classmethod
    def from_dict(cls, model: Any) -> "ModelConfig":
        """The typed ``model`` section of a ConfigDict or a stored ``config.json``."""
        if isinstance(model, cls):
            return model
        check_fields(model, _BLOCKS, "model")
        return cls(**{name: block_cls.from_dict(model[name], f"model.{name}")
                      for name, block_cls in _BLOCKS.items()
                      if name in model.keys() and model[name] is not None})

    def __getitem__(self, name: str):
        return getattr(self, name)

    def to_dict(self) -> dict:
        return {n: getattr(self, n).to_dict() for n in _BLOCKS if getattr(self, n) is not None}

