"""A long video from a trained model family: storyboard in, mp4 + contact sheet out.

``load_family`` reads what ``python -m nuwa_xl_jax.train`` left in a workdir (through the family
layer, ``nuwa_xl_jax/family/``) and places every weight on the devices once; ``sample`` runs
diffusion over diffusion (or the autoregressive baseline) to latents; ``decode_frames`` decodes
them in bounded windows; ``generate`` streams those frames to the writer, so the whole video never
sits decoded in memory. ``nuwa_xl_jax.pipeline.NuwaXLPipeline`` is the object users hold over these.

The plan is always the one the family was trained for: depth ``data.depth``, so every level runs
its model at the stride it was trained at, cut at the requested N (segments that write no
frame < N are never computed). A 16-frame video of a depth-2, L=16 family still draws its
keyframes at stride 15 and fills them in. N beyond the trained (L-1)^depth + 1 frames is an error unless ``extend=True``
(``--extend``), which deepens the plan by reusing the deepest local model [ours: outside the
training distribution; the paper trains one depth].
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Iterator, Optional

import numpy as np

from nuwa_xl_jax import parallel
from nuwa_xl_jax.configuration import Config
from nuwa_xl_jax.dod import artv as artv_gen
from nuwa_xl_jax.dod import baselines, decode, engine
from nuwa_xl_jax.dod.plan import Plan, depth_for, make_plan, num_frames
from nuwa_xl_jax.eval import storyboard_probe
from nuwa_xl_jax.family import store
from nuwa_xl_jax.family.artv import ARTVModels
from nuwa_xl_jax.family.runtime import MTDModels

MODES = ("dod", "ar", "artv")
from nuwa_xl_jax.family.store import load_config
from nuwa_xl_jax.io import contact_sheets, storyboards, videos


@dataclasses.dataclass
class Family:
    config: Config
    models: MTDModels
    global_params: Any
    local_params: list  # one per trained local depth (or [shared])
    ar_params: Any = None
    artv_params: Any = None  # the mtd_artv stage's weights (``mode="artv"``)
    artv_runtime: Any = None  # its ARTVModels, built once (its jitted programs are cached on it)


def load_family(workdir: str, need_ar: bool = False, mesh=None, need_artv: bool = False,
                config=None) -> Family:
    """The family's models with every weight (MTDs, text encoder, VAE decoder) placed on ``mesh``
    (default: all devices) once here: generation calls then copy no weights. ``config``: the
    workdir's already loaded (validated) config, so a caller that read it first does not read and
    validate it again."""
    config = load_config(workdir) if config is None else config
    mesh = parallel.make_mesh() if mesh is None else mesh
    place = lambda params: engine.place_params(params, mesh)
    models = MTDModels(config, workdir)
    # The decoder runs in the family's compute dtype, its weights cast and placed once.
    models.vae, models.vae_params = decode.compute_decoder(models.vae, place(models.vae_params),
                                                           config.model.mtd.dtype)
    read = lambda stage: place(store.read_export(store.export_dir(workdir, stage))[0])
    global_params = read("mtd_global")
    if config.local_models == "shared":
        local = [read("mtd_local")]
    else:
        local = [read(f"mtd_local{d}") for d in range(1, config.data.depth)]
    ar = read("mtd_ar") if need_ar else None
    artv = read("mtd_artv") if need_artv else None
    return Family(config, models, global_params, local, ar, artv)


@dataclasses.dataclass
class Output:
    video: str
    contact_sheet: Optional[str]
    frames: int
    seconds: float
    sequential_calls: int
    agreement: Optional[dict] = None


def plan_for(config, frames: int, extend: bool = False) -> Plan:
    """The plan of the family's trained depth, cut at ``frames``; deeper only with ``extend``.

    Why the trained depth: each model learned one stride ((L-1)^(depth-1-k) at level k). Planning
    from the requested length instead (smallest depth covering N) would run the global model at
    stride 1 for a 16-frame video of a depth-2 family, and a deeper plan would feed models, or a
    shared model's level embedding, levels they never saw.
    """
    L, depth = config.data.frames_per_call, config.data.depth
    trained = num_frames(L, depth)
    if frames > trained:
        if not extend:
            raise ValueError(
                f"{frames} frames requested but this family was trained for {trained} "
                f"(data.frames_per_call={L}, data.depth={depth}: (L-1)^depth + 1 frames); ask for "
                f"at most --frames={trained}, train a deeper family (data.depth="
                f"{depth_for(L, frames)}), or pass --extend (extend=True) to add levels that reuse "
                "the deepest local model, outside the training distribution")
        if depth < 2:
            raise ValueError(f"--extend reuses the deepest local model, but data.depth={depth} "
                             "trained only the global model; train with data.depth >= 2")
        depth = depth_for(L, frames)
    return make_plan(L, depth=depth, frames=frames)


def level_models_for(config, denoise, global_params, local_params, depth: int):
    """One :class:`engine.LevelModel` per level of a plan of ``depth`` for a family trained at
    ``config.data.depth``. Levels past the trained depth (``extend``) reuse the deepest local
    model; a shared local model is then passed its deepest trained level (depth - 1), never a
    level past its level embedding's ``model.mtd.num_levels`` rows."""
    trained = config.data.depth
    if depth > trained and trained < 2:
        raise ValueError(f"a plan of depth {depth} needs a local model, but data.depth={trained} "
                         "trained only the global model")
    if config.local_models == "shared":
        deepest = trained - 1  # the shared model trained on levels 1..depth-1
        num_levels = config.model.mtd.num_levels
        if deepest >= num_levels:
            raise ValueError(f"model.mtd.num_levels={num_levels} has no row for level {deepest} "
                             f"of data.depth={trained}; set model.mtd.num_levels to data.depth")
        models = engine.level_models(denoise, global_params, local_params[0], depth, "shared")
        return tuple(m if k <= deepest else dataclasses.replace(m, level=deepest)
                     for k, m in enumerate(models))
    local = list(local_params)[:max(trained - 1, 0)]
    while len(local) < depth - 1:  # extended past the trained depth: reuse the deepest local model
        local.append(local[-1])
    return engine.level_models(denoise, global_params, local, depth)


