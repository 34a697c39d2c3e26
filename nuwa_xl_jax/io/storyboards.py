"""Storyboards: a text, JSON or YAML file in, exactly one prompt per frame out.

``configs/storyboards/NAME`` also names a storyboard shipped with the package when no such file is
where the code runs (as config paths do: ``configuration/files.py``).

Why checked here, before any model runs: generation of a long video can take a long time, so
everything that can be wrong with a storyboard (no prompts, a malformed scene, a word the built-in
tokenizer lacks) is an error naming the file, the line or scene and the fix.

Formats (:func:`load_storyboard`):

- plain text (``.txt``, ``.text``, ``.story`` or no extension): one prompt per line; blank lines
  and lines starting with ``#`` are ignored; the scenes share the frames in equal spans, earlier
  scenes taking one extra frame each until the remainder is used up;
- JSON (``.json``) or YAML (``.yaml``, ``.yml``): a list of scenes ``{"prompt": str, "frames":
  int}`` (or a bare string, a scene without a frame count), or ``{"scenes": [...]}``. Frame counts
  are given for every scene or for none (equal spans). When given they are *relative lengths*:
  if they sum to the requested frame count they are used as written, otherwise they are rescaled
  proportionally (largest remainder, ties to the earlier scene, every scene keeps at least one
  frame), so one storyboard serves ``--frames=226`` and ``--frames=3376`` alike.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Optional, Sequence

import numpy as np
import yaml

from nuwa_xl_jax.configuration import ConfigError, files
from nuwa_xl_jax.io import keyframe_images
from nuwa_xl_jax.io.keyframe_images import KeyframeError, Pin
from nuwa_xl_jax.models.tokenizers import UnknownWordError

TEXT_SUFFIXES = ("", ".txt", ".text", ".story")
JSON_SUFFIXES = (".json",)
YAML_SUFFIXES = (".yaml", ".yml")
SCENE_KEYS = ("prompt", "frames", "image")
TOP_KEYS = ("scenes", "keyframes")


class StoryboardError(ValueError):
    """A storyboard that cannot be turned into per-frame prompts; the message says where and how
    to fix it."""


@dataclasses.dataclass(frozen=True)
class Scene:
    """One prompt held for ``frames`` consecutive frames from ``start``; ``where`` locates it in
    the source ("line 3", "scene 2 (line 5)") for error messages."""
    prompt: str
    frames: int
    start: int
    where: str


class Storyboard(list):
    """The per-frame prompts (a ``list[str]``) plus the scenes they came from (``.scenes``), the
    file (``.path``), so later checks can point at the storyboard line at fault, and the frames
    pinned by keyframe images (``.pins``, io/keyframe_images.py)."""

    def __init__(self, prompts: Iterable[str], scenes: Sequence[Scene] = (), path: str = "",
                 pins: Sequence[Pin] = ()):
        super().__init__(prompts)
        self.scenes = list(scenes)
        self.path = path
        self.pins = list(pins)


def load_storyboard(path: str, frames: int) -> Storyboard:
    """Exactly ``frames`` per-frame prompts from a text, JSON or YAML storyboard (see module
    doc)."""
    path = os.fspath(path)
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise StoryboardError(f"frames must be a positive integer, got {frames!r}")
    frames = int(frames)
    if not os.path.exists(path):
        try:  # configs/storyboards/NAME: the storyboards shipped with the package, from anywhere
            path = files.find(path)
        except ConfigError:
            raise StoryboardError(f"storyboard {path!r} does not exist; give the path of a .txt "
                                  "file with one prompt per line, or a .json / .yaml list of "
                                  "scenes") from None
    if os.path.isdir(path):
        raise StoryboardError(f"storyboard {path!r} is a folder; give a .txt, .json or .yaml file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in TEXT_SUFFIXES + JSON_SUFFIXES + YAML_SUFFIXES:
        raise StoryboardError(f"{path}: unknown storyboard format {suffix!r}; use .txt (one prompt "
                              "per line), .json or .yaml (a list of {prompt, frames} scenes)")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise StoryboardError(f"{path}: not UTF-8 text ({e}); save the storyboard as UTF-8") from e
    keyframes = []
    if suffix in JSON_SUFFIXES:
        raw, keyframes = _parse_json(path, text)
    elif suffix in YAML_SUFFIXES:
        raw, keyframes = _parse_yaml(path, text)
    else:
        raw = _parse_text(text)
    if not raw:
        raise StoryboardError(f"{path}: the storyboard has no prompts; write at least one prompt "
                              "(text: one per line; JSON/YAML: a list of {prompt, frames} scenes)")
    board = _assign_frames(path, [r[:3] for r in raw], frames)
    # Pins: a scene's image its first frame; the top-level keyframes their frames.
    board.pins = [Pin(s.start, r[3], f"{s.where} 'image'")
                  for s, r in zip(board.scenes, raw) if r[3] is not None] + keyframes
    try:
        keyframe_images.check_frames(path, board.pins, frames)
    except KeyframeError as e:
        raise StoryboardError(str(e)) from None
    return board


def _parse_text(text: str) -> list[tuple[str, Optional[int], str]]:
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            out.append((prompt, None, f"line {number}", None))
    return out


def _parse_json(path: str, text: str):
    try:
        data = json.loads(text) if text.strip() else None
    except json.JSONDecodeError as e:
        raise StoryboardError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}; "
            'expected a list like [{"prompt": "fred jumps in the desert", '
            '"frames": 16}, ...]'
        ) from e
    return _parse_scenes(path, data, lines=None)


def _parse_yaml(path: str, text: str):
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise StoryboardError(
            f"{path}: invalid YAML{at}: {getattr(e, 'problem', None) or e}; "
            "expected a list of scenes like '- {prompt: fred jumps in the desert, "
            "frames: 16}'"
        ) from e
    # Line numbers of the scenes, for error messages (the composed node tree keeps them).
    lines = None
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if getattr(k, "value", None) == "scenes"), None)
    if isinstance(node, yaml.SequenceNode):
        lines = [item.start_mark.line + 1 for item in node.value]
    return _parse_scenes(path, data, lines)


def _parse_scenes(path: str, data, lines: Optional[list[int]]):
    """([(prompt, frames or None, where, image or None)], keyframe pins) from the loaded JSON /
    YAML value, validating each scene and keyframe."""
    if data is None:
        return [], []
    keyframes = []
    if isinstance(data, dict):
        if "scenes" not in data:
            raise StoryboardError(f"{path}: expected a list of scenes or a mapping with a 'scenes' "
                                  f"list, got a mapping with keys {sorted(map(str, data))}")
        extra = sorted(str(k) for k in data if k not in TOP_KEYS)
        if extra:
            raise StoryboardError(f"{path}: unknown top-level keys {extra}; only 'scenes' and "
                                  "'keyframes' are read")
        keyframes = _parse_keyframes(path, data.get("keyframes"))
        data = data["scenes"]
        if data is None:
            return [], keyframes
    if not isinstance(data, list):
        raise StoryboardError(f"{path}: the scenes must be a list, got {type(data).__name__}; "
                              "write a list of {prompt, frames} scenes")
    out = []
    for i, scene in enumerate(data):
        where = f"scene {i + 1}" + (f" (line {lines[i]})" if lines and i < len(lines) else "")
        if isinstance(scene, str):
            scene = {"prompt": scene}
        if not isinstance(scene, dict):
            raise StoryboardError(
                f"{path}: {where} must be a mapping with 'prompt' (and optionally "
                f"'frames') or a prompt string, got {type(scene).__name__}"
            )
        unknown = sorted(str(k) for k in scene if k not in SCENE_KEYS)
        if unknown:
            raise StoryboardError(f"{path}: {where} has unknown keys {unknown}; a scene has only "
                                  "'prompt', 'frames' and 'image'")
        if "prompt" not in scene:
            raise StoryboardError(f"{path}: {where} has no 'prompt'; add prompt: <text>")
        prompt = scene["prompt"]
        if not isinstance(prompt, str):
            raise StoryboardError(f"{path}: {where}: 'prompt' must be a string, got "
                                  f"{type(prompt).__name__} {prompt!r}; quote it")
        if not prompt.strip():
            raise StoryboardError(f"{path}: {where}: 'prompt' is empty; write what the scene shows "
                                  "or delete the scene")
        count = scene.get("frames")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int):
                raise StoryboardError(f"{path}: {where}: 'frames' must be a positive integer, got "
                                      f"{count!r}")
            if count <= 0:
                raise StoryboardError(f"{path}: {where}: 'frames' is {count}; a scene needs at "
                                      "least one frame: give a positive count or delete the scene")
        image = None
        if "image" in scene:
            try:
                image = keyframe_images.resolve(path, scene["image"])
            except KeyframeError as e:
                raise StoryboardError(f"{path}: {where}: {e}") from None
        out.append((prompt.strip(), count, where, image))
    return out, keyframes


def _parse_keyframes(path: str, data) -> list[Pin]:
    """The top-level ``keyframes: [{frame: i, image: PATH}, ...]`` as pins."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise StoryboardError(f"{path}: 'keyframes' must be a list of {{frame, image}} mappings, "
                              f"got {type(data).__name__}")
    pins = []
    for i, item in enumerate(data):
        where = f"keyframe {i + 1}"
        if not isinstance(item, dict) or set(item) != {"frame", "image"}:
            raise StoryboardError(f"{path}: {where} must be a mapping with exactly 'frame' (a "
                                  f"frame index) and 'image' (a file path), got {item!r}")
        frame = item["frame"]
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise StoryboardError(f"{path}: {where}: 'frame' must be an integer frame index, got "
                                  f"{frame!r}")
        try:
            pins.append(Pin(frame, keyframe_images.resolve(path, item["image"]), where))
        except KeyframeError as e:
            raise StoryboardError(f"{path}: {where}: {e}") from None
    return pins


