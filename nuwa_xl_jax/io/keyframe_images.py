"""Keyframe images of a storyboard: the frames a user pins with a picture.

A JSON / YAML scene may carry ``"image": PATH`` (pins the scene's first frame) and the storyboard
a top-level ``"keyframes": [{"frame": i, "image": PATH}, ...]`` (pins any frame). Relative paths
are read from the storyboard's folder. Every image is read here, before any model runs, and
center-cropped to the family's aspect then resized to its resolution, so a missing, unreadable or
misplaced image is one error naming the scene or keyframe and the fix (io/storyboards.py).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np


class KeyframeError(ValueError):
    """A keyframe image or frame index that cannot be used; the message names where."""


@dataclasses.dataclass(frozen=True)
class Pin:
    """Frame ``frame`` shows the image at ``image``; ``where`` locates it in the storyboard."""
    frame: int
    image: str
    where: str


def resolve(storyboard_path: str, image) -> str:
    """An image path as written in a storyboard: relative to the storyboard's folder."""
    if not isinstance(image, str) or not image.strip():
        raise KeyframeError(f"'image' must be a file path string, got {image!r}")
    image = os.path.expanduser(image.strip())
    return image if os.path.isabs(image) else os.path.join(os.path.dirname(storyboard_path), image)


def check_frames(path: str, pins, frames: int) -> None:
    """Each pinned frame inside ``[0, frames)`` and pinned once."""
    seen = {}
    for pin in pins:
        if not 0 <= pin.frame < frames:
            raise KeyframeError(f"{path}: {pin.where}: frame {pin.frame} is outside the video's "
                                f"{frames} frames; use a frame in 0..{frames - 1}")
        if pin.frame in seen:
            raise KeyframeError(f"{path}: {pin.where} pins frame {pin.frame}, already pinned by "
                                f"{seen[pin.frame]}; pin each frame once")
        seen[pin.frame] = pin.where


def load_image(path: str, where: str, resolution) -> np.ndarray:
    """uint8 ``[H, W, 3]``: the image center-cropped to the aspect of ``resolution`` (H, W), then
    resized to it (bicubic)."""
    # Deferred: PIL is not on the accelerator machines benchmarks/device_check.py runs on (this
    # module is on its import path).
    from PIL import Image, UnidentifiedImageError

    h, w = (int(x) for x in resolution)
    if not os.path.isfile(path):
        raise KeyframeError(f"{where}: image {path!r} does not exist; give the path of a PNG or "
                            "JPEG file (relative paths are read from the storyboard's folder)")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise KeyframeError(f"{where}: cannot read image {path!r} ({e}); give a PNG or JPEG "
                            "file") from e
    iw, ih = im.size
    # The largest box of the target aspect, centered: no stretching, the edges are cut.
    cw, ch = min(iw, round(ih * w / h)), min(ih, round(iw * h / w))
    left, top = (iw - cw) // 2, (ih - ch) // 2
    im = im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BICUBIC)
    return np.asarray(im, np.uint8)


def load_pins(pins, resolution) -> tuple[np.ndarray, np.ndarray]:
    """``(frames [K] int, images [K, H, W, 3] uint8)`` of ``pins``, sorted by frame."""
    pins = sorted(pins, key=lambda p: p.frame)
    h, w = (int(x) for x in resolution)
    images = [load_image(p.image, p.where, resolution) for p in pins]
    return (np.asarray([p.frame for p in pins], np.int64),
            np.stack(images) if images else np.zeros((0, h, w, 3), np.uint8))
