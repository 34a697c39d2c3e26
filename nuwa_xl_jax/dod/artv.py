"""ART•V generation: a long video one frame at a time, each frame conditioned on the anchor (the
video's first frame) and the previous frame, with the ART•V model of a family (``mtd_artv``).

- Frame 0 (the anchor): given (``anchor=`` latents, e.g. an encoded image) or drawn first by the
  same model from the first prompt with nothing given (its training includes that case).
- Frame n >= 1: one sampler loop on the window ``[anchor, previous, new]`` with prompts
  ``[prompt 0, prompt n-1, prompt n]``; the previous frame is noised to ``artv.noise_aug_t`` (as
  training augments it) and the mask blends its clean latent into the new frame's prediction.

Runtime [ours]: each distinct prompt is encoded once (the null prompt too); frames run as a
``lax.scan`` inside one jitted program over chunks of equal size (one compile for the whole video;
a chunk is one host round trip, for the progress bar), with the weights placed on the device once.
Inside a frame, the condition features are computed once, outside the sampler loop; each step runs
only the UNet and the mask head. Frame n draws its noise from
``fold_in(fold_in(key(seed), 0), n)``, so the video does not depend on the chunk size.
"Sequential calls" = sampler loops run one after another: one per generated frame.
"""
from __future__ import annotations

import time
import weakref
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax import parallel
from nuwa_xl_jax.diffusion import samplers, schedules
from nuwa_xl_jax.dod import checks, compiled
from nuwa_xl_jax.dod.level_models import LevelModel, place_params
from nuwa_xl_jax.dod.progress import progress_bar
from nuwa_xl_jax.dod.result import Sampled
from nuwa_xl_jax.family.artv import ANCHOR, NEW, PREVIOUS, WINDOW, ARTVModels
from nuwa_xl_jax.models import text

CHUNK = 16  # frames per jitted call (a progress-bar tick); balanced so the last one is not short


def _sample_window(artv: ARTVModels, params, sampling: samplers.Settings, key, states, null_states,
                   given, mask, ref, given_t):
    """One sampler loop on a batch of one window ``[1, 3, h, w, c]``; returns the window."""
    features = artv.condition(params, given, mask, ref, given_t)  # once, outside the loop
    # JAX's trace caches keep the step function (a static argument of the sampler loop) for the
    # life of the process; it reaches the model through a proxy, so it keeps no family alive.
    step_model = weakref.proxy(artv)

    def model_fn(x, t, states, features):
        return step_model.unet(params, x, t, states, features)

    return samplers.sample(
        sampling.name, model_fn, artv.schedule, key, given.shape, steps=sampling.steps,
        cond={"states": states, "features": features},
        null_cond=None if null_states is None else {"states": null_states[None, None]},
        guidance_scale=sampling.guidance_scale, given=given, mask=mask, given_t=0,
        eta=sampling.eta if sampling.name == "ddim" else 0.0, spacing=sampling.spacing)


@compiled.per_denoiser
def _programs(artv: ARTVModels, sampling: samplers.Settings):
    """(anchor program, chunk program), jitted once per model and settings."""
    guided = sampling.guidance_scale != 1.0
    aug_t = int(artv.settings.noise_aug_t)

    def encode(params, table, index):
        """Each distinct prompt (text.prompt_table: the null prompt last) encoded once."""
        states = artv.encode_prompts(params, table)
        return states[index], states[-1] if guided else None

    def anchor(params, states, null_states, seed_key):
        """Frame 0 from the first prompt alone: the window's anchor position."""
        shape = (1, WINDOW, *artv.latent_shape)
        zeros = jnp.zeros(shape)
        st = jnp.broadcast_to(states[0], (1, WINDOW, *states.shape[1:]))
        out = _sample_window(artv, params, sampling, jax.random.fold_in(seed_key, 0), st,
                             null_states, zeros, jnp.zeros((1, WINDOW)), zeros[:, 0],
                             jnp.zeros((1, WINDOW), jnp.int32))
        return out[0, ANCHOR]

    def chunk(params, states, null_states, seed_key, anchor_latent, prev, frames):
        """Frames ``frames`` (absolute indices; >= N are padding, computed and dropped) in order."""
        n_frames = states.shape[0]
        mask = jnp.zeros((1, WINDOW)).at[:, ANCHOR].set(1.0).at[:, PREVIOUS].set(1.0)
        given_t = jnp.zeros((1, WINDOW), jnp.int32).at[:, PREVIOUS].set(aug_t)

        def body(prev, n):
            key = jax.random.fold_in(seed_key, n)
            k_aug, k_sample = jax.random.split(key)
            prev_aug = schedules.q_sample(artv.schedule, prev, jnp.int32(aug_t),
                                          jax.random.normal(k_aug, prev.shape))
            given = jnp.stack([anchor_latent, prev_aug, jnp.zeros_like(prev)])[None]
            rows = jnp.minimum(jnp.stack([0, n - 1, n]), n_frames - 1)
            out = _sample_window(artv, params, sampling, k_sample, states[rows][None],
                                 null_states, given, mask, prev[None], given_t)
            new = out[0, NEW]
            return jnp.where(n < n_frames, new, prev), new

        return jax.lax.scan(body, prev, frames)

    return jax.jit(encode), jax.jit(anchor), jax.jit(chunk)


