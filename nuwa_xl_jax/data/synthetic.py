"""A deterministic procedural cartoon world: the embedded dataset that knows the truth of every
frame.

Why: FlintstonesHD cannot be downloaded, and quality of long videos cannot be measured without
knowing what each frame should show. Here every frame has a caption from a small grammar and a
ground truth (scene, which characters are visible, where, how big, doing what) that probes score.

The world:
- scenes: distinct backgrounds (sky colour, ground colour, horizon height, one scenery block);
- characters: six named figures with a distinct shape and a distinct saturated colour each; an
  episode casts three of them and keeps their identity (shape, colour) for its whole length;
- shots: an episode is a sequence of shots (a scene change is a shot change), each with a cast
  subset; within a shot, events of varying duration (6..48 frames): one character acts
  (walks left/right, jumps, grows, shrinks, enters, leaves, stands), the others stand;
- captions: "<name> <action> [with <name> [and <name>]] in the <scene>", constant over an event.

Coordinates are resolution-free (x, y of the shape's centre in [0, 1] of width / height, size as a
fraction of the height), so one simulated episode renders at any resolution. Rendering is
vectorised numpy over [frames, height, width]: measured on this 2-core machine (one core),
``episode(0, 0, 3376, (64, 64))`` takes 0.12-0.25 s (simulation ~15 ms, rendering the rest;
benchmarks/data_pipeline.py: 8.2 episodes/s).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np

from nuwa_xl_jax.models.tokenizers import WordTokenizer
from nuwa_xl_jax.vocabulary import ACTIONS, CHARACTERS, SCENES, VOCABULARY

# SCENES, CHARACTERS, ACTIONS (nuwa_xl_jax/vocabulary.py): the rows below follow their order.
# (sky, ground, scenery block) colours: no character colour is near any of them.
SCENE_COLOURS = np.array([
    [(250, 220, 160), (200, 150, 90), (150, 110, 60)],   # desert
    [(60, 50, 45), (110, 95, 80), (85, 70, 60)],          # cave
    [(170, 215, 235), (70, 120, 50), (40, 80, 30)],       # forest
    [(140, 200, 250), (240, 225, 180), (30, 110, 170)],   # beach
    [(190, 190, 200), (120, 120, 130), (80, 80, 95)],     # city
    [(215, 230, 245), (250, 250, 250), (170, 185, 205)],  # snow
], np.uint8)
SCENE_HORIZON = np.array([0.55, 0.45, 0.6, 0.5, 0.65, 0.5], np.float32)  # ground starts here

SHAPES = ("square", "circle", "triangle", "diamond", "cross", "tall")
CHARACTER_COLOURS = np.array([
    (255, 110, 0), (230, 0, 40), (20, 40, 255), (0, 200, 220), (170, 0, 230), (255, 0, 200),
], np.uint8)

STAND, WALK_LEFT, WALK_RIGHT, JUMP, GROW, SHRINK, ENTER, LEAVE = range(len(ACTIONS))

CAST_SIZE = 3
MIN_SIZE, MAX_SIZE = 0.14, 0.34   # character height, fraction of frame height
WALK_SPEED = 0.012                # of the width per frame
JUMP_PERIOD, JUMP_HEIGHT = 16, 0.22

@dataclasses.dataclass(frozen=True)
class Truth:
    """What every frame shows; arrays over frames T and all K=len(CHARACTERS) characters.

    scene [T] int32; visible [T, K] bool (some part of the shape is inside the frame); x, y [T, K]
    float32 centre in [0, 1] of width / height (y grows downwards); size [T, K] float32 height as a
    fraction of the frame height; action [T, K] int8 index into ACTIONS; subject [T] int32 the
    character the caption is about; shot [T] int32 shot number; captions: one string per frame.
    """
    scene: np.ndarray
    visible: np.ndarray
    x: np.ndarray
    y: np.ndarray
    size: np.ndarray
    action: np.ndarray
    subject: np.ndarray
    shot: np.ndarray
    captions: tuple

    def __len__(self) -> int:
        return len(self.scene)

    def take(self, indices) -> "Truth":
        """The truth of the frames at ``indices`` (array or slice), in that order."""
        idx = np.arange(len(self))[indices] if isinstance(indices, slice) else np.asarray(indices)
        return Truth(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)[:-1]),
                     captions=tuple(self.captions[i] for i in idx))


def tokenizer(max_length: int = 16):
    """A WordTokenizer over the grammar's VOCABULARY (every caption fits in 12 tokens)."""
    return WordTokenizer(VOCABULARY, max_length=max_length)


