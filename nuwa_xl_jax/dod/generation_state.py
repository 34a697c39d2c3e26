"""A generation's state on disk, so a run can stop after any level and continue bit for bit.

``DIR/state.json`` holds what fixes the video: the per-frame prompts, the pinned frames (and
their latents, ``pins.npy``), the seed, the sampler settings, the frame count and the family's
fingerprint; ``DIR/level{k}.npy`` the latent buffer after level k (float32, exactly what the next
level reads). A level's file is written before state.json names it finished, and each by a
rename, so a run killed mid-write leaves the last finished level readable.

Why the fingerprint: resuming on other weights would mix two models in one video; it is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Optional

import jax
import numpy as np

STATE = "state.json"
VERSION = 1


class StateError(ValueError):
    """A state folder that cannot be written or resumed; the message says why and the fix."""


def family_fingerprint(family) -> str:
    """sha256 of the family's config and every weight it generates with (MTDs, text, VAE)."""
    h = hashlib.sha256(json.dumps(family.config.to_dict(), sort_keys=True, default=str).encode())
    trees = (family.global_params, family.local_params, family.models.vae_params)
    for leaf in jax.tree.leaves(trees):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclasses.dataclass
class State:
    """What fixes a video (everything but the latents) and the last finished level."""
    prompts: list
    frames: int
    seed: int
    sampling: dict
    fingerprint: str
    pinned_frames: list
    finished_level: int = -1


def _atomic_save(path: str, write) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def prepare(directory: str, state: State, pinned: Optional[tuple]) -> None:
    """Creates ``directory`` for a new generation; refuses a folder holding anything else, so no
    run's state (or other data) is overwritten."""
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise StateError(f"--state={directory!r} exists and is not an empty folder; give a new or "
                         "empty folder (continue a stopped run with --resume instead)")
    os.makedirs(directory, exist_ok=True)
    if pinned is not None:
        _atomic_save(os.path.join(directory, "pins.npy"),
                     lambda f: np.save(f, np.asarray(pinned[1], np.float32)))
    write_json(directory, state)


def write_json(directory: str, state: State) -> None:
    data = json.dumps({"version": VERSION, **dataclasses.asdict(state)}, indent=1).encode()
    _atomic_save(os.path.join(directory, STATE), lambda f: f.write(data))


def save_level(directory: str, state: State, level: int, buffer) -> None:
    """The buffer after ``level`` (a copy: the engine donates it to the next level)."""
    _atomic_save(os.path.join(directory, f"level{level}.npy"),
                 lambda f: np.save(f, np.asarray(buffer, np.float32)))
    state.finished_level = level
    write_json(directory, state)


def load(directory: str) -> tuple[State, Optional[tuple], Optional[np.ndarray]]:
    """``(state, pinned (frames, latents) or None, buffer of the last finished level or None)``."""
    path = os.path.join(directory, STATE)
    if not os.path.isfile(path):
        raise StateError(f"--resume={directory!r} holds no {STATE}; give the folder a generation "
                         "wrote with --state")
    try:
        with open(path) as f:
            data = json.load(f)
        if data.pop("version") != VERSION:
            raise StateError(f"{path}: state version {data.get('version')} is not {VERSION}")
        state = State(**data)
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise StateError(f"{path} is not a generation state ({e}); give the folder a generation "
                         "wrote with --state") from e
    pinned = None
    if state.pinned_frames:
        pinned = (np.asarray(state.pinned_frames), np.load(os.path.join(directory, "pins.npy")))
    buffer = None
    if state.finished_level >= 0:
        buffer = np.load(os.path.join(directory, f"level{state.finished_level}.npy"))
    return state, pinned, buffer


def start(directory: str, family, prompts, seed: int, sampling, pinned) -> dict:
    """A new state in ``directory``; returns generate.sample's ``on_level`` that saves each
    finished level there."""
    state = State(list(prompts), len(prompts), int(seed), dataclasses.asdict(sampling),
                  family_fingerprint(family),
                  [] if pinned is None else np.asarray(pinned[0]).tolist())
    prepare(directory, state, pinned)
    return {"on_level": lambda lv, buffer: save_level(directory, state, lv.level, buffer)}


def resume(directory: str, family) -> tuple[State, Optional[tuple], dict]:
    """``(state, pinned, keywords for generate.sample)`` continuing the run saved in
    ``directory`` from its last finished level, and saving the levels still to run there."""
    state, pinned, buffer = load(directory)
    if state.fingerprint != family_fingerprint(family):
        raise StateError(f"--resume={directory!r} was generated by another model family (its "
                         "fingerprint differs); resume with the family that wrote it")
    kwargs = {"on_level": lambda lv, b: save_level(directory, state, lv.level, b)}
    if buffer is not None:
        kwargs["resume_from"] = (state.finished_level + 1, buffer)
    return state, pinned, kwargs
