"""Pinned frames in a plan: frames whose latents the user gives (keyframe images).

A pinned frame is given (mask 1) at every level whose segment holds it, level 0 included, and no
level writes it: the latent buffer starts with the pinned latents, and given frames are never
written back (dod/engine.py), so a pinned frame's latent is bit-exact in the output. The segments'
shapes do not change, only which positions are given, so pins cost no recompile.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nuwa_xl_jax.dod.plan import Plan


def pin_plan(plan: Plan, frames) -> Plan:
    """``plan`` with ``frames`` (absolute indices < N) given wherever a segment holds them."""
    frames = np.asarray(frames, np.int64).reshape(-1)
    if frames.size == 0:
        return plan
    if frames.min() < 0 or frames.max() >= plan.frames:
        raise ValueError(f"pinned frames {frames.tolist()} must lie in 0..{plan.frames - 1}")
    levels = []
    for lv in plan.levels:
        given = lv.given | np.isin(lv.frames, frames)
        levels.append(dataclasses.replace(lv, given=given, writes=lv.writes & ~given))
    return dataclasses.replace(plan, levels=tuple(levels))
