"""A generation's state on disk, so a run can stop after any level and continue bit for bit.

``DIR/state.json`` holds what fixes the video: the per-frame prompts, the pinned frames (and
their latents, ``pins.npy``), the seed, the sampler settings, the frame count and the family's
fingerprint; ``DIR/level{k}.npy`` the latent buffer after level k (float32, exactly what the next
level reads); ``DIR/partial.npy`` the buffer after the finished chunks of a level run in several
(state.json's ``partial``: level, chunks done, chunk size); ``DIR/frames.npy`` the decoded video
(uint8), once the run is whole: what an edit (dod/edit.py) keeps of it, byte for byte. Every
file is written before state.json names it, and each by a rename, so a run killed mid-write
leaves the last finished level (or chunk) readable.

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

from nuwa_xl_jax.dod.engine import ResumePoint

STATE = "state.json"
FRAMES = "frames.npy"
PARTIAL = "partial.npy"
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
    partial: Optional[dict] = None  # {"level", "chunks", "chunk"}: a level stopped inside
    depth: Optional[int] = None  # the plan's levels: finished when finished_level == depth - 1
    edited_from: Optional[str] = None  # the state an edit started from (pipeline.edit)
    # chunking as asked (an int, "auto" or None): a resumed run chunks its levels the same way
    max_segments_per_call: object = "auto"

    @property
    def finished(self) -> bool:
        return self.depth is not None and self.finished_level == self.depth - 1


def _atomic_save(path: str, write) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def check_new(directory: str) -> None:
    """Refuses a folder holding anything, so no run's state (or other data) is overwritten."""
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise StateError(f"--state={directory!r} exists and is not an empty folder; give a new or "
                         "empty folder (continue a stopped run with --resume instead)")


def prepare(directory: str, state: State, pinned: Optional[tuple]) -> None:
    """Creates ``directory`` for a new generation (:func:`check_new` first)."""
    check_new(directory)
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
    state.partial = None
    write_json(directory, state)
    if os.path.exists(os.path.join(directory, PARTIAL)):
        os.remove(os.path.join(directory, PARTIAL))


def save_chunk(directory: str, state: State, level: int, chunks: int, chunk: int,
               buffer) -> None:
    """The buffer after ``chunks`` chunks (of ``chunk`` segments) of ``level``."""
    _atomic_save(os.path.join(directory, PARTIAL),
                 lambda f: np.save(f, np.asarray(buffer, np.float32)))
    state.partial = {"level": int(level), "chunks": int(chunks), "chunk": int(chunk)}
    write_json(directory, state)


def callbacks(directory: str, state: State) -> dict:
    """engine.run's ``on_level`` and ``on_chunk`` that save each finished level and chunk."""
    return {"on_level": lambda lv, b: save_level(directory, state, lv.level, b),
            "on_chunk": lambda lv, n, c, b: save_chunk(directory, state, lv.level, n, c, b)}


class FramesFile:
    """``DIR/frames.npy`` written as the decoded chunks come (a memory map, so a long video is
    never held whole), named only once complete."""

    def __init__(self, directory: str, shape: tuple):
        self.path = os.path.join(directory, FRAMES)
        self.tmp = self.path + ".tmp.npy"
        self.array = np.lib.format.open_memmap(self.tmp, "w+", np.uint8, tuple(shape))
        self.n = 0

    def add(self, frames) -> None:
        frames = np.asarray(frames)
        self.array[self.n:self.n + len(frames)] = frames
        self.n += len(frames)

    def close(self) -> None:
        if self.n != len(self.array):
            raise RuntimeError(f"{self.path}: {self.n} of {len(self.array)} frames written")
        self.array.flush()
        del self.array
        os.replace(self.tmp, self.path)


def save_frames(directory: str, frames) -> None:
    """The whole decoded video (uint8 ``[N, H, W, 3]``)."""
    frames = np.asarray(frames, np.uint8)
    out = FramesFile(directory, frames.shape)
    out.add(frames)
    out.close()


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
    if state.partial is not None:
        buffer = np.load(os.path.join(directory, PARTIAL))
    elif state.finished_level >= 0:
        buffer = np.load(os.path.join(directory, f"level{state.finished_level}.npy"))
    return state, pinned, buffer


def start(directory: str, family, prompts, seed: int, sampling, pinned, depth: int,
          max_segments_per_call="auto") -> dict:
    """A new state in ``directory`` for a plan of ``depth`` levels; returns runner.sample's
    ``on_level`` and ``on_chunk`` that save each finished level and chunk there."""
    state = State(list(prompts), len(prompts), int(seed), dataclasses.asdict(sampling),
                  family_fingerprint(family),
                  [] if pinned is None else np.asarray(pinned[0]).tolist(), depth=int(depth),
                  max_segments_per_call=max_segments_per_call)
    prepare(directory, state, pinned)
    return callbacks(directory, state)


def check_family(directory: str, state: State, family, flag: str = "--resume") -> None:
    if state.fingerprint != family_fingerprint(family):
        raise StateError(f"{flag}={directory!r} was generated by another model family (its "
                         "fingerprint differs); use the family that wrote it")


def resume(directory: str, family) -> tuple[State, Optional[tuple], dict]:
    """``(state, pinned, keywords for runner.sample)`` continuing the run saved in ``directory``
    from its last finished level or chunk, and saving the levels and chunks still to run
    there."""
    state, pinned, buffer = load(directory)
    check_family(directory, state, family)
    kwargs = callbacks(directory, state)
    if state.partial is not None:
        p = state.partial
        kwargs["resume_from"] = ResumePoint(p["level"], buffer, p["chunk"], p["chunks"])
    elif buffer is not None:
        kwargs["resume_from"] = ResumePoint(state.finished_level + 1, buffer)
    return state, pinned, kwargs


def load_finished(directory: str, family) -> tuple[State, Optional[tuple], np.ndarray,
                                                  np.ndarray]:
    """``(state, pinned, final latent buffer [span, h, w, c], frames [N, H, W, 3])`` of a whole
    generation saved in ``directory`` (what an edit starts from); a stopped one is refused."""
    state, pinned, buffer = load(directory)
    check_family(directory, state, family, "--edit")
    frames = os.path.join(directory, FRAMES)
    if not state.finished or not os.path.isfile(frames):
        raise StateError(f"--edit={directory!r} holds a generation that did not finish (level "
                         f"{state.finished_level} of {state.depth}, no {FRAMES}); finish it with "
                         "--resume first, then edit it")
    return state, pinned, buffer, np.load(frames)
