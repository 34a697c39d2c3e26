"""Input checks that DoD (dod/engine.py), the AR baseline (dod/baselines.py) and ART•V
(dod/artv.py) share: each fails with a message naming the argument before anything compiles."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from nuwa_xl_jax.diffusion import samplers


def sampling(schedule, sampler: str, steps: Optional[int], guidance_scale: float, eta: float,
             spacing: Optional[str]) -> samplers.Settings:
    """The settings of one generation, checked against ``schedule`` (unknown sampler, eta for a
    sampler that does not take it, steps outside the schedule)."""
    settings = samplers.Settings(sampler, steps, float(guidance_scale), float(eta), spacing)
    settings.check(schedule)
    return settings


def prompts(prompt_ids, null_ids, frames: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(prompt_ids [N, T], null_ids [T])`` as numpy: one row of token ids per frame (``frames``
    rows when given, else at least one) and the empty prompt's ids, for guidance."""
    prompt_ids = np.asarray(prompt_ids)
    rows = "with one row per frame (N >= 1)" if frames is None else \
        f"with one row per requested frame (N={frames})"
    if prompt_ids.ndim != 2 or prompt_ids.shape[0] < 1 or \
            (frames is not None and prompt_ids.shape[0] != frames):
        raise ValueError(f"prompt_ids must be [N, T] {rows}, got shape {prompt_ids.shape}")
    null_ids = np.asarray(null_ids)
    if null_ids.shape != prompt_ids.shape[1:]:
        raise ValueError(f"null_ids must be [T]={prompt_ids.shape[1:]}, got shape {null_ids.shape}")
    return prompt_ids, null_ids


def latent_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """``(h, w, c)`` of one latent frame."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3:
        raise ValueError(f"latent_shape must be (h, w, c), got {shape}")
    return shape
