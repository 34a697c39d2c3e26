"""Storyboards in; videos, PNG frames and contact sheets out.

Why here and not in the CLI: generation of a long video can run for a long time, so everything
that can be wrong about its inputs and outputs (a storyboard with no prompts, a word the built-in
tokenizer lacks, an output that already exists) is checked by these functions before any model
runs, with a message naming the file, the line or scene and the fix. Frames are streamed to disk
as they are decoded (:class:`VideoWriter`), so a 3376-frame video never sits whole in memory.

Storyboards (:func:`load_storyboard`) become one prompt per frame:

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
import fractions
import glob
import json
import os
from typing import Iterable, NamedTuple, Optional, Sequence

import numpy as np

from nuwa_xl_jax.models.tokenizers import UnknownWordError

TEXT_SUFFIXES = ("", ".txt", ".text", ".story")
JSON_SUFFIXES = (".json",)
YAML_SUFFIXES = (".yaml", ".yml")
SCENE_KEYS = ("prompt", "frames")


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
    """The per-frame prompts (a ``list[str]``) plus the scenes they came from (``.scenes``) and
    the file (``.path``), so later checks can point at the storyboard line at fault."""

    def __init__(self, prompts: Iterable[str], scenes: Sequence[Scene] = (), path: str = ""):
        super().__init__(prompts)
        self.scenes = list(scenes)
        self.path = path


# ----------------------------------------------------------------------------------------------
# Storyboards


def load_storyboard(path: str, frames: int) -> Storyboard:
    """Exactly ``frames`` per-frame prompts from a text, JSON or YAML storyboard (see module doc)."""
    path = os.fspath(path)
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise StoryboardError(f"frames must be a positive integer, got {frames!r}")
    frames = int(frames)
    if not os.path.exists(path):
        raise StoryboardError(f"storyboard {path!r} does not exist; give the path of a .txt file "
                              "with one prompt per line, or a .json / .yaml list of scenes")
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
    if suffix in JSON_SUFFIXES:
        raw = _parse_json(path, text)
    elif suffix in YAML_SUFFIXES:
        raw = _parse_yaml(path, text)
    else:
        raw = _parse_text(text)
    if not raw:
        raise StoryboardError(f"{path}: the storyboard has no prompts; write at least one prompt "
                              "(text: one per line; JSON/YAML: a list of {prompt, frames} scenes)")
    return _assign_frames(path, raw, frames)


def _parse_text(text: str) -> list[tuple[str, Optional[int], str]]:
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            out.append((prompt, None, f"line {number}"))
    return out


def _parse_json(path: str, text: str):
    try:
        data = json.loads(text) if text.strip() else None
    except json.JSONDecodeError as e:
        raise StoryboardError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}; "
                              'expected a list like [{"prompt": "fred jumps in the desert", '
                              '"frames": 16}, ...]') from e
    return _parse_scenes(path, data, lines=None)


def _parse_yaml(path: str, text: str):
    import yaml

    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise StoryboardError(f"{path}: invalid YAML{at}: {getattr(e, 'problem', None) or e}; "
                              "expected a list of scenes like '- {prompt: fred jumps in the desert, "
                              "frames: 16}'") from e
    # Line numbers of the scenes, for error messages (the composed node tree keeps them).
    lines = None
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if getattr(k, "value", None) == "scenes"), None)
    if isinstance(node, yaml.SequenceNode):
        lines = [item.start_mark.line + 1 for item in node.value]
    return _parse_scenes(path, data, lines)


def _parse_scenes(path: str, data, lines: Optional[list[int]]):
    """[(prompt, frames or None, where)] from the loaded JSON / YAML value, validating each scene."""
    if data is None:
        return []
    if isinstance(data, dict):
        if "scenes" not in data:
            raise StoryboardError(f"{path}: expected a list of scenes or a mapping with a 'scenes' "
                                  f"list, got a mapping with keys {sorted(map(str, data))}")
        extra = sorted(str(k) for k in data if k != "scenes")
        if extra:
            raise StoryboardError(f"{path}: unknown top-level keys {extra}; only 'scenes' is read")
        data = data["scenes"]
        if data is None:
            return []
    if not isinstance(data, list):
        raise StoryboardError(f"{path}: the scenes must be a list, got {type(data).__name__}; "
                              "write a list of {prompt, frames} scenes")
    out = []
    for i, scene in enumerate(data):
        where = f"scene {i + 1}" + (f" (line {lines[i]})" if lines and i < len(lines) else "")
        if isinstance(scene, str):
            scene = {"prompt": scene}
        if not isinstance(scene, dict):
            raise StoryboardError(f"{path}: {where} must be a mapping with 'prompt' (and optionally "
                                  f"'frames') or a prompt string, got {type(scene).__name__}")
        unknown = sorted(str(k) for k in scene if k not in SCENE_KEYS)
        if unknown:
            raise StoryboardError(f"{path}: {where} has unknown keys {unknown}; a scene has only "
                                  "'prompt' and 'frames'")
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
        out.append((prompt.strip(), count, where))
    return out


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
    scenes = getattr(prompts, "scenes", None) or _scenes_of(prompts)
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


def _scenes_of(prompts: Sequence[str]) -> list[Scene]:
    """Runs of equal prompts of a plain per-frame list, located by frame range."""
    scenes, start = [], 0
    for i in range(1, len(prompts) + 1):
        if i == len(prompts) or prompts[i] != prompts[start]:
            scenes.append(Scene(prompts[start], i - start, start, f"frames {start}-{i - 1}"))
            start = i
    return scenes


# ----------------------------------------------------------------------------------------------
# Videos


def to_uint8(frames) -> np.ndarray:
    """Pixels in [-1, 1] (the models' range) -> uint8 [0, 255], rounded and clipped."""
    x = np.asarray(frames, np.float32)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def video_kind(path: str) -> str:
    """'mp4', 'gif' or 'png' (a folder: the path ends in '/' or has no extension)."""
    path = os.fspath(path)
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        return "png"
    suffix = os.path.splitext(path)[1].lower()
    if suffix == "":
        return "png"
    if suffix in (".mp4", ".gif"):
        return suffix[1:]
    raise ValueError(f"unknown video format {suffix!r} for {path!r}; use .mp4, .gif, or a folder "
                     "path (ending in '/' or without an extension) for PNG frames")


def check_output(path: str, overwrite: bool = False) -> str:
    """Raises FileExistsError if writing ``path`` would replace earlier output; returns its kind.

    Called by the writers and meant for CLIs before generation starts, so a long run is not lost
    at its end.
    """
    kind = video_kind(path)
    fix = "pass overwrite=True (--overwrite) or choose another output path"
    if kind == "png":
        if os.path.isfile(path.rstrip("/" + os.sep) or path):
            raise FileExistsError(f"{path!r} is a file, not a folder for PNG frames; {fix}")
        if not overwrite and glob.glob(os.path.join(path, "frame_*.png")):
            raise FileExistsError(f"{path!r} already holds PNG frames; {fix}")
    elif os.path.exists(path) and (os.path.isdir(path) or not overwrite):
        what = "a folder" if os.path.isdir(path) else "a file"
        raise FileExistsError(f"{path!r} already exists ({what}); {fix}")
    return kind


class VideoWriter:
    """Streams uint8 frames ``[n, H, W, 3]`` (or one ``[H, W, 3]``) to .mp4, .gif or PNG frames.

    ``size`` is ``(height, width)``. MP4: H.264 (libx264, ``crf``) in yuv420p, or MPEG-4 Part 2
    where libx264 is missing; yuv420p needs even sizes, so an odd height or width is padded by
    repeating the last row / column (the file is then one pixel larger). GIF: Pillow, frames are
    kept (palettised, one byte per pixel) until close, so use it for previews. PNG folder:
    ``frame_000000.png``, ... lossless. If the ``with`` block raises, the frames written so far
    are still finalised into a playable file (a long run's partial video is worth keeping).
    An existing output is an error unless ``overwrite=True``.
    """

    def __init__(self, path: str, fps: float, size: tuple[int, int], overwrite: bool = False,
                 crf: int = 18):
        self.path = os.fspath(path)
        self.kind = check_output(self.path, overwrite)
        if not (isinstance(fps, (int, float, fractions.Fraction)) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise ValueError(f"size must be (height, width) with positive values, got {size!r}")
        self.fps = fractions.Fraction(fps).limit_denominator(1001)
        self.size = (int(size[0]), int(size[1]))
        self.overwrite = overwrite
        self.crf = crf
        self.frames_written = 0
        self._container = self._stream = None
        self._gif: list = []
        self._open = False

    def __enter__(self) -> "VideoWriter":
        check_output(self.path, self.overwrite)
        parent = os.path.dirname(self.path.rstrip("/" + os.sep))
        if parent:
            os.makedirs(parent, exist_ok=True)
        if self.kind == "png":
            os.makedirs(self.path, exist_ok=True)
            for old in glob.glob(os.path.join(self.path, "frame_*.png")):  # overwrite=True
                os.remove(old)
        elif self.kind == "mp4":
            self._open_mp4()
        self._open = True
        return self

    def _open_mp4(self) -> None:
        import av

        h, w = self.size
        self._container = av.open(self.path, mode="w")
        try:
            av.codec.Codec("libx264", "w")
            codec, options = "libx264", {"crf": str(self.crf), "preset": "medium"}
        except Exception:  # a build of ffmpeg without x264
            codec, options = "mpeg4", {"qscale": "2"}
        self._stream = self._container.add_stream(codec, rate=self.fps, options=options)
        self._stream.width, self._stream.height = w + w % 2, h + h % 2
        self._stream.pix_fmt = "yuv420p"

    def write(self, frames) -> None:
        """Appends uint8 frames ``[n, H, W, 3]`` or ``[H, W, 3]``."""
        if not self._open:
            raise RuntimeError("VideoWriter.write called outside its 'with' block")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        h, w = self.size
        if frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
            raise ValueError(f"{self.path}: frames must be [n, {h}, {w}, 3] (the writer's size), got "
                             f"shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"{self.path}: frames must be uint8, got {frames.dtype}; convert models' "
                             "[-1, 1] pixels with nuwa_xl_jax.io.to_uint8")
        for frame in frames:
            self._write_one(frame)
            self.frames_written += 1

    def _write_one(self, frame: np.ndarray) -> None:
        if self.kind == "mp4":
            import av

            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            self._container.mux(self._stream.encode(vf))
        elif self.kind == "gif":
            from PIL import Image

            self._gif.append(Image.fromarray(frame).quantize(colors=256, dither=Image.Dither.NONE))
        else:
            from PIL import Image

            Image.fromarray(frame).save(os.path.join(self.path, f"frame_{self.frames_written:06d}.png"))

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self.kind == "mp4":
            self._container.mux(self._stream.encode(None))
            self._container.close()
        elif self.kind == "gif" and self._gif:
            duration = max(10, int(round(1000 / float(self.fps))))
            self._gif[0].save(self.path, save_all=True, append_images=self._gif[1:], loop=0,
                              duration=duration, optimize=False, disposal=1)
            self._gif = []

    def __exit__(self, *exc) -> None:
        self.close()


def read_video(path: str) -> np.ndarray:
    """All frames of an .mp4, .gif or PNG folder as uint8 ``[n, H, W, 3]`` (for tests and evals)."""
    path = os.fspath(path)
    kind = video_kind(path)
    if kind == "png":
        from PIL import Image

        files = sorted(glob.glob(os.path.join(path, "frame_*.png")))
        if not files:
            raise FileNotFoundError(f"no frame_*.png files in {path!r}")
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video {path!r} does not exist")
    if kind == "gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    import av

    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ----------------------------------------------------------------------------------------------
# Contact sheets

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
            frames = np.stack([kept[i] for i in ix]) if len(ix) else np.zeros((0, 1, 1, 3), np.uint8)
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
                  thumb_height: int = 64, max_per_row: int = 16, overwrite: bool = False):
    """A PNG with one row per hierarchy level showing that level's keyframes; returns the PIL image.

    ``levels``: a sequence, level 0 first, of ``(indices, frames)``: the video frame indices the
    level generated and their uint8 frames ``[n, H, W, 3]`` (e.g. :attr:`KeyframeCollector.levels`).
    Rows with more than ``max_per_row`` frames show that many, evenly spaced. Each thumbnail is
    labelled with its frame index; with per-frame ``prompts`` also with its scene number, and a
    legend under the rows lists the scenes' frame ranges and prompts.
    """
    from PIL import Image, ImageDraw, ImageFont

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
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
    scenes = _scenes_of(list(prompts)) if prompts is not None else []
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
        draw.text((GAP, y + 2), f"level {k}", fill=(0, 0, 0), font=font)
        shown = f"{len(indices)} of {total}" if total > len(indices) else f"{total}"
        draw.text((GAP, y + 16), f"{shown} frames", fill=(80, 80, 80), font=font)
        for j, (i, frame) in enumerate(zip(indices, frames)):
            x = LABEL_WIDTH + j * (tw + GAP)
            img = Image.fromarray(frame)
            upscale = frame.shape[0] < th
            img = img.resize((tw, th), Image.Resampling.NEAREST if upscale else Image.Resampling.BOX)
            sheet.paste(img, (x, y))
            label = f"{i}" + (f" S{scene_of[i]}" if i < len(scene_of) else "")
            draw.text((x, y + th + 1), label, fill=(0, 0, 0), font=font)
    y = GAP + len(rows) * row_h
    for s, text in enumerate(legend):
        draw.text((GAP, y + 12 * s), text, fill=(0, 0, 0), font=font)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    sheet.save(path)
    return sheet
