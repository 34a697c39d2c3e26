"""Videos: uint8 frames streamed to .mp4, .gif or a folder of PNGs, and read back.

Frames are written as they are decoded (:class:`VideoWriter`), so a 3376-frame video never sits
whole in memory; an output that already exists is refused (:func:`check_output`) before a long
generation starts rather than at its end.
"""
from __future__ import annotations

import fractions
import glob
import os
import shutil
import tempfile

import numpy as np

from nuwa_xl_jax import paths

# PyAV and PIL are imported in the functions that use them ("deferred" below): neither is on the
# accelerator machines benchmarks/device_check.py runs on, and this module is on its import path.


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
    if paths.is_url(path):  # in a bucket: the same checks through etils.epath
        target = paths.as_path(path.rstrip("/"))
        if kind == "png" and target.is_file():
            raise FileExistsError(f"{path!r} is a file, not a folder for PNG frames; {fix}")
        if kind == "png" and not overwrite and list(target.glob("frame_*.png")):
            raise FileExistsError(f"{path!r} already holds PNG frames; {fix}")
        if kind != "png" and target.exists() and (target.is_dir() or not overwrite):
            raise FileExistsError(f"{path!r} already exists; {fix}")
        return kind
    if kind == "png":
        if os.path.isfile(path.rstrip("/" + os.sep) or path):
            raise FileExistsError(f"{path!r} is a file, not a folder for PNG frames; {fix}")
        if not overwrite and glob.glob(os.path.join(path, "frame_*.png")):
            raise FileExistsError(f"{path!r} already holds PNG frames; {fix}")
    elif os.path.exists(path) and (os.path.isdir(path) or not overwrite):
        what = "a folder" if os.path.isdir(path) else "a file"
        raise FileExistsError(f"{path!r} already exists ({what}); {fix}")
    return kind


class Discard:
    """A VideoWriter's stand-in that writes nothing: the processes other than 0 of a multi-host
    run, which decode the same frames (SPMD) while process 0 writes them."""

    frames_written = 0

    def __enter__(self) -> "Discard":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def write(self, frames) -> None:
        del frames


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
        # PyAV and Pillow write local files: a bucket URL's video is written to a local temporary
        # folder and copied through etils.epath on close
        self._tmp = tempfile.mkdtemp(prefix="nuwa_video_") if paths.is_url(self.path) else None
        self._local = self.path if self._tmp is None else os.path.join(
            self._tmp, os.path.basename(self.path.rstrip("/")))
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
        parent = os.path.dirname(self._local.rstrip("/" + os.sep))
        if parent:
            os.makedirs(parent, exist_ok=True)
        if self.kind == "png":
            os.makedirs(self._local, exist_ok=True)
            for old in glob.glob(os.path.join(self._local, "frame_*.png")):  # overwrite=True
                os.remove(old)
        elif self.kind == "mp4":
            self._open_mp4()
        self._open = True
        return self

    def _open_mp4(self) -> None:
        import av  # deferred

        h, w = self.size
        self._container = av.open(self._local, mode="w")
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
            raise ValueError(
                f"{self.path}: frames must be [n, {h}, {w}, 3] (the writer's size), got "
                f"shape {frames.shape}"
            )
        if frames.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: frames must be uint8, got {frames.dtype}; convert models' "
                "[-1, 1] pixels with nuwa_xl_jax.io.videos.to_uint8"
            )
        for frame in frames:
            self._write_one(frame)
            self.frames_written += 1

    def _write_one(self, frame: np.ndarray) -> None:
        if self.kind == "mp4":
            import av  # deferred

            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            self._container.mux(self._stream.encode(vf))
        elif self.kind == "gif":
            from PIL import Image  # deferred

            self._gif.append(Image.fromarray(frame).quantize(colors=256, dither=Image.Dither.NONE))
        else:
            from PIL import Image  # deferred

            Image.fromarray(frame).save(
                os.path.join(self._local, f"frame_{self.frames_written:06d}.png"))

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self.kind == "mp4":
            self._container.mux(self._stream.encode(None))
            self._container.close()
        elif self.kind == "gif" and self._gif:
            duration = max(10, int(round(1000 / float(self.fps))))
            self._gif[0].save(self._local, save_all=True, append_images=self._gif[1:], loop=0,
                              duration=duration, optimize=False, disposal=1)
            self._gif = []
        if self._tmp is not None:
            self._upload()

    def _upload(self) -> None:
        """The local temporary video copied to its bucket URL, then removed."""
        target = paths.as_path(self.path.rstrip("/"))
        try:
            if self.kind == "png":
                target.mkdir(parents=True, exist_ok=True)
                for old in target.glob("frame_*.png"):  # overwrite=True
                    old.unlink()
                for name in sorted(os.listdir(self._local)):
                    with open(os.path.join(self._local, name), "rb") as f:
                        (target / name).write_bytes(f.read())
            elif os.path.exists(self._local):
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(self._local, "rb") as f:
                    target.write_bytes(f.read())
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.close()


def read_video(path: str) -> np.ndarray:
    """All frames of an .mp4, .gif or PNG folder as uint8 ``[n, H, W, 3]`` (for tests and evals)."""
    path = os.fspath(path)
    kind = video_kind(path)
    if kind == "png":
        from PIL import Image  # deferred

        files = sorted(glob.glob(os.path.join(path, "frame_*.png")))
        if not files:
            raise FileNotFoundError(f"no frame_*.png files in {path!r}")
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video {path!r} does not exist")
    if kind == "gif":
        from PIL import Image, ImageSequence  # deferred

        with Image.open(path) as im:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    import av  # deferred

    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
