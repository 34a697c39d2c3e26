"""The synthetic world acting out a storyboard: ground-truth frames for given per-frame captions.

Why: FID and FVD compare generated videos with *real* ones. For the synthetic world the real
counterpart of a video generated from a storyboard is the world itself playing that storyboard --
the same scenes, the same characters doing the captioned actions -- rendered by the same renderer
the training data comes from. :func:`act_out` turns one caption per frame into a :class:`Truth`
(``synthetic.render`` draws it); different ``seed`` values give different stagings (where the
characters stand, how big they are), so a storyboard has as many real videos as seeds.

Staging rules [ours; the captions fix the rest]:

- each run of identical consecutive captions is one event; a new scene starts a new shot, in
  which everyone gets a fresh random position (0.2-0.8 of the width) and height;
- on stage during an event: exactly the characters the caption names (the subject and the ones
  "with" it); an unnamed character is never drawn, a named one who was not on stage appears;
- the subject acts as the simulator moves it (:func:`synthetic.track`); the others stand. A walk
  starts where it stays in frame if it can; "grows" / "shrinks" start at least 0.08 below the
  largest / above the smallest height so the change shows; "leaves" ends off stage.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.vocabulary import ACTIONS, CHARACTERS, SCENES


class CaptionError(ValueError):
    """A caption outside the synthetic world's grammar; the message names it and the grammar."""


GRAMMAR = ("<name> <action> [with <name> [and <name>]] in the <scene>; names: "
           + ", ".join(CHARACTERS) + "; actions: " + ", ".join(ACTIONS) + "; scenes: "
           + ", ".join(SCENES))


def parse_caption(text: str) -> tuple[int, int, list[int], int]:
    """(subject, action, others, scene) of a caption of the world's grammar (a strict parse)."""
    words = text.lower().replace(",", " ").split()
    try:
        subject = CHARACTERS.index(words[0])
        rest = words[1:]
        action = next(i for i, a in enumerate(ACTIONS) if rest[:len(a.split())] == a.split())
        rest = rest[len(ACTIONS[action].split()):]
        others: list[int] = []
        if rest and rest[0] == "with":
            rest = rest[1:]
            others.append(CHARACTERS.index(rest.pop(0)))
            while rest and rest[0] == "and":
                others.append(CHARACTERS.index(rest[1]))
                rest = rest[2:]
        if rest[:2] != ["in", "the"] or len(rest) != 3:
            raise ValueError
        scene = SCENES.index(rest[2])
    except (ValueError, IndexError, StopIteration):
        raise CaptionError(f"caption {text!r} is not in the synthetic world's grammar ({GRAMMAR})"
                           ) from None
    return subject, action, [o for o in others if o != subject], scene


def _events(captions: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, length, caption) of each run of identical consecutive captions."""
    out: list[tuple[int, int, str]] = []
    for t, c in enumerate(captions):
        if out and out[-1][2] == c:
            out[-1] = (out[-1][0], out[-1][1] + 1, c)
        else:
            out.append((t, 1, c))
    return out


def act_out(captions: Sequence[str], seed: int = 0) -> synthetic.Truth:
    """The ground truth of the world playing ``captions`` (one per frame); see the module doc."""
    captions = list(captions)
    if not captions:
        raise CaptionError("act_out: no captions")
    T, K = len(captions), len(CHARACTERS)
    rng = np.random.default_rng([seed, T])
    scene, visible, x, y, size, action, subject, shot = synthetic.blank_truth(T)
    pos: dict[int, float] = {}
    sz: dict[int, float] = {}
    gone: set[int] = set()  # left the stage: back at a fresh place when named again
    current, shot_no = -1, -1
    for start, dur, text in _events(captions):
        subj, act, others, sc = parse_caption(text)
        if sc != current:  # a new shot: fresh staging
            current, shot_no = sc, shot_no + 1
            pos = {c: float(rng.uniform(0.2, 0.8)) for c in range(K)}
            sz = {c: float(rng.uniform(synthetic.MIN_SIZE, synthetic.MAX_SIZE)) for c in range(K)}
            gone = set()
        for c in gone & {subj, *others}:
            pos[c] = float(rng.uniform(0.2, 0.8))
        gone -= {subj, *others}
        travel = synthetic.WALK_SPEED * dur
        if act == synthetic.WALK_RIGHT:
            pos[subj] = min(pos[subj], max(0.1, 0.9 - travel))
        elif act == synthetic.WALK_LEFT:
            pos[subj] = max(pos[subj], min(0.9, 0.1 + travel))
        elif act == synthetic.GROW:
            sz[subj] = min(sz[subj], synthetic.MAX_SIZE - 0.08)
        elif act == synthetic.SHRINK:
            sz[subj] = max(sz[subj], synthetic.MIN_SIZE + 0.08)
        sl = slice(start, start + dur)
        for c in [subj] + others:
            vis, xs, ys, ss, a = synthetic.track(c, act if c == subj else synthetic.STAND,
                                                 pos[c], sz[c], True, dur, sc)
            visible[sl, c], x[sl, c], y[sl, c], size[sl, c], action[sl, c] = vis, xs, ys, ss, a
            pos[c], sz[c] = float(xs[-1]), float(ss[-1])
        if act == synthetic.LEAVE:
            gone.add(subj)
        scene[sl], shot[sl], subject[sl] = sc, shot_no, subj
    return synthetic.Truth(scene, visible, x, y, size, action, subject, shot, tuple(captions))


def render_storyboard(captions: Sequence[str], resolution: tuple[int, int],
                      seed: int = 0) -> np.ndarray:
    """Frames ``[T, H, W, 3]`` uint8 of the world playing ``captions`` (staging ``seed``)."""
    return synthetic.render(act_out(captions, seed), resolution)