def _assign_frames(path: str, raw, frames: int) -> Storyboard:
    n = len(raw)
    if n > frames:
        raise StoryboardError(f"{path}: {n} scenes but only {frames} frames; every scene needs at "
                              f"least one frame: ask for at least {n} frames or merge scenes")
    given = [c is not None for _, c, _ in raw]
    if any(given) and not all(given):
        missing = raw[given.index(False)][2]
        raise StoryboardError(f"{path}: {missing} has no 'frames' while other scenes do; give "
                              "frames for every scene (relative lengths) or for none (equal spans)")
    if all(given):
        counts = _rescale([c for _, c, _ in raw], frames)
    else:
        base, extra = divmod(frames, n)
        counts = [base + (i < extra) for i in range(n)]
    scenes, prompts, start = [], [], 0
    for (prompt, _, where), count in zip(raw, counts):
        scenes.append(Scene(prompt, count, start, where))
        prompts += [prompt] * count
        start += count
    assert len(prompts) == frames
    return Storyboard(prompts, scenes, path)


def _rescale(counts: list[int], frames: int) -> list[int]:
    """Counts proportional to ``counts`` summing to ``frames`` (largest remainder), each >= 1."""
    total = sum(counts)
    if total == frames:
        return list(counts)
    exact = np.array(counts, np.float64) * frames / total
    out = np.floor(exact).astype(int)
    order = np.argsort(-(exact - out), kind="stable")
    out[order[: frames - out.sum()]] += 1
    while (out == 0).any():  # a tiny scene keeps one frame, taken from the longest
        out[np.argmax(out)] -= 1
        out[np.argmin(out)] += 1
    return out.tolist()