def caption(subject: int, action: int, others: Sequence[int], scene: int) -> str:
    words = [CHARACTERS[subject], ACTIONS[action]]
    if others:
        words += ["with", " and ".join(CHARACTERS[o] for o in others)]
    return " ".join(words + ["in", "the", SCENES[scene]])


def caption_patterns() -> list[str]:
    """One caption for every (scene, subject, others) the grammar can produce (others: up to
    CAST_SIZE - 1 of the other characters, in cast order), the actions taken in turn so each
    appears about equally: what a text-to-image base of this world must draw (576 captions)."""
    out = []
    for scene in range(len(SCENES)):
        for subject in range(len(CHARACTERS)):
            rest = [c for c in range(len(CHARACTERS)) if c != subject]
            for others in (g for k in range(CAST_SIZE) for g in itertools.combinations(rest, k)):
                out.append(caption(subject, len(out) % len(ACTIONS), others, scene))
    return out


def _ground_y(scene: int, size):
    """Centre height that puts a character's feet a little below the horizon."""
    return SCENE_HORIZON[scene] + 0.25 * (1 - SCENE_HORIZON[scene]) - np.asarray(size) / 2


def track(c: int, act: int, pos: float, size: float, on: bool, dur: int, scene: int):
    """One character's ``dur`` frames of an event: (visible, x, y, size, action) arrays, starting
    from centre ``pos`` and height ``size`` (``on``: on stage at the start). Pure: the simulator and
    the storyboard actor (:mod:`nuwa_xl_jax.data.scripted`) share it, so both move alike."""
    phase = np.arange(1, dur + 1, dtype=np.float32)
    xs = np.full(dur, pos, np.float32)
    ss = np.full(dur, size, np.float32)
    vis = np.full(dur, on)
    if act in (WALK_LEFT, WALK_RIGHT):
        xs = pos + (1 if act == WALK_RIGHT else -1) * WALK_SPEED * phase
    elif act == GROW:
        ss = size + (MAX_SIZE - size) * phase / dur
    elif act == SHRINK:
        ss = size + (MIN_SIZE - size) * phase / dur
    elif act == ENTER:
        # Walk in from the nearer edge to the stored target position.
        side = -1.0 if pos < 0.5 else 1.0
        start = 0.5 + side * (0.5 + size)
        xs = start + (pos - start) * phase / dur
        vis = np.ones(dur, bool)
    elif act == LEAVE:
        side = -1.0 if pos < 0.5 else 1.0
        target = 0.5 + side * (0.5 + size)
        xs = pos + (target - pos) * phase / dur
        vis = np.ones(dur, bool)
    xs = xs.astype(np.float32)
    ss = ss.astype(np.float32)
    ys = _ground_y(scene, ss).astype(np.float32)
    if act == JUMP:
        ys = ys - JUMP_HEIGHT * np.abs(np.sin(np.pi * phase / JUMP_PERIOD))
    half_w = ss * 0.5 * (1 if SHAPES[c] != "tall" else 0.5)
    vis = vis & (xs + half_w > 0) & (xs - half_w < 1)
    return vis, xs, ys, ss, act


def blank_truth(length: int) -> tuple[np.ndarray, ...]:
    """Zeroed arrays of a :class:`Truth` of ``length`` frames, in its field order (no captions)."""
    K = len(CHARACTERS)
    return (np.zeros(length, np.int32), np.zeros((length, K), bool),
            np.zeros((length, K), np.float32), np.zeros((length, K), np.float32),
            np.zeros((length, K), np.float32), np.zeros((length, K), np.int8),
            np.zeros(length, np.int32), np.zeros(length, np.int32))


def simulate(seed: int, length: int, episode_index: int = 0) -> Truth:
    """The ground truth of an episode: the same (seed, episode_index) always gives the same
    truth."""
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"episode length must be a positive integer, got {length!r}")
    rng = np.random.default_rng([seed, episode_index])
    K = len(CHARACTERS)
    scene, visible, x, y, size, action, subject, shot = blank_truth(length)
    caps: list[str] = []
    cast = rng.choice(K, CAST_SIZE, replace=False)

    t, shot_no, current_scene = 0, 0, -1
    while t < length:
        current_scene = int(rng.choice([s for s in range(len(SCENES)) if s != current_scene]))
        shot_len = int(min(rng.integers(60, 400), length - t))
        # Who is on stage at the start of the shot, where, how big.
        on = {int(c): bool(rng.random() < 0.7) for c in cast}
        if not any(on.values()):
            on[int(cast[0])] = True
        pos = {c: float(rng.uniform(0.2, 0.8)) for c in on}
        sz = {c: float(rng.uniform(MIN_SIZE, MAX_SIZE)) for c in on}
        end = t + shot_len
        while t < end:
            dur = int(min(rng.integers(6, 49), end - t))
            subj = int(rng.choice(list(on)))
            act = _pick_action(rng, on[subj], pos[subj], sz[subj], dur)
            sl = slice(t, t + dur)
            for c in on:
                vis, xs, ys, ss, a = track(c, act if c == subj else STAND, pos[c], sz[c], on[c],
                                           dur, current_scene)
                visible[sl, c], x[sl, c], y[sl, c], size[sl, c], action[sl, c] = vis, xs, ys, ss, a
                pos[c], sz[c] = float(xs[-1]), float(ss[-1])
            if act == ENTER:
                on[subj] = True
            elif act == LEAVE:
                on[subj] = False
            others = [c for c in sorted(on) if on[c] and c != subj]
            caps += [caption(subj, act, others, current_scene)] * dur
            scene[sl], shot[sl], subject[sl] = current_scene, shot_no, subj
            t += dur
        shot_no += 1
    return Truth(scene, visible, x, y, size, action, subject, shot, tuple(caps))


