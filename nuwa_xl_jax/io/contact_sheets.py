"""Contact sheets: one PNG row per hierarchy level showing the keyframes that level generated."""
from __future__ import annotations

import os
from typing import NamedTuple, Optional, Sequence

import numpy as np

from nuwa_xl_jax import paths
from nuwa_xl_jax.io.storyboards import scenes_of

LABEL_WIDTH = 84   # the left column with "level k" and the row's frame count
GAP = 4            # pixels between thumbnails and around the sheet
INDEX_HEIGHT = 12  # the strip under each thumbnail with its frame index


class KeyframeCollector:
    """Keeps, while frames stream past, the frames a contact sheet shows for each level.

    ``level_indices[k]``: the video frame indices level k generated (from the plan). At most
    ``max_per_row`` evenly spaced ones are kept per level, so memory stays bounded for any length.
    ``add(frames)`` takes the next frames of the video in order; ``levels`` is the input of
    :func:`contact_sheet`.
    """

    def __init__(self, level_indices: Sequence[Sequence[int]], max_per_row: int = 16):
        self.total = [len(ix) for ix in level_indices]
        self.wanted = [_evenly(np.asarray(ix, int), max_per_row) for ix in level_indices]
        self.kept: list[dict[int, np.ndarray]] = [{} for _ in level_indices]
        self.offset = 0

    def add(self, frames) -> None:
        frames = np.asarray(frames)
        stop = self.offset + len(frames)
        for wanted, kept in zip(self.wanted, self.kept):
            for i in wanted[(wanted >= self.offset) & (wanted < stop)]:
                kept[int(i)] = frames[i - self.offset].copy()
        self.offset = stop

    @property
    def levels(self) -> list[LevelKeyframes]:
        out = []
        for kept, total in zip(self.kept, self.total):
            ix = np.array(sorted(kept), int)
            frames = (
                np.stack([kept[i] for i in ix]) if len(ix) else np.zeros((0, 1, 1, 3), np.uint8)
            )
            out.append(LevelKeyframes(ix, frames, total))
        return out


class LevelKeyframes(NamedTuple):
    """A contact sheet row: the kept frame indices, their uint8 frames, the level's frame count."""
    indices: np.ndarray
    frames: np.ndarray
    total: int


def _evenly(indices: np.ndarray, count: int) -> np.ndarray:
    if len(indices) <= count:
        return indices
    return indices[np.unique(np.round(np.linspace(0, len(indices) - 1, count)).astype(int))]


def contact_sheet(levels, path: str, prompts: Optional[Sequence[str]] = None, *,
                  thumb_height: int = 64, max_per_row: int = 16, overwrite: bool = False,
                  labels: Optional[Sequence[str]] = None):
    """A PNG with one row per hierarchy level showing that level's keyframes; returns the PIL image.

    ``levels``: a sequence, level 0 first, of ``(indices, frames)``: the video frame indices the
    level generated and their uint8 frames ``[n, H, W, 3]`` (e.g. :attr:`KeyframeCollector.levels`).
    Rows with more than ``max_per_row`` frames show that many, evenly spaced. Each thumbnail is
    labelled with its frame index; with per-frame ``prompts`` also with its scene number, and a
    legend under the rows lists the scenes' frame ranges and prompts. ``labels`` names the rows
    (default "level k"; e.g. the generation schemes of a side-by-side comparison).
    """
    # Deferred: PIL is not on the accelerator machines benchmarks/device_check.py runs on (this
    # module is on its import path).
    from PIL import Image, ImageDraw, ImageFont

    path = os.fspath(path)
    if paths.as_path(path).exists() and not overwrite:  # a local file or one in a bucket
        raise FileExistsError(f"{path!r} already exists; pass overwrite=True (--overwrite) or "
                              "choose another contact sheet path")
    rows = []
    for k, level in enumerate(levels):
        indices, frames = np.asarray(level[0], int), np.asarray(level[1])
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"level {k}: frames must be uint8 [n, H, W, 3], got {frames.dtype} "
                             f"{frames.shape}")
        if len(indices) != len(frames):
            raise ValueError(f"level {k}: {len(indices)} indices but {len(frames)} frames")
        total = int(level[2]) if len(level) > 2 else len(indices)
        pick = np.searchsorted(indices, _evenly(indices, max_per_row)) if len(indices) else []
        rows.append((indices[pick], frames[pick], total))
    if not rows:
        raise ValueError("contact_sheet needs at least one level")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    labels = list(labels) if labels is not None else [f"level {k}" for k in range(len(rows))]
    scenes = scenes_of(list(prompts)) if prompts is not None else []
    scene_of = np.zeros(len(prompts) if prompts is not None else 0, int)
    for s, sc in enumerate(scenes):
        scene_of[sc.start:sc.start + sc.frames] = s + 1

    h0, w0 = next((f.shape[1:3] for _, f, _ in rows if len(f)), (thumb_height, thumb_height))
    th, tw = thumb_height, max(1, int(round(w0 * thumb_height / h0)))
    cols = max(1, max(len(ix) for ix, _, _ in rows))
    row_h = th + INDEX_HEIGHT + GAP
    legend_h = 12 * len(scenes) + (GAP if scenes else 0)
    legend = [f"S{s + 1} frames {sc.start}-{sc.start + sc.frames - 1}: {sc.prompt}"
              for s, sc in enumerate(scenes)]
    font = ImageFont.load_default()
    width = max([LABEL_WIDTH + cols * (tw + GAP) + GAP]
                + [2 * GAP + int(font.getlength(t)) for t in legend])
    height = GAP + len(rows) * row_h + legend_h
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (indices, frames, total) in enumerate(rows):
        y = GAP + k * row_h
        draw.text((GAP, y + 2), labels[k], fill=(0, 0, 0), font=font)
        shown = f"{len(indices)} of {total}" if total > len(indices) else f"{total}"
        draw.text((GAP, y + 16), f"{shown} frames", fill=(80, 80, 80), font=font)
        for j, (i, frame) in enumerate(zip(indices, frames)):
            x = LABEL_WIDTH + j * (tw + GAP)
            img = Image.fromarray(frame)
            upscale = frame.shape[0] < th
            img = img.resize(
                (tw, th), Image.Resampling.NEAREST if upscale else Image.Resampling.BOX
            )
            sheet.paste(img, (x, y))
            label = f"{i}" + (f" S{scene_of[i]}" if i < len(scene_of) else "")
            draw.text((x, y + th + 1), label, fill=(0, 0, 0), font=font)
    y = GAP + len(rows) * row_h
    for s, text in enumerate(legend):
        draw.text((GAP, y + 12 * s), text, fill=(0, 0, 0), font=font)
    if paths.is_url(path):
        paths.as_path(path).parent.mkdir(parents=True, exist_ok=True)
        with paths.as_path(path).open("wb") as f:
            sheet.save(f, format="PNG")
    else:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        sheet.save(path)
    return sheet
