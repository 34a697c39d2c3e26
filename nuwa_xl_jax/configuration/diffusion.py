"""The typed ``diffusion`` block (:class:`DiffusionConfig`): the noise schedule, what the model
predicts, the loss weighting and the default sampler, checked once."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from nuwa_xl_jax.configuration.block import Block, positive_int
from nuwa_xl_jax.configuration.checks import ConfigError

CHOICES = {"schedule": ("linear", "scaled_linear", "cosine"), "prediction_type": ("epsilon", "v"),
           "sampler": ("ddpm", "ddim", "dpm++2m")}
# What the trained weights mean: an MTD stage's fingerprint holds these (train/stages.py).
SCHEDULE_FIELDS = ("schedule", "num_train_timesteps", "beta_start", "beta_end", "prediction_type")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(Block):
    schedule: str = "scaled_linear"  # 'linear' | 'scaled_linear' (SD) | 'cosine'
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "epsilon"  # 'epsilon' | 'v'
    # Min-SNR-gamma loss weighting (Hang et al. 2023): each timestep's loss weighted by
    # min(SNR, gamma) / SNR (eps) or min(SNR, gamma) / (SNR + 1) (v); 0 = plain MSE [ours: the
    # paper uses plain MSE; the short CPU runs converge much faster with gamma = 5].
    min_snr_gamma: float = 0.0
    sampler: str = "ddpm"  # 'ddpm' (the paper's) | 'ddim' | 'dpm++2m'
    sample_steps: int = 50
    guidance_scale: float = 1.0
    ddim_eta: float = 0.0

    PATH: ClassVar[str] = "diffusion"
    FLOATS: ClassVar[tuple[str, ...]] = ("beta_start", "beta_end", "min_snr_gamma",
                                         "guidance_scale", "ddim_eta")

    def __post_init__(self):
        path = self._normalise_and_check_types()
        for f, allowed in CHOICES.items():
            if getattr(self, f) not in allowed:
                raise ConfigError(f"{path}.{f}={getattr(self, f)!r} is unknown; choose one of "
                                  f"{', '.join(allowed)}")
        positive_int(self.num_train_timesteps, f"{path}.num_train_timesteps")
        positive_int(self.sample_steps, f"{path}.sample_steps")
        if self.sample_steps > self.num_train_timesteps:
            raise ConfigError(f"{path}.sample_steps={self.sample_steps} exceeds "
                              f"{path}.num_train_timesteps={self.num_train_timesteps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(f"{path}.beta_start={self.beta_start} and beta_end={self.beta_end} "
                              "must satisfy 0 < beta_start < beta_end < 1")
        if not self.guidance_scale > 0:
            raise ConfigError(f"{path}.guidance_scale must be > 0 (1 = no guidance), got "
                              f"{self.guidance_scale}")
        if not self.ddim_eta >= 0:
            raise ConfigError(f"{path}.ddim_eta must be >= 0, got {self.ddim_eta}")
        if not self.min_snr_gamma >= 0:
            raise ConfigError(f"{path}.min_snr_gamma must be >= 0 (0 = plain MSE), got "
                              f"{self.min_snr_gamma}")

    def schedule_fields(self) -> dict:
        """The fields that decide what trained weights predict (an MTD stage's fingerprint)."""
        return {k: getattr(self, k) for k in SCHEDULE_FIELDS}