def _pick_action(rng, on: bool, pos: float, size: float, dur: int) -> int:
    """An action that is possible from the character's state, so captions never lie."""
    if not on:
        return ENTER
    travel = WALK_SPEED * dur
    choices = [STAND, JUMP, LEAVE]
    if pos - travel > 0.1:
        choices.append(WALK_LEFT)
    if pos + travel < 0.9:
        choices.append(WALK_RIGHT)
    if size < MAX_SIZE - 0.05:
        choices.append(GROW)
    if size > MIN_SIZE + 0.05:
        choices.append(SHRINK)
    return int(rng.choice(choices))


def backgrounds(resolution: tuple[int, int]) -> np.ndarray:
    """[S, H, W, 3] uint8: sky above the horizon, ground below, one scenery block per scene."""
    h, w = resolution
    rows = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
    cols = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w
    out = np.empty((len(SCENES), h, w, 3), np.uint8)
    for s in range(len(SCENES)):
        sky, ground, block = SCENE_COLOURS[s]
        img = np.where((rows >= SCENE_HORIZON[s])[..., None], ground, sky)
        img = np.broadcast_to(img, (h, w, 3)).copy()
        x0 = 0.1 + 0.13 * s
        blk = (cols >= x0) & (cols < x0 + 0.12) & (rows >= SCENE_HORIZON[s] - 0.18) & (
            rows < SCENE_HORIZON[s])
        img[blk] = block
        out[s] = img
    return out


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Inside test in units of the character's height (dx, dy relative to its centre)."""
    if shape == "square":
        return (np.abs(dx) <= 0.5) & (np.abs(dy) <= 0.5)
    if shape == "circle":
        return dx * dx + dy * dy <= 0.25
    if shape == "triangle":  # apex up
        return (np.abs(dy) <= 0.5) & (np.abs(dx) <= (dy + 0.5) * 0.5 + 0.05)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 0.5
    if shape == "cross":
        return ((np.abs(dx) <= 0.5) & (np.abs(dy) <= 0.17)) | (
            (np.abs(dx) <= 0.17) & (np.abs(dy) <= 0.5)
        )
    if shape == "tall":
        return (np.abs(dx) <= 0.25) & (np.abs(dy) <= 0.5)
    raise ValueError(f"unknown shape {shape!r}")


def render(truth: Truth, resolution: tuple[int, int], block: int = 256) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of ``truth``. Characters are drawn in CHARACTERS order (later on
    top)."""
    h, w = int(resolution[0]), int(resolution[1])
    if h < 8 or w < 8:
        raise ValueError(f"resolution must be at least 8x8, got {tuple(resolution)}")
    bg = backgrounds((h, w))
    frames = bg[truth.scene]
    rows = ((np.arange(h, dtype=np.float32) + 0.5) / h)[None, :, None]
    cols = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, None, :]
    aspect = np.float32(w / h)
    for k, shape in enumerate(SHAPES):
        on = np.flatnonzero(truth.visible[:, k])
        for i in range(0, len(on), block):  # bounded [block, H, W] temporaries
            t = on[i:i + block]
            s = truth.size[t, k][:, None, None]
            dx = (cols - truth.x[t, k][:, None, None]) * aspect / s
            dy = (rows - truth.y[t, k][:, None, None]) / s
            mask = _shape_mask(shape, dx, dy)
            sub = frames[t]
            sub[mask] = CHARACTER_COLOURS[k]
            frames[t] = sub
    return frames


def episode(seed: int, index: int, length: int, resolution: tuple[int, int]):
    """(frames [T, H, W, 3] uint8, captions list of T strings, Truth) of episode ``index``."""
    truth = simulate(seed, length, index)
    return render(truth, resolution), list(truth.captions), truth