def check_vocabulary(prompts: Sequence[str], tokenizer) -> None:
    """Raises StoryboardError naming every scene (line) that uses words ``tokenizer`` lacks.

    Why: the built-in word tokenizer rejects unknown words, and finding that out after the model
    is loaded, or from a bare UnknownWordError, wastes the user's time.
    """
    scenes = getattr(prompts, "scenes", None) or scenes_of(prompts)
    path = getattr(prompts, "path", "") or "storyboard"
    bad = []
    for scene in scenes:
        try:
            tokenizer([scene.prompt])
        except UnknownWordError as e:
            if hasattr(tokenizer, "unknown_words"):
                words = ", ".join(tokenizer.unknown_words([scene.prompt]))
            else:
                words = str(e)
            bad.append(f"  {scene.where} ({scene.prompt!r}): {words}")
    if bad:
        known = ""
        vocab = getattr(tokenizer, "vocab", None)
        if isinstance(vocab, dict):
            known = " Known words: " + " ".join(w for w in vocab if not w.startswith("<")) + "."
        raise StoryboardError(f"{path}: words not in the built-in tokenizer's vocabulary:\n"
                              + "\n".join(bad) + "\nRephrase these prompts with known words, or "
                              "use a model with a CLIP tokenizer." + known)


def scenes_of(prompts: Sequence[str]) -> list[Scene]:
    """Runs of equal prompts of a plain per-frame list, located by frame range."""
    scenes, start = [], 0
    for i in range(1, len(prompts) + 1):
        if i == len(prompts) or prompts[i] != prompts[start]:
            scenes.append(Scene(prompts[start], i - start, start, f"frames {start}-{i - 1}"))
            start = i
    return scenes
