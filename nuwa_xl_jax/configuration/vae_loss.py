"""The typed ``vae_loss`` block (:class:`VAELossConfig`): the T-KLVAE loss (LDM's
LPIPSWithDiscriminator, see docs/PAPERS.md), checked once."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from nuwa_xl_jax.configuration.block import Block, int_at_least, positive_int
from nuwa_xl_jax.configuration.checks import ConfigError


@dataclasses.dataclass(frozen=True)
class VAELossConfig(Block):
    l1_weight: float = 1.0
    l2_weight: float = 0.0  # [ours] a squared term for few-pixel objects (see train/vae_loss.py)
    kl_weight: float = 1e-6
    lpips_weight: float = 1.0
    lpips_path: str = (
        ""  # a local file of LPIPS weights; "" disables the term (nothing is downloaded)
    )
    disc_weight: float = 0.5
    disc_start: int = 50001
    disc_num_layers: int = 3
    disc_channels: int = 64
    # [ours] initial log-variance of the posterior (the bias of quant_conv's logvar half) when
    # training from scratch: 0 (std 1) buries a fresh encoder's small means in noise; -8 (std
    # 0.02) lets the decoder see them from the first step. Not used when starting from weights.
    init_logvar: float = 0.0

    PATH: ClassVar[str] = "vae_loss"
    FLOATS: ClassVar[tuple[str, ...]] = ("l1_weight", "l2_weight", "kl_weight", "lpips_weight",
                                         "disc_weight", "init_logvar")
    STRINGS: ClassVar[tuple[str, ...]] = ("lpips_path",)

    def __post_init__(self):
        path = self._normalise_and_check_types()
        for f in ("l1_weight", "l2_weight", "kl_weight", "lpips_weight", "disc_weight"):
            if not getattr(self, f) >= 0:
                raise ConfigError(f"{path}.{f} must be >= 0 (0 = off), got {getattr(self, f)}")
        int_at_least(self.disc_start, f"{path}.disc_start", 0)
        positive_int(self.disc_num_layers, f"{path}.disc_num_layers")
        positive_int(self.disc_channels, f"{path}.disc_channels")
