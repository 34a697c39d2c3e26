"""The typed ``artv`` block (:class:`ARTVConfig`): ART•V (stage ``mtd_artv``, ``--mode=artv``),
one new frame per call from [anchor, previous, new]. Only the abstract is public
(docs/PAPERS.md): every value here is ours [ours]."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from nuwa_xl_jax.configuration.block import Block, is_int, positive_int
from nuwa_xl_jax.configuration.checks import ConfigError


@dataclasses.dataclass(frozen=True)
class ARTVConfig(Block):
    # Noise augmentation of the previous-frame condition: at training its latent is noised to a
    # timestep drawn uniformly from 0..noise_aug_max_t (the model is told that t); generation
    # noises the generated previous frame to noise_aug_t, hiding its small errors from the model.
    noise_aug_max_t: int = 200
    noise_aug_t: int = 50
    # Share of training examples with nothing given (text only): the first call of a video, which
    # draws the anchor when no first frame is given.
    first_share: float = 0.1
    mask_width: int = 32  # channels of the masked-diffusion head's convs

    PATH: ClassVar[str] = "artv"
    FLOATS: ClassVar[tuple[str, ...]] = ("first_share",)

    def __post_init__(self):
        path = self._normalise_and_check_types()
        for f in ("noise_aug_max_t", "noise_aug_t"):
            if not is_int(getattr(self, f)) or getattr(self, f) < 0:
                raise ConfigError(f"{path}.{f} must be an integer timestep >= 0, got "
                                  f"{getattr(self, f)!r}")
        if not 0.0 <= self.first_share < 1.0:
            raise ConfigError(f"{path}.first_share must be in [0, 1), got {self.first_share!r}")
        positive_int(self.mask_width, f"{path}.mask_width")

    def check_timesteps(self, num_train_timesteps: int) -> None:
        """Both timesteps must exist in the schedule (diffusion.num_train_timesteps)."""
        for f in ("noise_aug_max_t", "noise_aug_t"):
            if not getattr(self, f) < num_train_timesteps:
                raise ConfigError(f"{self.PATH}.{f} must be an integer timestep in "
                                  f"0..{num_train_timesteps - 1} (diffusion.num_train_timesteps), "
                                  f"got {getattr(self, f)!r}")