def chunk_size(frames: int, cap: int = CHUNK) -> int:
    """Equal chunks of at most ``cap`` frames covering ``frames`` (padding < number of chunks)."""
    if frames <= 0:
        return 1
    calls = -(-frames // cap)
    return -(-frames // calls)


def generate(model: LevelModel, prompt_ids, null_ids, *, sampler: str = "ddim",
             steps: Optional[int] = None, guidance_scale: float = 1.0, eta: float = 0.0,
             spacing: Optional[str] = None, seed: int = 0, anchor=None, mesh=None,
             chunk: int = CHUNK, progress: bool = False) -> Sampled:
    """``len(prompt_ids)`` frames of latents, one per sampler loop.

    model: a LevelModel whose ``denoise`` is an :class:`ARTVModels` and ``params`` its weights.
    prompt_ids ``[N, T]``, null_ids ``[T]`` (guidance). anchor: ``[h, w, c]`` latents of the
    video's first frame (kept bit-exact as frame 0); default: drawn first from prompt 0.
    """
    artv = model.denoise
    if not isinstance(artv, ARTVModels):
        raise TypeError("ART•V generation needs an ARTVModels denoiser (family/artv.py), got "
                        f"{type(artv).__name__}")
    sampling = checks.sampling(artv.schedule, sampler, steps, guidance_scale, eta, spacing)
    prompt_ids, null_ids = checks.prompts(prompt_ids, null_ids)
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    N = prompt_ids.shape[0]
    shape = tuple(artv.latent_shape)
    if anchor is not None and tuple(np.shape(anchor)) != shape:
        raise ValueError(f"anchor must be the first frame's latents {list(shape)}, got shape "
                         f"{tuple(np.shape(anchor))}")
    mesh = parallel.make_mesh(devices=jax.devices()[:1]) if mesh is None else mesh
    params = place_params(model.params, mesh)  # once per video; a no-op when placed
    encode, first, run_chunk = _programs(artv, sampling)
    t0 = time.perf_counter()
    seed_key = jax.random.fold_in(jax.random.key(seed), 0)
    table, index = text.prompt_table(prompt_ids, null_ids)
    states, null_states = encode(params, jnp.asarray(table), jnp.asarray(index))
    calls = 0
    if anchor is None:
        anchor_latent = first(params, states, null_states, seed_key)
        calls += 1
    else:
        anchor_latent = jnp.asarray(anchor, jnp.float32)
    out = [anchor_latent[None]]
    rest = N - 1
    C = chunk_size(rest, chunk)
    n_calls = -(-rest // C) if rest else 0
    bar = progress_bar(rest, "ART•V", progress, unit="frame")
    prev = anchor_latent
    for c in range(n_calls):  # sequential by nature: chunk c needs chunk c - 1's last frame
        frames = jnp.arange(1 + c * C, 1 + (c + 1) * C, dtype=jnp.int32)
        prev, latents = run_chunk(params, states, null_states, seed_key, anchor_latent, prev,
                                  frames)
        out.append(latents[:max(0, min(C, N - 1 - c * C))])
        if bar is not None:
            prev.block_until_ready()
            bar.update(min(C, rest - c * C))
    if bar is not None:
        bar.close()
    latents = jnp.concatenate(out)
    latents.block_until_ready()
    return Sampled(latents, calls + rest, time.perf_counter() - t0)
