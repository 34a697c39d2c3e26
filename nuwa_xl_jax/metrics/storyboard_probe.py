"""How well generated synthetic-world frames follow their storyboard, read by ``metrics.probe``.

Each caption names a scene and the characters on stage ("fred walks left with wilma in the
cave"). Scores are shares of frames: ``scene`` (the probe reads the captioned scene; an unknown
scene is wrong), ``characters`` (someone is on screen and every visible character is one the
caption names: named characters may have walked out of frame, but nobody unnamed may appear) and
``both``; ``unknown`` (no background template fits the frame: black, grey, noise, mush).
``flicker``: mean absolute difference (0-255) between consecutive frames under the same prompt.
``identity``: share of character detections (judgeable blobs) drawn in their own colour and shape.
With a keyframe mask, ``keyframes`` and ``inbetween`` repeat scene / characters / both on each
part. ``ceiling`` scores real rendered frames the same way (tests/metrics/test_probe.py holds it).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.metrics import probe


def parse_caption(text: str) -> tuple[int, frozenset]:
    """(scene index, indices of the named characters) of a caption of the world's grammar."""
    words = text.lower().replace(",", " ").split()
    scene = next((synthetic.SCENES.index(w) for w in words if w in synthetic.SCENES), -1)
    names = frozenset(synthetic.CHARACTERS.index(w) for w in words if w in synthetic.CHARACTERS)
    return scene, names


def _shares(scene_ok, chars_ok) -> dict:
    if not len(scene_ok):
        return {"scene": None, "characters": None, "both": None}
    return {"scene": float(scene_ok.mean()), "characters": float(chars_ok.mean()),
            "both": float((scene_ok & chars_ok).mean())}


def flicker(frames: np.ndarray, prompts: Sequence[str]) -> Optional[float]:
    """Mean |frame[t+1] - frame[t]| (0-255) over pairs of consecutive frames with the same
    prompt."""
    same = np.array([a == b for a, b in zip(prompts[:-1], prompts[1:])], bool)
    if not same.any():
        return None
    idx = np.flatnonzero(same)
    diffs = [
        np.abs(frames[i + 1].astype(np.int16) - frames[i].astype(np.int16)).mean() for i in idx
    ]
    return float(np.mean(diffs))


def agreement(frames: np.ndarray, prompts: Sequence[str],
              keyframes: Optional[np.ndarray] = None) -> dict:
    """Scores of ``frames`` [T, H, W, 3] uint8 against one prompt per frame (see module doc)."""
    frames = probe.check_frames(frames)
    prompts = list(prompts)
    if len(frames) != len(prompts):
        raise ValueError(f"{len(frames)} frames but {len(prompts)} prompts")
    if not len(frames):
        raise ValueError("no frames to score")
    reading = probe.read(frames)
    parsed = [parse_caption(t) for t in prompts]
    scene_ok = np.array([reading.scene[i] == s != -1 for i, (s, _) in enumerate(parsed)])
    visible = [frozenset(np.flatnonzero(reading.visible[i]).tolist()) for i in range(len(frames))]
    chars_ok = np.array(
        [v <= names and (bool(v) or not names) for v, (_, names) in zip(visible, parsed)]
    )
    judged = reading.judged
    identity = (float((reading.colour_ok & reading.shape_ok)[judged].mean()) if judged.any()
                else None)
    out = {"frames": int(len(frames)), **_shares(scene_ok, chars_ok),
           "unknown": float((reading.scene == probe.UNKNOWN).mean()),
           "flicker": flicker(frames, prompts), "identity": identity,
           "detections": int(judged.sum())}
    if keyframes is not None:
        mask = np.asarray(keyframes)
        if mask.dtype != bool or mask.shape != (len(frames),):
            raise ValueError(f"keyframes must be a bool mask of shape ({len(frames)},), "
                             f"got {mask.dtype} {mask.shape}")
        out["keyframes"] = _shares(scene_ok[mask], chars_ok[mask])
        out["inbetween"] = _shares(scene_ok[~mask], chars_ok[~mask])
    return out


def ceiling(length: int = 226, resolution=(64, 64), seed: int = 0) -> dict:
    """The same scores on a real rendered episode: the best a perfect generator could get."""
    frames, captions, _ = synthetic.episode(seed, 0, length, resolution)
    return agreement(frames, captions)
