"""Baselines on the same models as the engine, to measure what diffusion over diffusion buys.

- :func:`dod_per_segment`: the same plan, keys and models, one sampler loop per segment on one
  device (batch 1). Same video as :func:`engine.run` (per-segment keys); what batching buys is the
  ratio of wall times and of sequential calls (sum of segments vs number of levels).
- :func:`autoregressive`: autoregressive over diffusion, the paper's FDM* row. The first L frames
  come from one call with nothing given (or conditioned on a given prefix); each next call
  generates frames [s, s + L) with its first P frames (the previous call's last P) given, so it
  adds L - P new frames; calls run strictly one after another until N frames exist. It uses an AR
  model (stage ``mtd_ar``: stride 1, level -1 in its data, trained with a prefix of P given or, in
  a share of its examples, nothing given, so the first call is in its training distribution too;
  data/sampling.ar_prefix_length). Start it with ``first=None``: another model's frames (e.g. the
  global model's keyframes, L-1 strides apart) are not consecutive frames the AR model can continue.

"Sequential calls" = sampler loops that must run one after another (each is ``steps`` model
evaluations); both baselines return it next to the latents, in the engine's result type.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax import parallel
from nuwa_xl_jax.dod import checks, engine, segments
from nuwa_xl_jax.dod.level_models import LevelModel, place_models
from nuwa_xl_jax.dod.plan import Plan
from nuwa_xl_jax.dod.progress import progress_bar
from nuwa_xl_jax.dod.result import Sampled

AR_LEVEL = -1  # the level value of autoregressive training examples (data/sampling.ar_indices)


def ar_num_calls(L: int, frames: int, prefix: int) -> int:
    """Calls the AR baseline makes: one for the first L frames, then ceil((N - L) / (L - P))."""
    return 1 + max(0, -(-(frames - L) // (L - prefix)))


def dod_per_segment(plan: Plan, models: Sequence[LevelModel], prompt_ids, null_ids,
                    schedule, latent_shape, *, mesh=None, **kwargs) -> Sampled:
    """Diffusion over diffusion without batching: every segment is its own sampler loop on the
    first device of ``mesh``. Other keyword arguments are :func:`engine.run`'s."""
    if "max_segments_per_call" in kwargs:
        raise ValueError(
            "dod_per_segment runs one segment per call; do not pass max_segments_per_call"
        )
    devices = (jax.devices() if mesh is None else list(mesh.devices.flat))[:1]
    one = parallel.make_mesh(devices=devices)
    return engine.run(plan, models, prompt_ids, null_ids, schedule, latent_shape, mesh=one,
                      max_segments_per_call=1, **kwargs)


def autoregressive(model: LevelModel, prompt_ids, null_ids, schedule, latent_shape, *,
                   L: int, prefix: int, sampler: str = "ddim", steps: Optional[int] = None,
                   guidance_scale: float = 1.0, eta: float = 0.0, spacing: Optional[str] = None,
                   seed: int = 0, mesh=None, first: Optional[LevelModel] = None,
                   prefix_latents=None, progress: bool = False) -> Sampled:
    """Autoregressive over diffusion for N = len(prompt_ids) frames.

    model: the AR model (P = ``prefix`` frames given; nothing given on the first call, which its
    training includes). first: another model for the first call (nothing given, run as level 0;
    default ``model``, the in-distribution start). prefix_latents: ``[P0, h, w, c]``
    (1 <= P0 < L) to start from given frames instead; they are the video's first P0 frames. Call i
    uses the key
    fold_in(fold_in(key(seed), 0), i), as DoD's level 0 segment i. Returns the latents
    ``[N, h, w, c]`` and the number of sequential calls.
    """
    sampling = checks.sampling(schedule, sampler, steps, guidance_scale, eta, spacing)
    prompt_ids, null_ids = checks.prompts(prompt_ids, null_ids)
    N = prompt_ids.shape[0]
    if not isinstance(L, (int, np.integer)) or L < 2:
        raise ValueError(f"L must be an integer >= 2, got {L!r}")
    if not isinstance(prefix, (int, np.integer)) or not 1 <= prefix < L:
        raise ValueError(f"prefix must be an integer in 1..{L - 1} (L={L}), got {prefix!r}")
    latent_shape = checks.latent_shape(latent_shape)
    P0 = 0
    if prefix_latents is not None:
        prefix_latents = jnp.asarray(prefix_latents, jnp.float32)
        P0 = prefix_latents.shape[0]
        if prefix_latents.shape[1:] != latent_shape or not 1 <= P0 < L:
            raise ValueError(
                f"prefix_latents must be [P0, {', '.join(map(str, latent_shape))}] with "
                f"1 <= P0 < L={L}, got shape {tuple(prefix_latents.shape)}"
            )
    mesh = parallel.make_mesh(devices=jax.devices()[:1]) if mesh is None else mesh
    first_level = AR_LEVEL if first is None else 0  # another first model runs as level 0
    # Weights on the devices once, not once per call (~N / (L - P) calls).
    model, first = place_models([model, first or model], mesh)
    calls = ar_num_calls(L, N, prefix)
    starts = [0] + [L + i * (L - prefix) - prefix for i in range(calls - 1)]
    span = starts[-1] + L
    buffer = jnp.zeros((span, *latent_shape), jnp.float32)
    if P0:
        buffer = buffer.at[:P0].set(prefix_latents)
    buffer = jax.device_put(buffer, parallel.replicated(mesh))
    gather = segments.gather_program(mesh, True)
    scatter = segments.scatter_program(mesh, True)
    level_key = jax.random.fold_in(jax.random.key(seed), 0)
    bar = progress_bar(calls, "autoregressive", progress, unit="call")
    t0 = time.perf_counter()
    for i, s in enumerate(starts):  # inherently sequential: call i needs call i - 1's frames
        frames = (s + np.arange(L))[None]
        given = np.zeros((1, L), bool)
        given[0, :prefix if i else P0] = True
        x = segments.sample_segments(
            first if i == 0 else model, schedule, sampling, mesh, level_key=level_key,
            seg_index=np.array([i], np.uint32), ids=prompt_ids[np.minimum(frames, N - 1)],
            given=gather(buffer, frames, given.astype(np.float32)), mask=given.astype(np.float32),
            level=np.array([first_level if i == 0 else AR_LEVEL], np.int32), null_ids=null_ids,
            replicate=True)
        buffer = scatter(buffer, np.where(given, span, frames), x)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    buffer.block_until_ready()
    return Sampled(buffer[:N], calls, time.perf_counter() - t0)
