"""The latents of a storyboard's keyframe images: each image encoded alone by the family's VAE
(posterior mean, times the latent scale: the latents the MTD diffuses), ready to pin
(dod/pins.py)."""
from __future__ import annotations

import functools
from typing import Optional

import jax
import numpy as np

from nuwa_xl_jax.io import keyframe_images


@functools.lru_cache(maxsize=4)
def _encode_program(vae):
    def encode(variables, video, scale):
        return vae.apply(variables, video, method="encode")[0] * scale

    return jax.jit(encode)


def encode_images(models, images: np.ndarray) -> np.ndarray:
    """Latents ``[K, h, w, c]`` of uint8 images ``[K, H, W, 3]``, one 1-frame clip each."""
    video = np.asarray(images, np.float32)[:, None] / 127.5 - 1.0
    out = _encode_program(models.vae)(models.vae_params, video, np.float32(models.scale))
    return np.asarray(out, np.float32)[:, 0]


def pinned_latents(models, config, prompts) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(frames [K], latents [K, h, w, c])`` of the pins of a storyboard (``prompts.pins``), or
    None when it pins nothing. Images are read, cropped and resized to ``data.resolution``."""
    pins = getattr(prompts, "pins", None)
    if not pins:
        return None
    try:
        frames, images = keyframe_images.load_pins(pins, tuple(config.data.resolution))
    except keyframe_images.KeyframeError as e:
        raise keyframe_images.KeyframeError(f"{getattr(prompts, 'path', '') or 'storyboard'}: "
                                            f"{e}") from None
    return frames, encode_images(models, images)
