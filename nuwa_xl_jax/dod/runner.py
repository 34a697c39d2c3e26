"""A video's latents from a trained model family: the one generation function under
:class:`nuwa_xl_jax.pipeline.NuwaXLPipeline`.

``load_family`` reads what ``python -m nuwa_xl_jax.train`` left in a workdir (through the family
layer, ``nuwa_xl_jax/family/``) and places every weight on the devices once; ``sample`` runs
diffusion over diffusion, the autoregressive baseline or ART•V to latents; ``decode_frames``
decodes them in bounded windows, as a stream. Writing, contact sheets and the synthetic world's
probe are the pipeline's (nuwa_xl_jax/pipeline.py), at the edge.

The plan is always the one the family was trained for: depth ``data.depth``, so every level runs
its model at the stride it was trained at, cut at the requested N (segments that write no
frame < N are never computed). A 16-frame video of a depth-2, L=16 family still draws its
keyframes at stride 15 and fills them in. N beyond the trained (L-1)^depth + 1 frames is an error
unless ``extend=True`` (``--extend``), which deepens the plan by reusing the deepest local model
[ours: outside the training distribution; the paper trains one depth].
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional

import numpy as np

from nuwa_xl_jax import parallel
from nuwa_xl_jax.configuration import Config
from nuwa_xl_jax.diffusion import samplers
from nuwa_xl_jax.dod import artv as artv_gen
from nuwa_xl_jax.dod import baselines, decode, engine, memory, pins
from nuwa_xl_jax.dod.level_models import LevelModel, level_models, place_params
from nuwa_xl_jax.dod.plan import Plan, depth_for, make_plan, num_frames
from nuwa_xl_jax.dod.result import Sampled
from nuwa_xl_jax.family import store
from nuwa_xl_jax.family.artv import ARTVModels
from nuwa_xl_jax.family.runtime import MTDModels
from nuwa_xl_jax.family.store import load_config
from nuwa_xl_jax.io import storyboards

MODES = ("dod", "ar", "artv")


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
    place = lambda params: place_params(params, mesh)
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
    """One :class:`LevelModel` per level of a plan of ``depth`` for a family trained at
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
        models = level_models(denoise, global_params, local_params[0], depth, "shared")
        return tuple(m if k <= deepest else dataclasses.replace(m, level=deepest)
                     for k, m in enumerate(models))
    local = list(local_params)[:max(trained - 1, 0)]
    while len(local) < depth - 1:  # extended past the trained depth: reuse the deepest local model
        local.append(local[-1])
    return level_models(denoise, global_params, local, depth)


def keyframe_mask(plan: Plan) -> np.ndarray:
    """[N] bool: frames written by a level above the last one (the probe scores them apart)."""
    mask = np.zeros(plan.frames, bool)
    for lv in plan.levels[:-1]:
        mask[lv.frames[lv.writes]] = True
    return mask