def keyframe_mask(plan: Plan) -> np.ndarray:
    """[N] bool: frames written by a level above the last one (the probe scores them apart)."""
    mask = np.zeros(plan.frames, bool)
    for lv in plan.levels[:-1]:
        mask[lv.frames[lv.writes]] = True
    return mask


@dataclasses.dataclass
class Sampled:
    """The latents of a video, before decoding, and what its contact sheet and probe need."""
    latents: np.ndarray  # [N, h, w, c], scaled as the MTD diffuses them
    sequential_calls: int
    level_indices: list  # per level (level 0 first), the frame indices it generated, < N
    keyframes: np.ndarray  # [N] bool: frames written by a level above the last one


def sample(family: Family, prompts, *, mode: str = "dod", sampler: str = "ddim",
           steps: Optional[int] = None, guidance_scale: float = 1.0, eta: float = 0.0,
           seed: int = 0, mesh=None, max_segments_per_call: engine.MaxSegments = "auto",
           memory_fraction: float = engine.DEFAULT_MEMORY_FRACTION,
           progress: bool = True, extend: bool = False) -> Sampled:
    """The latents of ``len(prompts)`` frames guided by one prompt per frame: DoD on the plan of
    the trained depth (:func:`plan_for`; more frames need ``extend=True``), the AR baseline
    (``mode="ar"``) or ART•V frame by frame (``mode="artv"``, dod/artv.py)."""
    N = len(prompts)
    L = family.config.data.frames_per_call
    if mode == "dod":
        plan = plan_for(family.config, N, extend)
    models = family.models
    storyboards.check_vocabulary(prompts, models.tokenizer)
    ids = np.asarray(models.tokenizer(list(prompts)))
    if mode == "dod":
        # models (an engine.Denoiser): prompts and conditions are encoded once per call.
        level_models = level_models_for(family.config, models, family.global_params,
                                        family.local_params, plan.depth)
        result = engine.run(plan, level_models, ids, models.null_ids,
                            models.schedule, models.latent_shape, sampler=sampler, steps=steps,
                            guidance_scale=guidance_scale, eta=eta, seed=seed, mesh=mesh,
                            max_segments_per_call=max_segments_per_call,
                            memory_fraction=memory_fraction, progress=progress)
        level_indices = [np.unique(lv.frames[lv.frames < N]) for lv in plan.levels]
        keyframes = keyframe_mask(plan)
    elif mode == "ar":
        if family.ar_params is None:
            raise FileNotFoundError("--mode=ar needs the mtd_ar stage: train it with --stages=mtd_ar")
        # The first call has nothing given (first=None), which the mtd_ar stage trains for
        # (data/sampling.ar_prefix_length draws prefix 0 too); later calls get ar_prefix frames.
        result = baselines.autoregressive(
            engine.LevelModel(models, family.ar_params), ids, models.null_ids,
            models.schedule, models.latent_shape, L=L, prefix=family.config.data.ar_prefix,
            sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta, seed=seed,
            mesh=mesh, progress=progress)
        level_indices = [np.arange(0, N, max(1, N // 16))]
        keyframes = np.zeros(N, bool)  # one level: no frame is a keyframe of a level above
    elif mode == "artv":
        if family.artv_params is None:
            raise FileNotFoundError("--mode=artv needs the mtd_artv stage: train it with "
                                    "--stages=mtd_artv")
        if family.artv_runtime is None:
            family.artv_runtime = ARTVModels(models)
        result = artv_gen.generate(
            engine.LevelModel(family.artv_runtime, family.artv_params), ids, models.null_ids,
            sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta, seed=seed,
            progress=progress)
        level_indices = [np.arange(0, N, max(1, N // 16))]
        keyframes = np.zeros(N, bool)
    else:
        raise ValueError(f"--mode={mode!r}; use one of {', '.join(MODES)}")
    return Sampled(np.asarray(result.latents), result.sequential_calls, level_indices, keyframes)


def decode_frames(family: Family, latents, memory_fraction: float = engine.DEFAULT_MEMORY_FRACTION,
                  mesh=None) -> Iterator[np.ndarray]:
    """uint8 frames ``[n, H, W, 3]`` of ``latents`` in order, decoded in bounded windows with
    temporal context (no seams), the VAE's training clip length and context, as the latent cache
    encoded its targets. As many windows per device call as fit ``memory_fraction`` of the
    device's memory: a long video never sits decoded in device memory all at once."""
    latents = np.asarray(latents)
    window, context = decode.config_windows(family.config)
    mesh = parallel.make_mesh() if mesh is None else mesh
    decode_fn, per_call = decode.sized_decode_fn(
        family.models.vae, family.models.vae_params, latents.shape[1:], latents.shape[0], window,
        context, engine.memory_budget(mesh, memory_fraction))
    return decode.decode_windows(decode_fn, latents, window, context, per_call)


def agreement(config, frames: np.ndarray, prompts, keyframes) -> Optional[dict]:
    """The storyboard probe's scores of ``frames`` (synthetic world only; None otherwise)."""
    if config.data.dataset != "synthetic_cartoon":
        return None
    return storyboard_probe.agreement(frames, prompts, keyframes=keyframes)


def generate(family: Family, prompts, out: str, *, mode: str = "dod", sampler: str = "ddim",
             steps: Optional[int] = None, guidance_scale: float = 1.0, eta: float = 0.0,
             seed: int = 0, mesh=None, max_segments_per_call: engine.MaxSegments = "auto",
           memory_fraction: float = engine.DEFAULT_MEMORY_FRACTION,
             fps: int = 8, sheet: Optional[str] = None, overwrite: bool = False,
             progress: bool = True, score: bool = True, extend: bool = False) -> Output:
    """Generates ``len(prompts)`` frames guided by one prompt per frame and streams them to
    ``out`` (and the keyframes to the contact sheet ``sheet``) as they are decoded.

    DoD runs the plan of the trained depth (:func:`plan_for`); more frames than the family was
    trained for need ``extend=True``. AR starts with nothing given, as its training includes.
    """
    N = len(prompts)
    if mode == "dod":
        plan_for(family.config, N, extend)  # before any output or model work
    videos.check_output(out, overwrite)
    if sheet and os.path.exists(sheet) and not overwrite:
        raise FileExistsError(f"{sheet} exists; pass --overwrite or choose another --sheet")
    t0 = time.perf_counter()
    s = sample(family, prompts, mode=mode, sampler=sampler, steps=steps,
               guidance_scale=guidance_scale, eta=eta, seed=seed, mesh=mesh,
               max_segments_per_call=max_segments_per_call, memory_fraction=memory_fraction,
               progress=progress, extend=extend)
    h, w = tuple(family.config.data.resolution)
    collector = contact_sheets.KeyframeCollector(s.level_indices)
    frames_for_score = [] if score and family.config.data.dataset == "synthetic_cartoon" else None
    with videos.VideoWriter(out, fps, (h, w), overwrite=overwrite) as writer:
        for chunk in decode_frames(family, s.latents):
            writer.write(chunk)
            collector.add(chunk)
            if frames_for_score is not None:
                frames_for_score.append(chunk)
    seconds = time.perf_counter() - t0
    if sheet:
        contact_sheets.contact_sheet(collector.levels, sheet, prompts, overwrite=overwrite)
    scores = None
    if frames_for_score is not None:
        scores = agreement(family.config, np.concatenate(frames_for_score), prompts, s.keyframes)
    return Output(out, sheet, N, seconds, s.sequential_calls, scores)


def sheet_path(out: str) -> str:
    base = out.rstrip("/")
    return os.path.splitext(base)[0] + "_sheet.png"


def report(out) -> dict:
    summary = {"video": out.video, "contact_sheet": out.contact_sheet, "frames": out.frames,
               "seconds": round(out.seconds, 1), "sequential_model_calls": out.sequential_calls}
    if out.agreement:
        summary["storyboard_agreement"] = out.agreement
    print(f"video: {out.video} ({out.frames} frames, {out.seconds:.1f} s, "
          f"{out.sequential_calls} sequential model calls)")
    if out.contact_sheet:
        print(f"contact sheet: {out.contact_sheet}")
    if out.agreement:
        a = out.agreement
        print(f"storyboard agreement (synthetic-world probe): scene {a['scene']:.2f}, "
              f"characters {a['characters']:.2f}, both {a['both']:.2f}")
    print(json.dumps(summary))
    return summary
