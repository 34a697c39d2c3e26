"""The level program: one sampler loop over a batch of segments, as one jitted call sharded over
the mesh, and the programs around it that read given frames from a latent buffer and write the
produced ones back. The DoD engine (dod/engine.py) runs a level as one or a few such calls; the
baselines (dod/baselines.py) run the same programs one segment or one AR call at a time.

Randomness [ours]: segment ``i`` draws everything (starting noise and, for DDPM or DDIM with
eta > 0, the per-step noise) from ``fold_in(level_key, i)``. The sampler is ``vmap``-ped over
segments with those keys, so a segment's noise does not depend on which other segments share its
batch, on the batch position, on chunking or on the device count.

Step-invariant work is done once per call, outside the sampler loop: prompt states (and the null
prompt's, for guidance) and the condition features of the given frames (``Denoiser``); each step
runs only the UNet. Programs are built once per denoiser and setting and compiled ahead of time
once per shape (dod/compiled.py).
"""
from __future__ import annotations

import collections
import functools
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from nuwa_xl_jax import parallel
from nuwa_xl_jax.diffusion import samplers
from nuwa_xl_jax.dod import compiled
from nuwa_xl_jax.dod.level_models import LevelModel, as_denoiser, place_params
from nuwa_xl_jax.models import text

_TRACES: collections.Counter = collections.Counter()


def trace_count() -> int:
    """How many times any level program has been traced (each trace is one compile)."""
    return sum(_TRACES.values())


def _shardings(mesh: Mesh, replicate: bool):
    """(sharding for an array of ndim) -> batch-split, or replicated for single-segment calls."""
    if replicate:
        return lambda ndim: parallel.replicated(mesh)
    return lambda ndim: parallel.batch_sharding(mesh, ndim)


@compiled.per_denoiser
def _encode_program(denoise, mesh: Mesh):
    """Prompt states of a table of distinct prompts, replicated (text.prompt_table)."""
    model = as_denoiser(denoise)
    return jax.jit(model.encode_prompts, in_shardings=(None, parallel.replicated(mesh)),
                   out_shardings=parallel.replicated(mesh))


def encode_table(model: LevelModel, mesh: Mesh, ids, null_ids) -> tuple[Any, np.ndarray]:
    """``(states [P, ...], index [...])`` for token ids ``[..., T]``: each distinct prompt (and
    the null prompt, last) encoded once, in the denoiser's compute dtype; ``states[index]`` are the
    rows' states. ``P`` is bucketed (see below)."""
    table, index = text.prompt_table(ids, null_ids)
    # Padded with null rows (the null prompt stays last) to a power of two >= 8: the level
    # program's shape follows the table's, so storyboards with other numbers of distinct prompts
    # reuse its compile instead of recompiling the SD-size scan for each count.
    rows = max(8, 1 << (len(table) - 1).bit_length())
    table = np.concatenate([table, np.repeat(table[-1:], rows - len(table), axis=0)])
    params = place_params(model.params, mesh)
    return _encode_program(model.denoise, mesh)(params, jnp.asarray(table)), index


@compiled.per_denoiser
def _level_program(denoise, schedule, sampling: samplers.Settings, mesh: Mesh, replicate: bool):
    """The jitted sampler loop for a batch of segments; cached so equal settings share the jit
    (and its per-shape compile cache) across levels, chunks and runs."""
    sh = _shardings(mesh, replicate)
    eta = sampling.eta if sampling.name == "ddim" else 0.0
    model = as_denoiser(denoise)
    # JAX's trace caches keep the step function (a static argument of the sampler loop) for the
    # life of the process; it reaches the denoiser through a proxy, so it keeps no family alive.
    step_model = weakref.proxy(model)
    guided = sampling.guidance_scale != 1.0

    def program(params, level_key, seg_index, table, index, given, mask, level):
        _TRACES[(sampling, mesh, replicate, given.shape)] += 1
        given = given * mask[..., None, None, None]
        # Step-invariant work, once per call and outside the sampler loop: the prompt states
        # (``table``: each distinct prompt of the level encoded once, before the call, the null
        # prompt last) gathered per frame, and the condition features of the given frames.
        states = table[index]  # [C, L, T, D]
        null_states = table[-1] if guided else None
        features = model.condition(params, given, mask)  # batch-first pytree

        def model_fn(x, t, states, features, level):
            return step_model.unet(params, x, t, states, features, level)

        def one(index, states, features, g, m, level):
            # One segment as a batch of 1: its own key makes its noise independent of the batch.
            key = jax.random.fold_in(level_key, index)
            g, m = g[None], m[None]
            out = samplers.sample(
                sampling.name, model_fn, schedule, key, g.shape, steps=sampling.steps,
                cond={"states": states[None],
                      "features": jax.tree.map(lambda a: a[None], features),
                      "level": level[None]},
                null_cond=None if null_states is None else {"states": null_states[None, None]},
                guidance_scale=sampling.guidance_scale,
                given=g, mask=m, given_t=0, eta=eta, spacing=sampling.spacing)
            return out[0]

        return jax.vmap(one)(seg_index, states, features, given, mask, level)

    # under the mesh: the TPU splash kernel is shard_mapped over it (models/layers.attend)
    return jax.jit(parallel.under_mesh(program, mesh),
                   # params: None = the shardings place_params gave them (replicated or FSDP).
                   in_shardings=(None, parallel.replicated(mesh), sh(1), parallel.replicated(mesh),
                                 sh(2), sh(5), sh(2), sh(1)),
                   out_shardings=sh(5))


