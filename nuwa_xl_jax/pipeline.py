"""The object a user holds: a trained model family loaded once, called with prompts, returning a
video.

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

This is the one generation path: the generate command, the training command's last video,
``evaluate`` and the benchmarks all come here. Sampler settings are resolved from the config here
(``samplers.config_kwargs``), the plan is made once per video, and the synthetic world's
storyboard probe is an optional step of this edge (``score``), never of the generation core.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional, Sequence, Union

import jax
import numpy as np

from nuwa_xl_jax import parallel, paths
from nuwa_xl_jax.diffusion import samplers
from nuwa_xl_jax.dod import decode, generation_state, memory, pins, runner
from nuwa_xl_jax.dod import edit as editlib
from nuwa_xl_jax.dod.engine import ResumePoint
from nuwa_xl_jax.dod.level_models import place_params
from nuwa_xl_jax.dod.pinned_latents import pinned_latents
from nuwa_xl_jax.dod.plan import Plan, num_frames
from nuwa_xl_jax.dod.result import Sampled
from nuwa_xl_jax.family import store
from nuwa_xl_jax.io import contact_sheets, storyboards, videos
from nuwa_xl_jax.metrics import storyboard_probe
from nuwa_xl_jax.models import windows


def sheet_path(out: str) -> str:
    """The default contact sheet of a video: its name + ``_sheet.png``."""
    return os.path.splitext(out.rstrip("/"))[0] + "_sheet.png"


@dataclasses.dataclass
class Video:
    """A generated video: in memory (a call of the pipeline) or streamed to a file
    (:meth:`NuwaXLPipeline.write`).

    ``frames`` uint8 ``[N, H, W, 3]``, or None when the frames were streamed to ``path``;
    ``latents`` ``[N, h, w, c]`` as the MTD diffused them (scaled by the VAE's latent scale);
    ``keyframes`` one :class:`nuwa_xl_jax.io.LevelKeyframes` per level, level 0 first (the frame
    indices that level generated and their frames; for ``mode="ar"`` and ``mode="artv"`` one row
    of evenly spaced frames; at most 16 per level when streamed); ``agreement`` the synthetic
    world's storyboard probe scores when asked for (``score=True``), else None; ``path`` and
    ``contact_sheet`` where the video and its sheet were written, if they were; ``edit`` what an
    edit (:meth:`NuwaXLPipeline.edit`) changed and ran, else None.
    """
    frames: Optional[np.ndarray]
    latents: np.ndarray
    keyframes: list
    prompts: list
    mode: str
    sequential_calls: int
    seconds: float
    agreement: Optional[dict] = None
    path: Optional[str] = None
    contact_sheet: Optional[str] = None
    edit: Optional[dict] = None

    def __len__(self) -> int:
        return len(self.latents)

    def save(self, path: str, sheet: Union[str, bool] = True, fps: int = 8,
             overwrite: bool = False) -> tuple[str, Optional[str]]:
        """Writes the video (.mp4, .gif, or a folder of PNG frames) and, unless ``sheet=False``,
        the contact sheet of each level's keyframes (default: ``path``'s name + ``_sheet.png``).
        Returns ``(video path, sheet path or None)``; existing files are kept unless
        ``overwrite=True``."""
        if self.frames is None:
            raise ValueError(f"this video was streamed to {self.path}; read it from there")
        sheet = sheet_path(path) if sheet is True else (sheet or None)
        check_outputs(path, sheet, overwrite)  # both checked before either is written
        h, w = self.frames.shape[1:3]
        with videos.VideoWriter(path, fps, (h, w), overwrite=overwrite) as writer:
            writer.write(self.frames)
        if sheet:
            contact_sheets.contact_sheet(self.keyframes, sheet, self.prompts, overwrite=overwrite)
        return path, sheet

    def summary(self) -> dict:
        """What the generate command prints last, as one JSON line."""
        out = {"video": self.path, "contact_sheet": self.contact_sheet, "frames": len(self),
               "seconds": round(self.seconds, 1), "sequential_model_calls": self.sequential_calls}
        if self.agreement:
            out["storyboard_agreement"] = self.agreement
        if self.edit:
            out["edit"] = self.edit
        return out


def check_outputs(path: str, sheet: Optional[str], overwrite: bool) -> None:
    """A video path and its sheet, both checked before either is written."""
    videos.check_output(path, overwrite)
    if sheet and not overwrite and paths.as_path(sheet).exists():  # local or a bucket
        raise FileExistsError(f"{sheet!r} already exists; pass overwrite=True (--overwrite) or "
                              "choose another sheet path")


def _free_folder(stem: str) -> str:
    """``stem``, or ``stem2``, ``stem3``, ...: the first that does not exist."""
    path, n = stem, 1
    while os.path.exists(path):
        n += 1
        path = f"{stem}{n}"
    return path


def decode_windows_count(config, frames: int, changed) -> tuple[int, int]:
    """(decode windows an edit decodes again, windows of a full decode)."""
    calls = windows.window_calls(frames, *decode.config_windows(config))
    changed = np.asarray(changed, bool)
    return sum(bool(changed[lo:hi].any()) for lo, hi, _, _ in calls), len(calls)


def report(video: Video) -> dict:
    """Prints what a written video holds (paths, timing, the probe's scores) and its summary as
    the last line, JSON; returns the summary."""
    summary = video.summary()
    print(f"video: {video.path} ({len(video)} frames, {video.seconds:.1f} s, "
          f"{video.sequential_calls} sequential model calls)")
    if video.contact_sheet:
        print(f"contact sheet: {video.contact_sheet}")
    if video.edit:
        e = video.edit
        print(f"edit of {e['edited_from']} -> new state {e['state']}\n"
              f"  prompts or pins changed: frames {e['changed']}\n"
              f"  latents regenerated: frames {e['regenerated']}; keyframes "
              f"{e['keyframes_run']} of {e['keyframes_full']}; segments {e['segments_run']} of "
              f"{e['segments_full']} (a full run: {e['segments_full']})\n"
              f"  frames decoded again: {e['redecoded']} ({e['windows_run']} of "
              f"{e['windows_full']} decode windows); every other frame is the previous video's, "
              "byte for byte")
    if video.agreement:
        a = video.agreement
        print(f"storyboard agreement (synthetic-world probe): scene {a['scene']:.2f}, "
              f"characters {a['characters']:.2f}, both {a['both']:.2f}")
    print(json.dumps(summary))
    return summary


class NuwaXLPipeline:
    """A trained model family with its weights on ``mesh``, ready to generate (see the module
    doc)."""

    def __init__(self, family: runner.Family, mesh=None, workdir: Optional[str] = None):
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
        family = runner.load_family(path, need_ar=load_ar, mesh=mesh, need_artv=load_artv,
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
            # the Storyboard itself (a list): its scenes name errors, its pins are keyframe images
            return storyboards.load_storyboard(prompts, frames or self.trained_frames)
        # a Storyboard stays one (a list that carries its scenes and keyframe pins)
        prompts = prompts if isinstance(prompts, storyboards.Storyboard) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings (one per frame) or a "
                             "storyboard file path")
        if frames is not None and frames != len(prompts):
            raise ValueError(
                f"prompts: {len(prompts)} prompts for frames={frames}; give one prompt "
                "per frame, or a storyboard file path (its scenes are stretched to "
                "frames)"
            )
        return prompts

    def sampling(self, sampler: Optional[str] = None, steps: Optional[int] = None,
                 guidance: Optional[float] = None, eta: Optional[float] = None
                 ) -> samplers.Settings:
        """The sampler settings of a call: what is given, else the config's ``diffusion`` block."""
        return samplers.Settings(**samplers.config_kwargs(
            self.config.diffusion, sampler=sampler, steps=steps, guidance_scale=guidance, eta=eta))

    def _load_ar(self, mode: str) -> None:
        """The AR (``mode="ar"``) or ART•V (``mode="artv"``) weights, on their first use."""
        stage, field = {"ar": ("mtd_ar", "ar_params"), "artv": ("mtd_artv", "artv_params")}.get(
            mode, (None, None))
        if stage and getattr(self.family, field) is None and self.workdir \
                and store.has_export(self.workdir, stage):
            params = store.read_export(store.export_dir(self.workdir, stage))[0]
            setattr(self.family, field, place_params(params, self.mesh))

    def _plan(self, prompts: list, mode: str, extend: bool, plan: Optional[Plan]):
        """The DoD plan of a video, made once: a length it cannot run fails before any work."""
        if mode == "dod" and plan is None:
            plan = runner.plan_for(self.config, len(prompts), extend)
        return plan

    def _sample(self, prompts: list, mode: str, plan: Optional[Plan], extend: bool, mesh,
                sampler, steps, guidance, eta, state: Optional[str] = None,
                **settings) -> Sampled:
        self._load_ar(mode)
        # Keyframe images (a storyboard's pins) are read and encoded before any sampling.
        pinned = pinned_latents(self.family.models, self.config, prompts)
        sampling = self.sampling(sampler, steps, guidance, eta)
        if state is not None:  # each finished level saved there (dod/generation_state.py)
            if mode != "dod":
                raise ValueError(f"--state saves the DoD levels; --mode={mode} has none")
            settings.update(generation_state.start(
                state, self.family, prompts, settings.get("seed", 0), sampling, pinned,
                plan.depth, settings.get("max_segments_per_call", "auto")))
        return runner.sample(self.family, prompts, mode=mode, mesh=mesh, extend=extend, plan=plan,
                          sampling=sampling, pinned=pinned, **settings)

    def _decode(self, latents, mesh, memory_fraction: float):
        return runner.decode_frames(
            self.family, latents, mesh=mesh, memory_fraction=memory_fraction
        )

    @property
    def can_score(self) -> bool:
        """Whether the storyboard probe reads this family's videos (the synthetic world's)."""
        return self.config.data.dataset == "synthetic_cartoon"

    def _score(self, frames: np.ndarray, prompts: list, keyframes) -> Optional[dict]:
        """The synthetic world's storyboard probe, the optional last step (None elsewhere)."""
        if not self.can_score:
            return None
        return storyboard_probe.agreement(frames, prompts, keyframes=keyframes)

    def __call__(self, prompts: Union[str, Sequence[str]], frames: Optional[int] = None, *,
                 mode: str = "dod", sampler: Optional[str] = None, steps: Optional[int] = None,
                 guidance: Optional[float] = None, eta: Optional[float] = None, seed: int = 0,
                 mesh=None, max_segments_per_call: memory.MaxSegments = "auto",
                 memory_fraction: float = memory.DEFAULT_MEMORY_FRACTION, extend: bool = False,
                 score: bool = False, progress: bool = True, plan: Optional[Plan] = None,
                 state: Optional[str] = None) -> Video:
        """A video of ``frames`` frames (default: one per prompt, or the trained length for a
        storyboard file). ``sampler`` ('ddpm' | 'ddim' | 'dpm++2m'), ``steps``, ``guidance``
        (classifier-free guidance scale) and ``eta`` default to the config's; the video is a
        function of ``seed``, not of the device count. ``mesh`` defaults to the one the weights
        were placed on; sampling and decoding run on it. ``extend`` allows more frames than
        trained (extra levels reuse the deepest local model). ``max_segments_per_call``:
        segments per batched call, ``"auto"`` (the largest that fits ``memory_fraction`` of one
        device's memory; decoding is sized to the same share), an int, or None (no limit).
        ``score`` runs the synthetic world's storyboard probe. ``plan``: the DoD plan when the
        caller has already made it (``dod.runner.plan_for``), so it is made once per video.
        ``state``: a new (or empty) folder where each finished level is saved, so
        :meth:`resume` can continue a stopped run and :meth:`preview` can be filled in."""
        prompts = self.prompts_for(prompts, frames)
        plan = self._plan(prompts, mode, extend, plan)
        mesh = self.mesh if mesh is None else mesh
        t0 = time.perf_counter()
        s = self._sample(prompts, mode, plan, extend, mesh, sampler, steps, guidance, eta,
                         seed=seed, max_segments_per_call=max_segments_per_call,
                         memory_fraction=memory_fraction, progress=progress, state=state)
        video = self._video(s, prompts, mode, mesh, memory_fraction, score, t0)
        if state is not None:  # the whole video: what an edit keeps of it
            generation_state.save_frames(state, video.frames)
        return video

    def _video(self, s: Sampled, prompts, mode: str, mesh, memory_fraction: float, score: bool,
               t0: float) -> Video:
        """The decoded :class:`Video` of sampled latents."""
        frames_out = np.concatenate(list(self._decode(s.latents, mesh, memory_fraction)))
        seconds = time.perf_counter() - t0
        keyframes = [contact_sheets.LevelKeyframes(ix, frames_out[ix], len(ix))
                     for ix in (np.asarray(ix, int) for ix in s.level_indices)]
        scores = self._score(frames_out, prompts, s.keyframes) if score else None
        return Video(frames_out, s.latents, keyframes, prompts, mode, s.sequential_calls, seconds,
                     scores)

    def preview(self, prompts: Union[str, Sequence[str]], frames: Optional[int] = None, *,
                state: Optional[str] = None, seed: int = 0, sampler: Optional[str] = None,
                steps: Optional[int] = None, guidance: Optional[float] = None,
                eta: Optional[float] = None, mesh=None, extend: bool = False,
                progress: bool = True) -> Video:
        """The global level only: the keyframes of the video ``self(prompts, frames, seed=...)``
        would be, as a short :class:`Video` of those frames (``keyframes[0].indices`` says which),
        in seconds rather than the whole run. With ``state``, :meth:`resume` fills them in, and
        the result is the full video bit for bit."""
        prompts = self.prompts_for(prompts, frames)
        plan = self._plan(prompts, "dod", extend, None)
        mesh = self.mesh if mesh is None else mesh
        t0 = time.perf_counter()
        s = self._sample(prompts, "dod", plan, extend, mesh, sampler, steps, guidance, eta,
                         seed=seed, progress=progress, state=state, until_level=0)
        ix = np.asarray(s.level_indices[0], int)
        latents = np.asarray(s.latents)[ix]
        # the keyframes decoded as one short clip of their own (they are a video at the global
        # stride), not among the zeros of the frames not yet generated
        frames_out = np.concatenate(list(self._decode(latents, mesh,
                                                      memory.DEFAULT_MEMORY_FRACTION)))
        keyframes = [contact_sheets.LevelKeyframes(ix, frames_out, len(ix))]
        return Video(frames_out, latents, keyframes, [prompts[i] for i in ix], "dod",
                     s.sequential_calls, time.perf_counter() - t0)

    def resume(self, state: str, *, mesh=None, progress: bool = True, score: bool = False,
               memory_fraction: float = memory.DEFAULT_MEMORY_FRACTION) -> Video:
        """Continues the generation saved in ``state`` (``__call__``/``preview`` with ``state=``)
        from its last finished level, with its prompts, pins, seed and sampler settings, and
        returns the whole video: byte-identical to the run never having stopped. Refused for
        another family's state."""
        st, pinned, kwargs = generation_state.resume(state, self.family)
        sampling = samplers.Settings(**st.sampling)
        prompts = st.prompts
        plan = self._plan(prompts, "dod", False, None) if st.frames <= self.trained_frames \
            else self._plan(prompts, "dod", True, None)
        mesh = self.mesh if mesh is None else mesh
        t0 = time.perf_counter()
        s = runner.sample(self.family, prompts, mode="dod", mesh=mesh, plan=plan,
                          sampling=sampling, pinned=pinned, seed=st.seed, progress=progress,
                          memory_fraction=memory_fraction,
                          max_segments_per_call=st.max_segments_per_call, **kwargs)
        video = self._video(s, prompts, "dod", mesh, memory_fraction, score, t0)
        generation_state.save_frames(state, video.frames)
        return video

    def edit(self, state: str, prompts: Union[str, Sequence[str]], *,
             new_state: Optional[str] = None, mesh=None, progress: bool = True,
             score: bool = False, memory_fraction: float = memory.DEFAULT_MEMORY_FRACTION
             ) -> Video:
        """The finished video saved in ``state`` with a changed storyboard ``prompts`` (a file,
        stretched to the video's length, or one prompt per frame; its keyframe images pin
        frames): only the keyframes whose prompt or pin changed are regenerated (every other
        keyframe given), then only the segments whose ends or prompts changed, and only the
        decode windows whose latents changed are decoded again (dod/edit.py). Every other frame
        is the old video's, byte for byte. Seed and sampler settings are the state's.

        ``new_state``: a new (or empty) folder for the edited video's state, so edits chain
        (default: ``state`` + ``_edit``, ``_edit2``, ... the first that does not exist); the old
        state is never changed. Returns the :class:`Video`, with ``edit`` saying which frames
        changed and what ran against a full run."""
        st, old_pins, buffer, old_frames = generation_state.load_finished(state, self.family)
        new_state = new_state or _free_folder(state.rstrip("/") + "_edit")
        if not isinstance(prompts, str) and len(prompts) != st.frames:
            raise ValueError(f"prompts: {len(prompts)} prompts for a video of {st.frames} "
                             "frames; an edit keeps the video's length")
        prompts = self.prompts_for(prompts, st.frames)
        mesh = self.mesh if mesh is None else mesh
        t0 = time.perf_counter()
        plan = self._plan(prompts, "dod", st.frames > self.trained_frames, None)
        pinned = pinned_latents(self.family.models, self.config, prompts)
        if pinned is not None:
            plan = pins.pin_plan(plan, pinned[0])
        ed = editlib.edit_plan(plan, *editlib.changed_frames(st.prompts, prompts, old_pins,
                                                             pinned))
        new = generation_state.State(
            list(prompts), st.frames, st.seed, st.sampling, st.fingerprint,
            [] if pinned is None else np.asarray(pinned[0]).tolist(), depth=plan.depth,
            edited_from=os.path.abspath(state), max_segments_per_call=st.max_segments_per_call)
        generation_state.check_new(new_state)  # before any work; written once the edit is whole
        final = [np.asarray(buffer)]  # the old buffer, if no level runs

        def keep(lv, b):  # the buffer after each level that ran; the last is the video's
            final[0] = np.asarray(b, np.float32)

        s = runner.sample(self.family, prompts, mode="dod", mesh=mesh, plan=ed.plan,
                          sampling=samplers.Settings(**st.sampling), pinned=pinned, seed=st.seed,
                          progress=progress, memory_fraction=memory_fraction,
                          max_segments_per_call=st.max_segments_per_call,
                          resume_from=ResumePoint(0, np.asarray(buffer)), on_level=keep)
        frames_out, redecoded = runner.redecode_frames(
            self.family, s.latents, old_frames, ed.regenerated[:st.frames], mesh=mesh,
            memory_fraction=memory_fraction)
        generation_state.prepare(new_state, new, pinned)
        generation_state.save_level(new_state, new, plan.depth - 1, final[0])
        generation_state.save_frames(new_state, frames_out)
        seconds = time.perf_counter() - t0
        indices = [np.unique(lv.frames[lv.frames < st.frames]) for lv in plan.levels]
        keyframes = [contact_sheets.LevelKeyframes(ix, frames_out[ix], len(ix)) for ix in indices]
        windows = decode_windows_count(self.config, st.frames, ed.regenerated[:st.frames])
        report = {
            "edited_from": state, "state": new_state,
            "changed": editlib.describe(editlib.ranges(ed.changed)),
            "regenerated": editlib.describe(editlib.ranges(ed.regenerated[:st.frames])),
            "redecoded": editlib.describe(editlib.ranges(redecoded)),
            "frames_changed": int(redecoded.sum()),
            "keyframes_run": int((~ed.plan.levels[0].given).sum()),
            "keyframes_full": int(plan.levels[0].frames.shape[1]),
            "segments_run": int(sum(ed.segments_run)),
            "segments_full": int(sum(ed.segments_full)),
            "segments_per_level": [f"{r}/{f}" for r, f in zip(ed.segments_run,
                                                              ed.segments_full)],
            "windows_run": windows[0], "windows_full": windows[1]}
        scores = self._score(frames_out, prompts, runner.keyframe_mask(plan)) if score else None
        return Video(frames_out, s.latents, keyframes, list(prompts), "dod", s.sequential_calls,
                     seconds, scores, edit=report)

    def write(self, out: str, prompts: Union[str, Sequence[str]], frames: Optional[int] = None, *,
              sheet: Union[str, bool] = True, fps: int = 8, overwrite: bool = False,
              mode: str = "dod", sampler: Optional[str] = None, steps: Optional[int] = None,
              guidance: Optional[float] = None, eta: Optional[float] = None, seed: int = 0,
              mesh=None, max_segments_per_call: memory.MaxSegments = "auto",
              memory_fraction: float = memory.DEFAULT_MEMORY_FRACTION, extend: bool = False,
              score: bool = True, progress: bool = True, plan: Optional[Plan] = None,
              state: Optional[str] = None) -> Video:
        """Like calling the pipeline, but the frames stream to ``out`` (and the contact sheet,
        default ``out``'s name + ``_sheet.png``) as they are decoded, so no length is too long to
        hold; returns the :class:`Video` with ``frames=None``, its paths, timing and probe
        scores (on the synthetic world, unless ``score=False``)."""
        prompts = self.prompts_for(prompts, frames)
        plan = self._plan(prompts, mode, extend, plan)
        sheet = sheet_path(out) if sheet is True else (sheet or None)
        check_outputs(out, sheet, overwrite)  # before any model work
        # SPMD: with several processes every one samples and decodes (the programs run over the
        # global mesh), process 0 alone writes; all have checked the paths before it writes.
        writes = jax.process_index() == 0
        parallel.sync_processes("pipeline/checked_outputs")
        t0 = time.perf_counter()
        mesh = self.mesh if mesh is None else mesh
        s = self._sample(prompts, mode, plan, extend, mesh, sampler, steps, guidance, eta,
                         seed=seed, max_segments_per_call=max_segments_per_call,
                         memory_fraction=memory_fraction, progress=progress, state=state)
        h, w = tuple(self.config.data.resolution)
        collector = contact_sheets.KeyframeCollector(s.level_indices)
        kept = [] if score and self.can_score else None  # the probe reads it all at the end
        # the whole video kept in the state, for an edit (a memory map: never held whole)
        saved = generation_state.FramesFile(state, (len(prompts), h, w, 3)) \
            if state is not None and writes else None
        with (videos.VideoWriter(out, fps, (h, w), overwrite=overwrite) if writes
              else videos.Discard()) as writer:
            for chunk in self._decode(s.latents, mesh, memory_fraction):
                writer.write(chunk)
                collector.add(chunk)
                if kept is not None:
                    kept.append(chunk)
                if saved is not None:
                    saved.add(chunk)
        if saved is not None:
            saved.close()
        seconds = time.perf_counter() - t0
        if sheet and writes:
            contact_sheets.contact_sheet(collector.levels, sheet, prompts, overwrite=overwrite)
        scores = self._score(np.concatenate(kept), prompts, s.keyframes) if kept else None
        return Video(None, s.latents, collector.levels, prompts, mode, s.sequential_calls,
                     seconds, scores, out, sheet)
