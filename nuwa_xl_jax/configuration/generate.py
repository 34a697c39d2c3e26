"""The typed ``generate`` block (:class:`GenerateConfig`): the video the training command makes
once every stage is trained (the main job's last step), checked once."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from nuwa_xl_jax.configuration.block import Block, is_int
from nuwa_xl_jax.configuration.checks import ConfigError


@dataclasses.dataclass(frozen=True)
class GenerateConfig(Block):
    enabled: bool = False
    storyboard: str = ""  # text / JSON / YAML storyboard file
    frames: int = 226
    out: str = "video.mp4"  # relative paths are inside the workdir
    sampler: str = ""  # "" = diffusion.sampler
    steps: int = 0  # 0 = diffusion.sample_steps
    guidance_scale: float = -1.0  # < 0 = diffusion.guidance_scale
    seed: int = 0
    fps: int = 8
    # Segments per batched sampler call: "auto" = the largest that fits memory_fraction of one
    # device's memory (dod/memory.py), a number as text ("16"), or "none" = no limit.
    max_segments_per_call: str = "auto"
    memory_fraction: float = 0.8

    PATH: ClassVar[str] = "generate"
    FLOATS: ClassVar[tuple[str, ...]] = ("guidance_scale", "memory_fraction")
    BOOLS: ClassVar[tuple[str, ...]] = ("enabled",)
    STRINGS: ClassVar[tuple[str, ...]] = ("storyboard", "out", "sampler")

    def __post_init__(self):
        path = self._normalise_and_check_types()
        if self.enabled and not self.storyboard:
            raise ConfigError(f"{path}.enabled needs {path}.storyboard (a storyboard file)")
        if not is_int(self.frames) or self.frames < 2:
            raise ConfigError(f"{path}.frames must be >= 2, got {self.frames}")
        for f in ("steps", "seed", "fps"):
            if not is_int(getattr(self, f)) or getattr(self, f) < 0:
                raise ConfigError(f"{path}.{f} must be an integer >= 0, got {getattr(self, f)!r}")
        if self.sampler not in ("", "ddpm", "ddim", "dpm++2m"):
            raise ConfigError(f"{path}.sampler={self.sampler!r}; use '' (diffusion.sampler), "
                              "'ddpm', 'ddim' or 'dpm++2m'")
        m = str(self.max_segments_per_call).strip().lower()
        if not (m in ("auto", "none", "") or m.isdigit()):
            raise ConfigError(f"{path}.max_segments_per_call={m!r}: use 'auto' (sized to memory), "
                              f"a number of segments such as '16', or 'none' (no limit)")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ConfigError(
                f"{path}.memory_fraction must be in (0, 1], got {self.memory_fraction}"
            )

    def sampler_overrides(self) -> dict:
        """The sampler settings this block sets, as the pipeline's keyword arguments; None where it
        leaves the ``diffusion`` block's default (``""``, ``0``, a negative guidance scale)."""
        return dict(sampler=self.sampler or None, steps=self.steps or None,
                    guidance=None if self.guidance_scale < 0 else self.guidance_scale)
