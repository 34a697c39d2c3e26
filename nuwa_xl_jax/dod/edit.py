"""An edit of a finished diffusion-over-diffusion video: what a changed storyboard touches, as a
plan that reruns only that (pure data, numpy only).

Why an edit can be local and exact: every segment of level k is a function of its two ends (and
any pinned frame inside), its prompts and its own noise key, ``fold_in(fold_in(key(seed), k),
segment)`` (dod/engine.py), and of nothing else. So, from the saved final latent buffer of the
old video:

- level 0 regenerates only the keyframes whose prompt or pin changed, with every other keyframe
  given (mask 1, its old latent), so the storyboard around the change stays as it was;
- level k >= 1 reruns a segment only if one of its ends was rewritten above, or a prompt or pin
  inside it changed; every other segment's latents are the old ones, bit for bit, because they
  are never recomputed;
- decoding (dod/decode.py ``redecode``) redoes only the windows whose input latents changed; every
  other frame is the old video's, byte for byte.

The engine runs the returned plan from the old buffer (``ResumePoint(0, buffer)``): a level's
segments read their ends from the buffer, which holds the new latents where the edit rewrote
them and the old ones everywhere else.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from nuwa_xl_jax.dod.plan import Plan


@dataclasses.dataclass(frozen=True)
class EditPlan:
    """``plan``: the video's plan whose levels hold only the segments to rerun (level 0: the
    changed keyframes, every other keyframe given); ``changed`` ``[N]``: frames whose prompt or
    pin changed; ``regenerated`` ``[span]``: frames whose latent the edit rewrites (or re-pins);
    ``segments_run`` / ``segments_full``: sampler segments the edit runs against a full run (per
    level, level 0 first)."""
    plan: Plan
    changed: np.ndarray
    regenerated: np.ndarray
    segments_run: tuple
    segments_full: tuple


def changed_frames(old_prompts, new_prompts, old_pins: Optional[tuple],
                   new_pins: Optional[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """``(prompt changed [N], pin changed [N])``: frames whose prompt differs, and frames pinned
    in one storyboard and not the other, or pinned to another latent."""
    if len(old_prompts) != len(new_prompts):
        raise ValueError(f"the edit has {len(new_prompts)} prompts but the video has "
                         f"{len(old_prompts)} frames; an edit keeps the length")
    n = len(old_prompts)
    prompts = np.array([a != b for a, b in zip(old_prompts, new_prompts)], bool).reshape(n)

    def by_frame(pins):
        if pins is None:
            return {}
        return {int(f): np.asarray(z) for f, z in zip(np.asarray(pins[0]).reshape(-1), pins[1])}

    old, new = by_frame(old_pins), by_frame(new_pins)
    pins = np.zeros(n, bool)
    for f in set(old) | set(new):
        if f not in old or f not in new or not np.array_equal(old[f], new[f]):
            pins[f] = True
    return prompts, pins


def edit_plan(plan: Plan, prompt_changed: np.ndarray, pin_changed: np.ndarray) -> EditPlan:
    """The segments of ``plan`` (already pinned with the new storyboard's pins) an edit reruns;
    see the module doc."""
    n = plan.frames
    prompt_changed = np.asarray(prompt_changed, bool).reshape(n)
    pin_changed = np.asarray(pin_changed, bool).reshape(n)
    regenerated = np.zeros(plan.span, bool)
    regenerated[:n] |= pin_changed  # a new pin's latent is in the buffer before level 0
    levels, run, full = [], [], []
    for lv in plan.levels:
        in_video = lv.frames < n
        touched = prompt_changed[lv.prompts] | (in_video & pin_changed[np.minimum(lv.frames,
                                                                                 n - 1)])
        if lv.level == 0:
            regen = touched & ~lv.given  # the changed keyframes; pinned ones stay given
            rows = np.flatnonzero(regen.any(axis=1))
            sub = dataclasses.replace(lv.subset(rows), given=(~regen)[rows],
                                      writes=(lv.writes & regen)[rows])
        else:
            rows = np.flatnonzero((touched | regenerated[lv.frames]).any(axis=1))
            sub = lv.subset(rows)
        regenerated[sub.frames[~sub.given]] = True
        levels.append(sub)
        run.append(len(rows))
        full.append(lv.num_segments)
    return EditPlan(dataclasses.replace(plan, levels=tuple(levels)), prompt_changed | pin_changed,
                    regenerated, tuple(run), tuple(full))


def ranges(mask) -> list[tuple[int, int]]:
    """The runs of True in ``mask`` as inclusive ``(first, last)`` frame ranges."""
    mask = np.asarray(mask, bool).reshape(-1)
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return [(int(a), int(b) - 1) for a, b in zip(np.flatnonzero(edges == 1),
                                                 np.flatnonzero(edges == -1))]


def describe(spans: list[tuple[int, int]]) -> str:
    """``"12-40, 97"``: frame ranges for a person; ``"none"`` when empty."""
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans) or "none"
