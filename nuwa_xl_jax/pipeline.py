"""The object a user holds: a trained model family loaded once, called with prompts, returning a video.

    from nuwa_xl_jax.pipeline import NuwaXLPipeline

    pipe = NuwaXLPipeline.from_pretrained("runs/demo")          # a training workdir
    video = pipe("configs/storyboards/cartoon.txt", frames=64)  # or one prompt per frame
    video.frames.shape                                          # (64, H, W, 3) uint8
    video.save("demo.mp4")                                      # + demo_sheet.png

Each call runs diffusion over diffusion (``mode="dod"``: every segment of a level in one batched,
sharded call), the autoregressive baseline (``mode="ar"``) or ART•V frame by frame
(``mode="artv"``, the ``mtd_artv`` stage) on the weights placed on the devices
at load, and decodes the whole video into memory. For videos too long to hold decoded,
:meth:`NuwaXLPipeline.write` streams the frames to a file instead (the generate CLI's path).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional, Sequence, Union

import numpy as np

from nuwa_xl_jax import parallel
from nuwa_xl_jax.dod import engine
from nuwa_xl_jax.dod import generate as gen
from nuwa_xl_jax.dod.plan import num_frames
from nuwa_xl_jax.family import store
from nuwa_xl_jax.io import contact_sheets, storyboards, videos


@dataclasses.dataclass
class Video:
    """A generated video, all in memory.

    ``frames`` uint8 ``[N, H, W, 3]``; ``latents`` ``[N, h, w, c]`` as the MTD diffused them
    (scaled by the VAE's latent scale); ``keyframes`` one :class:`nuwa_xl_jax.io.LevelKeyframes`
    per level, level 0 first (the frame indices that level generated and their frames; for
    ``mode="ar"`` and ``mode="artv"`` one row of evenly spaced frames); ``agreement`` the synthetic world's storyboard
    probe scores when asked for (``score=True``), else None.
    """
    frames: np.ndarray
    latents: np.ndarray
    keyframes: list
    prompts: list
    mode: str
    sequential_calls: int
    seconds: float
    agreement: Optional[dict] = None

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str, sheet: Union[str, bool] = True, fps: int = 8,
             overwrite: bool = False) -> tuple[str, Optional[str]]:
        """Writes the video (.mp4, .gif, or a folder of PNG frames) and, unless ``sheet=False``,
        the contact sheet of each level's keyframes (default: ``path``'s name + ``_sheet.png``).
        Returns ``(video path, sheet path or None)``; existing files are kept unless
        ``overwrite=True``."""
        sheet_path = gen.sheet_path(path) if sheet is True else (sheet or None)
        videos.check_output(path, overwrite)  # both checked before either is written
        if sheet_path and not overwrite and os.path.exists(sheet_path):
            raise FileExistsError(f"{sheet_path!r} already exists; pass overwrite=True or choose "
                                  "another sheet path")
        h, w = self.frames.shape[1:3]
        with videos.VideoWriter(path, fps, (h, w), overwrite=overwrite) as writer:
            writer.write(self.frames)
        if sheet_path:
            contact_sheets.contact_sheet(self.keyframes, sheet_path, self.prompts, overwrite=overwrite)
        return path, sheet_path


class NuwaXLPipeline:
    """A trained model family with its weights on ``mesh``, ready to generate (see the module doc)."""

    def __init__(self, family: gen.Family, mesh=None, workdir: Optional[str] = None):
        self.family = family
        self.mesh = parallel.make_mesh() if mesh is None else mesh
        self.workdir = workdir

    @classmethod
    def from_pretrained(cls, path: str, *, mesh=None, load_ar: bool = False,
                        load_artv: bool = False, config=None) -> "NuwaXLPipeline":
        """Loads the family a training workdir holds (``python -m nuwa_xl_jax.train --workdir``):
        its config, VAE, text encoder and every level's MTD, placed once on ``mesh`` (default:
        all devices). The AR baseline's model is loaded now with ``load_ar=True``, else on the
        first ``mode="ar"`` call; ART•V's likewise (``load_artv``, ``mode="artv"``). ``config``:
        the family's config when the caller has already loaded it (``family.load_config(path)``)."""
        mesh = parallel.make_mesh() if mesh is None else mesh
        family = gen.load_family(path, need_ar=load_ar, mesh=mesh, need_artv=load_artv,
                                 config=config)
        return cls(family, mesh, path)

    @property
    def config(self):
        return self.family.config

    @property
    def trained_frames(self) -> int:
        """The length the family was trained for, (L-1)^depth + 1 frames: the default length."""
        return num_frames(self.config.data.frames_per_call, self.config.data.depth)

    def prompts_for(self, prompts: Union[str, Sequence[str]], frames: Optional[int] = None) -> list:
        """One prompt per frame: ``prompts`` as given (a list, one per frame), or a storyboard
        file's scenes stretched to ``frames`` (default: the trained length)."""
        if isinstance(prompts, str):
            return list(storyboards.load_storyboard(prompts, frames or self.trained_frames))
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings (one per frame) or a "
                             "storyboard file path")
        if frames is not None and frames != len(prompts):
            raise ValueError(f"prompts: {len(prompts)} prompts for frames={frames}; give one prompt "
                             "per frame, or a storyboard file path (its scenes are stretched to "
                             "frames)")
        return prompts

    def _settings(self, sampler, steps, guidance, eta) -> dict:
        """The sampler settings of a call: what is given, else the config's (as the CLI does)."""
        d = self.config.diffusion
        sampler = sampler or d.sampler
        return dict(sampler=sampler, steps=steps or d.sample_steps,
                    guidance_scale=d.guidance_scale if guidance is None else guidance,
                    eta=(d.ddim_eta if sampler == "ddim" else 0.0) if eta is None else eta)

    def _load_ar(self, mode: str) -> None:
        """The AR (``mode="ar"``) or ART•V (``mode="artv"``) weights, on their first use."""
        stage, field = {"ar": ("mtd_ar", "ar_params"), "artv": ("mtd_artv", "artv_params")}.get(
            mode, (None, None))
        if stage and getattr(self.family, field) is None and self.workdir \
                and store.has_export(self.workdir, stage):
            params = store.read_export(store.export_dir(self.workdir, stage))[0]
            setattr(self.family, field, engine.place_params(params, self.mesh))

    def __call__(self, prompts: Union[str, Sequence[str]], frames: Optional[int] = None, *,
                 mode: str = "dod", sampler: Optional[str] = None, steps: Optional[int] = None,
                 guidance: Optional[float] = None, eta: Optional[float] = None, seed: int = 0,
                 mesh=None, max_segments_per_call: engine.MaxSegments = "auto",
                 memory_fraction: float = engine.DEFAULT_MEMORY_FRACTION, extend: bool = False,
                 score: bool = False, progress: bool = True) -> Video:
        """A video of ``frames`` frames (default: one per prompt, or the trained length for a
        storyboard file). ``sampler`` ('ddpm' | 'ddim' | 'dpm++2m'), ``steps``, ``guidance``
        (classifier-free guidance scale) and ``eta`` default to the config's; the video is a
        function of ``seed``, not of the device count. ``mesh`` defaults to the one the weights
        were placed on. ``extend`` allows more frames than trained (extra levels reuse the
        deepest local model). ``max_segments_per_call``: segments per batched call, ``"auto"``
        (the largest that fits ``memory_fraction`` of one device's memory), an int, or None (no
        limit). ``score`` runs the synthetic world's storyboard probe."""
        prompts = self.prompts_for(prompts, frames)
        if mode == "dod":
            gen.plan_for(self.config, len(prompts), extend)  # a length it cannot run: before work
        self._load_ar(mode)
        t0 = time.perf_counter()
        s = gen.sample(self.family, prompts, mode=mode, seed=seed,
                       mesh=self.mesh if mesh is None else mesh,
                       max_segments_per_call=max_segments_per_call,
                       memory_fraction=memory_fraction, progress=progress,
                       extend=extend, **self._settings(sampler, steps, guidance, eta))
        frames_out = np.concatenate(list(gen.decode_frames(self.family, s.latents)))
        seconds = time.perf_counter() - t0
        keyframes = [contact_sheets.LevelKeyframes(np.asarray(ix, int), frames_out[np.asarray(ix, int)],
                                                   len(ix))
                     for ix in s.level_indices]
        scores = gen.agreement(self.config, frames_out, prompts, s.keyframes) if score else None
        return Video(frames_out, s.latents, keyframes, prompts, mode, s.sequential_calls, seconds,
                     scores)

    def write(self, out: str, prompts: Union[str, Sequence[str]], frames: Optional[int] = None, *,
              sheet: Union[str, bool] = True, fps: int = 8, overwrite: bool = False,
              mode: str = "dod", sampler: Optional[str] = None, steps: Optional[int] = None,
              guidance: Optional[float] = None, eta: Optional[float] = None, seed: int = 0,
              mesh=None, max_segments_per_call: engine.MaxSegments = "auto",
                 memory_fraction: float = engine.DEFAULT_MEMORY_FRACTION, extend: bool = False,
              score: bool = True, progress: bool = True) -> gen.Output:
        """Like calling the pipeline, but the frames stream to ``out`` (and the contact sheet,
        default ``out``'s name + ``_sheet.png``) as they are decoded, so no length is too long to
        hold; returns the paths, the timing and the probe scores (:class:`dod.generate.Output`)."""
        prompts = self.prompts_for(prompts, frames)
        self._load_ar(mode)
        return gen.generate(
            self.family, prompts, out, mode=mode, seed=seed,
            mesh=self.mesh if mesh is None else mesh, max_segments_per_call=max_segments_per_call,
            memory_fraction=memory_fraction,
            fps=fps, sheet=gen.sheet_path(out) if sheet is True else (sheet or None),
            overwrite=overwrite, progress=progress, score=score, extend=extend,
            **self._settings(sampler, steps, guidance, eta))