@functools.lru_cache(maxsize=16)  # keyed by mesh only: these programs hold no weights
def gather_program(mesh: Mesh, replicate: bool):
    """``gather(buffer, frames [C, L], mask [C, L])``: the given latents of a chunk, the buffer's
    rows at the segment's frames where given, else zeros."""
    sh = _shardings(mesh, replicate)

    def gather(buffer, frames, mask):
        return jnp.take(buffer, frames, axis=0, mode="clip") * mask[..., None, None, None]

    return jax.jit(gather, in_shardings=(parallel.replicated(mesh), sh(2), sh(2)),
                   out_shardings=sh(5))


@functools.lru_cache(maxsize=16)
def scatter_program(mesh: Mesh, replicate: bool):
    """``scatter(buffer, index [C, L], x)``: writes a chunk's produced frames into the buffer;
    index == len(buffer) is dropped (given positions and padded segments), so given frames stay
    bit-exact. The buffer is donated: written in place, never copied (3376 frames at 256 px are
    ~220 MB of latents)."""
    sh = _shardings(mesh, replicate)

    def scatter(buffer, index, x):
        return buffer.at[index].set(x.astype(buffer.dtype), mode="drop")

    return jax.jit(scatter, in_shardings=(parallel.replicated(mesh), sh(2), sh(5)),
                   out_shardings=parallel.replicated(mesh), donate_argnums=(0,))


def sample_segments(model: LevelModel, schedule, sampling: samplers.Settings, mesh: Mesh, *,
                    level_key, seg_index, ids, given, mask, level, null_ids,
                    replicate: bool = False):
    """One sampler loop over a batch of C segments (C a multiple of the batch devices unless
    ``replicate``). seg_index [C] (segment i's key: fold_in(level_key, i)), ids [C, L, T],
    given [C, L, h, w, c] (zeros where not given), mask [C, L], level [C]. Returns [C, L, h, w, c]
    with given positions bit-exact."""
    table, index = encode_table(model, mesh, ids, null_ids)
    return sample_chunk(model, schedule, sampling, mesh, level_key=level_key, seg_index=seg_index,
                        table=table, index=index, given=given, mask=mask, level=level,
                        replicate=replicate)


def chunk_inputs(mesh: Mesh, replicate: bool, *arrays) -> list:
    """A chunk's host inputs (indices, masks: the same on every process) as the level programs
    take them: split over the batch axes like the chunk (global arrays with several processes,
    parallel.global_input), numpy as they are with one."""
    sh = _shardings(mesh, replicate)
    return [parallel.global_input(a, sh(np.ndim(a))) for a in arrays]


def sample_chunk(model: LevelModel, schedule, sampling: samplers.Settings, mesh: Mesh, *,
                 level_key, seg_index, table, index, given, mask, level, replicate: bool):
    """:func:`sample_segments` on prompt states already encoded (``table``, gathered by
    ``index`` [C, L])."""
    program = _level_program(model.denoise, schedule, sampling, mesh, replicate)
    # A no-op for weights already on the mesh (place_models); callers place them once.
    params = place_params(model.params, mesh)
    seg_index, index, mask, level = chunk_inputs(
        mesh, replicate, np.asarray(seg_index, np.uint32), np.asarray(index, np.int32),
        np.asarray(mask, np.float32), np.asarray(level, np.int32))
    args = (level_key, jnp.asarray(seg_index), table, jnp.asarray(index), given,
            jnp.asarray(mask), jnp.asarray(level))
    rebuild = lambda: _level_program.__wrapped__(model.denoise, schedule, sampling, mesh, replicate)
    return compiled.compiled(program, model.denoise, params, args, rebuild)(params, *args)


def program_peak(model: LevelModel, schedule, sampling: samplers.Settings, mesh: Mesh, *,
                 level_key, chunk: int, frames: int, table, latent_shape, replicate: bool) -> int:
    """Peak bytes of the level program for ``chunk`` segments, compiled (and cached) for it."""
    program = _level_program(model.denoise, schedule, sampling, mesh, replicate)
    s = jax.ShapeDtypeStruct
    args = (level_key, s((chunk,), jnp.uint32), s(table.shape, table.dtype),
            s((chunk, frames), jnp.int32), s((chunk, frames, *latent_shape), jnp.float32),
            s((chunk, frames), jnp.float32), s((chunk,), jnp.int32))
    params = place_params(model.params, mesh)
    rebuild = lambda: _level_program.__wrapped__(model.denoise, schedule, sampling, mesh, replicate)
    return compiled.program_bytes(compiled.compiled(program, model.denoise, params, args, rebuild))