def evenly_spaced(frames: int) -> np.ndarray:
    """The frames a contact sheet shows of a video with one level (AR, ART•V)."""
    return np.arange(0, frames, max(1, frames // 16))


def sample(family: Family, prompts, *, mode: str = "dod",
           sampling: Optional[samplers.Settings] = None, seed: int = 0, mesh=None,
           max_segments_per_call: memory.MaxSegments = "auto",
           memory_fraction: float = memory.DEFAULT_MEMORY_FRACTION, progress: bool = True,
           extend: bool = False, plan: Optional[Plan] = None,
           pinned: Optional[tuple] = None, **resume) -> Sampled:
    """The latents of ``len(prompts)`` frames guided by one prompt per frame: DoD on the plan of
    the trained depth (``plan``, else :func:`plan_for`; more frames need ``extend=True``), the AR
    baseline (``mode="ar"``) or ART•V frame by frame (``mode="artv"``, dod/artv.py), with
    ``sampling`` (resolved from the config by the caller: samplers.config_kwargs). Returned with
    numpy latents, each level's frame indices and the keyframe mask. ``pinned``: ``(frames [K],
    latents [K, h, w, c])`` of keyframe images, given at every level that holds them
    (dod/pins.py; DoD only). ``resume``: engine.run's ``resume_from``, ``until_level`` and
    ``on_level`` (DoD only: generation state, dod/generation_state.py)."""
    if mode not in MODES:
        raise ValueError(f"--mode={mode!r}; use one of {', '.join(MODES)}")
    if any(v is not None for v in resume.values()) and mode != "dod":
        raise ValueError(f"generation state (preview, state, resume) is the DoD hierarchy's; "
                         f"--mode={mode} has no levels: use --mode=dod")
    if pinned is not None and mode != "dod":
        raise ValueError(f"keyframe images pin frames of the DoD hierarchy; --mode={mode} cannot "
                         "use them: use --mode=dod or a storyboard without images")
    N = len(prompts)
    L = family.config.data.frames_per_call
    if mode == "dod":
        if plan is None:
            plan = plan_for(family.config, N, extend)
        elif plan.frames != N:
            raise ValueError(f"the plan is for {plan.frames} frames but {N} prompts were given")
        if pinned is not None:
            plan = pins.pin_plan(plan, pinned[0])
    sampling = samplers.Settings() if sampling is None else sampling
    models = family.models
    storyboards.check_vocabulary(prompts, models.tokenizer)
    ids = np.asarray(models.tokenizer(list(prompts)))
    settings = dict(**sampling.keywords(), seed=seed, progress=progress)
    if mode == "dod":
        # models (a Denoiser): prompts and conditions are encoded once per call.
        levels = level_models_for(family.config, models, family.global_params,
                                  family.local_params, plan.depth)
        result = engine.run(plan, levels, ids, models.null_ids, models.schedule,
                            models.latent_shape, mesh=mesh,
                            max_segments_per_call=max_segments_per_call,
                            memory_fraction=memory_fraction, pinned=pinned, **resume,
                            **settings)
        level_indices = tuple(np.unique(lv.frames[lv.frames < N]) for lv in plan.levels)
        keyframes = keyframe_mask(plan)
    elif mode == "ar":
        if family.ar_params is None:
            raise FileNotFoundError("--mode=ar needs the mtd_ar stage: train it with "
                                    "--stages=mtd_ar")
        # The first call has nothing given (first=None), which the mtd_ar stage trains for
        # (data/sampling.ar_prefix_length draws prefix 0 too); later calls get ar_prefix frames.
        result = baselines.autoregressive(
            LevelModel(models, family.ar_params), ids, models.null_ids, models.schedule,
            models.latent_shape, L=L, prefix=family.config.data.ar_prefix, mesh=mesh,
            **settings)
        level_indices = (evenly_spaced(N),)
        keyframes = np.zeros(N, bool)  # one level: no frame is a keyframe of a level above
    else:
        if family.artv_params is None:
            raise FileNotFoundError("--mode=artv needs the mtd_artv stage: train it with "
                                    "--stages=mtd_artv")
        if family.artv_runtime is None:
            family.artv_runtime = ARTVModels(models)
        result = artv_gen.generate(LevelModel(family.artv_runtime, family.artv_params), ids,
                                   models.null_ids, **settings)
        level_indices = (evenly_spaced(N),)
        keyframes = np.zeros(N, bool)
    return dataclasses.replace(result, latents=parallel.to_host(result.latents),
                               level_indices=level_indices, keyframes=keyframes)


def _decoder(family: Family, latents: np.ndarray, mesh, memory_fraction: float):
    """``(decode_fn, windows per call, window, context)``: the family's decode calls (its VAE's
    training clip length and context), sized to ``memory_fraction`` of one device of ``mesh``."""
    window, context = decode.config_windows(family.config)
    mesh = parallel.make_mesh() if mesh is None else mesh
    decode_fn, per_call = decode.sized_decode_fn(
        family.models.vae, family.models.vae_params, latents.shape[1:], latents.shape[0], window,
        context, memory.memory_budget(mesh, memory_fraction))
    return decode_fn, per_call, window, context


def decode_frames(family: Family, latents, *, mesh=None,
                  memory_fraction: float = memory.DEFAULT_MEMORY_FRACTION
                  ) -> Iterator[np.ndarray]:
    """uint8 frames ``[n, H, W, 3]`` of ``latents`` in order, decoded in bounded windows with
    temporal context (no seams), the VAE's training clip length and context, as the latent cache
    encoded its targets. As many windows per device call as fit ``memory_fraction`` of the
    memory of one device of ``mesh`` (default: all devices): a long video never sits decoded in
    device memory all at once."""
    latents = np.asarray(latents)
    decode_fn, per_call, window, context = _decoder(family, latents, mesh, memory_fraction)
    return decode.decode_windows(decode_fn, latents, window, context, per_call)


def redecode_frames(family: Family, latents, frames, changed, *, mesh=None,
                    memory_fraction: float = memory.DEFAULT_MEMORY_FRACTION
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, redecoded [N] bool)``: an edited video's frames, decoding again only the
    windows of :func:`decode_frames` whose latents include a ``changed`` frame
    (decode.redecode); the other frames are ``frames``' (the video before the edit)."""
    latents = np.asarray(latents)
    decode_fn, per_call, window, context = _decoder(family, latents, mesh, memory_fraction)
    return decode.redecode(decode_fn, latents, frames, changed, window, context, per_call)
