"""Runs a diffusion-over-diffusion :class:`~nuwa_xl_jax.dod.plan.Plan` on per-level models.

Level 0 (global) is one sampler loop on ``[1, L, h, w, c]`` with nothing given. Level k >= 1
gathers ALL its segments into one batch ``[S, L, h, w, c]``: the two ends are read from a latent
buffer indexed by absolute frame (written by the level above), every other position is zero in the
visual condition and masked. The whole sampler loop for all segments is ONE jitted call whose batch
axis is sharded over the mesh (the level program, dod/segments.py), so a level costs the time of
one call, not S calls (the paper's speed-up, as a sharding axis instead of a Python loop).

Randomness [ours]: segment ``i`` of level ``k`` draws everything from
``fold_in(fold_in(key(seed), k), i)``, so the video is the same on 1 or 8 devices and batched or
one segment at a time (up to float rounding of batched kernels).

Memory: with ``max_segments_per_call`` a level runs in balanced chunks of one fixed size (padded),
so every chunk reuses one compilation; padded rows are computed and dropped. ``"auto"`` sizes the
chunks from the compiled program's own memory analysis against a budget (a fraction of one
device's memory, dod/memory.py): the whole level in one call when it fits, else the largest
balanced chunk that does. Sizing a chunk and running it share one compile (dod/compiled.py). The
latent buffer is donated to each write. Given frames are never written back (the buffer keeps the
level above's values bit-exact); frames >= N that later segments need as ends stay in the buffer
and are cut from the output.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from nuwa_xl_jax import parallel
from nuwa_xl_jax.diffusion import samplers
from nuwa_xl_jax.dod import checks, memory, segments
from nuwa_xl_jax.dod.level_models import LevelModel, place_models
from nuwa_xl_jax.dod.plan import Level, Plan
from nuwa_xl_jax.dod.progress import progress_bar
from nuwa_xl_jax.dod.result import LevelStats, Sampled


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a stopped run continues (dod/generation_state.py saves it): ``level`` the next level
    to run, ``buffer`` ``[span, h, w, c]`` the latents so far; when the run stopped inside that
    level, ``chunk`` its chunk size and ``first_chunk`` the chunks already in ``buffer``."""
    level: int
    buffer: np.ndarray
    chunk: Optional[int] = None
    first_chunk: int = 0


def run_level(lv: Level, model: LevelModel, buffer: jax.Array, prompt_ids: np.ndarray,
              null_ids, schedule, sampling: samplers.Settings, *, seed: int, mesh: Mesh,
              max_segments_per_call: memory.MaxSegments = None,
              memory_fraction: float = memory.DEFAULT_MEMORY_FRACTION, progress: bool = False,
              chunk: Optional[int] = None, first_chunk: int = 0,
              on_chunk: Optional[Callable[[int, int, jax.Array], None]] = None
              ) -> tuple[jax.Array, LevelStats]:
    """Samples every segment of ``lv`` (chunked at most ``max_segments_per_call`` per call, or
    sized to memory with ``"auto"``) and returns the buffer (donated: the one passed in is
    consumed) with its non-given frames written, plus the level's stats.

    Row i draws its noise from its segment index ``lv.ids[i]`` (a :meth:`Level.subset` of a level
    samples those segments as the whole level would). ``chunk``: the chunk size, fixed (a resumed
    level keeps the size it started with); ``first_chunk``: chunks already written in ``buffer``
    (a resumed level). ``on_chunk(chunks_done, chunk, buffer)`` runs after every chunk but the
    level's last (``buffer`` is donated next: copy it inside)."""
    start_time = time.perf_counter()
    traces0 = segments.trace_count()
    S, L = lv.frames.shape
    span = buffer.shape[0]
    nd = parallel.batch_devices(mesh)
    level_key = jax.random.fold_in(jax.random.key(seed), lv.level)
    # Each distinct prompt encoded once per level (not per chunk, not per sampler step): the
    # video's whole table, so every level's program has one shape and levels share compiles.
    table, prompt_index = segments.encode_table(model, mesh, prompt_ids, null_ids)
    prompt_index = prompt_index[lv.prompts]  # [S, L]
    peak = functools.partial(segments.program_peak, model, schedule, sampling, mesh,
                             level_key=level_key, frames=L, table=table,
                             latent_shape=buffer.shape[1:])
    if chunk is not None:
        C = int(chunk)
    elif max_segments_per_call == "auto" and S > 1:
        C = memory.auto_chunk_size(S, nd, lambda c: peak(chunk=c, replicate=False),
                                   memory.memory_budget(mesh, memory_fraction))
    else:
        auto = max_segments_per_call == "auto"
        C = memory.chunk_size(S, None if auto else max_segments_per_call, nd)
    replicate = C == 1
    calls = -(-S // C)
    pad = calls * C - S
    # Padded rows reuse segment 0's inputs; their keys (index >= S) and writes (dropped) are unused.
    rows = np.concatenate([np.arange(S), np.zeros(pad, int)])
    frames = lv.frames[rows]
    mask = lv.given[rows].astype(np.float32)
    write = np.where(lv.given[rows], span, frames)
    write[S:] = span
    prompt_index = prompt_index[rows]  # [S + pad, L]
    ids = lv.ids
    index = np.concatenate([ids, ids.max() + 1 + np.arange(pad)]).astype(np.uint32)
    level = np.full(S + pad, lv.level if model.level is None else model.level, np.int32)
    gather = segments.gather_program(mesh, replicate)
    scatter = segments.scatter_program(mesh, replicate)
    bar = progress_bar(S, f"level {lv.level}", progress)
    if bar is not None and first_chunk:
        bar.update(min(first_chunk * C, S))
    for c in range(first_chunk, calls):  # chunks, not segments: one call when S fits the budget
        sl = slice(c * C, (c + 1) * C)
        given = gather(buffer, *segments.chunk_inputs(mesh, replicate, frames[sl], mask[sl]))
        x = segments.sample_chunk(model, schedule, sampling, mesh, level_key=level_key,
                                  seg_index=index[sl], table=table, index=prompt_index[sl],
                                  given=given, mask=mask[sl], level=level[sl],
                                  replicate=replicate)
        buffer = scatter(buffer, *segments.chunk_inputs(mesh, replicate, write[sl]), x)
        if bar is not None:
            buffer.block_until_ready()
            bar.update(min(C, S - c * C))
        if on_chunk is not None and c + 1 < calls:
            on_chunk(c + 1, C, buffer)
    if bar is not None:
        bar.close()
    buffer.block_until_ready()
    used = peak(chunk=C, replicate=replicate)  # cached: the executable that just ran
    stats = LevelStats(lv.level, S, calls, C, segments.trace_count() - traces0,
                       time.perf_counter() - start_time, used)
    return buffer, stats


def run(plan: Plan, models: Sequence[LevelModel], prompt_ids, null_ids, schedule,
        latent_shape: Sequence[int], *, sampler: str = "ddim", steps: Optional[int] = None,
        guidance_scale: float = 1.0, eta: float = 0.0, spacing: Optional[str] = None,
        seed: int = 0, mesh: Optional[Mesh] = None,
        max_segments_per_call: memory.MaxSegments = None,
        memory_fraction: float = memory.DEFAULT_MEMORY_FRACTION, progress: bool = False,
        on_level: Optional[Callable[[Level, jax.Array], None]] = None,
        on_chunk: Optional[Callable[[Level, int, int, jax.Array], None]] = None,
        pinned: Optional[tuple] = None, resume_from: Optional[ResumePoint] = None,
        until_level: Optional[int] = None) -> Sampled:
    """Generates the plan's N frames of latents, level by level.

    models: one :class:`LevelModel` per level (``level_models`` builds them from a config's
      global and local weights). prompt_ids: ``[N, T]`` token ids, one row per requested frame
      (``Level.prompts`` indexes them). null_ids: ``[T]`` ids of the empty prompt (guidance).
    latent_shape: ``(h, w, c)``. mesh: default all devices on the batch axis.
    max_segments_per_call: segments per call; larger levels run in fixed-size balanced chunks.
      ``"auto"``: the largest chunk whose compiled program fits ``memory_fraction`` of one
      device's memory (the whole level when it fits). None: no limit.
    on_level(level, buffer): called after each level with the ``[span, h, w, c]`` latent buffer
      (e.g. to keep each level's keyframes for a contact sheet). The buffer is donated to the next
      level's writes: copy what you keep (``np.asarray``) inside the callback.
    on_chunk(level, chunks_done, chunk, buffer): called after every chunk of a level but its
      last (to save a partial level); copy the buffer inside, as with ``on_level``.
    pinned: ``(frames [K], latents [K, h, w, c])`` written into the buffer before level 0 (over a
      resumed buffer too); the plan must give those frames (dod/pins.pin_plan), so no level
      overwrites them.
    resume_from: a :class:`ResumePoint` saved by ``on_level``/``on_chunk``
      (dod/generation_state.py): the run continues there, bit for bit as if never stopped (every
      level reads only the buffer and its own segment keys, and a level resumed inside keeps its
      chunk size). An edit (dod/edit.py) starts from a finished video's buffer, level 0, with a
      plan whose levels hold only the segments it reruns.
    until_level: stop after this level (a keyframe preview: 0).

    A level with no segments (an edit's untouched level) is skipped.
    """
    sampling = checks.sampling(schedule, sampler, steps, guidance_scale, eta, spacing)
    if len(models) != plan.depth:
        raise ValueError(f"the plan has {plan.depth} levels but {len(models)} level models were "
                         "given")
    prompt_ids, null_ids = checks.prompts(prompt_ids, null_ids, plan.frames)
    max_segments_per_call = memory.check_max_segments(max_segments_per_call)
    memory.check_memory_fraction(memory_fraction)
    latent_shape = checks.latent_shape(latent_shape)
    mesh = parallel.make_mesh() if mesh is None else mesh
    start = np.zeros((plan.span, *latent_shape), np.float32)
    first = ResumePoint(0, start)
    if resume_from is not None:
        first = resume_from
        if first.buffer.shape != start.shape:
            raise ValueError(f"the saved latents have shape {first.buffer.shape} but this plan "
                             f"needs {start.shape}")
        start = np.array(first.buffer, np.float32)
    if pinned is not None:
        start[np.asarray(pinned[0])] = np.asarray(pinned[1], np.float32)
    last = plan.depth - 1 if until_level is None else until_level
    buffer = jax.device_put(start, parallel.replicated(mesh))
    models = place_models(models, mesh)  # once per run, not per chunk
    stats = []
    for lv, model in list(zip(plan.levels, models))[first.level:last + 1]:
        if lv.num_segments == 0:
            continue
        resumed = lv.level == first.level
        chunk_cb = None if on_chunk is None else functools.partial(on_chunk, lv)
        buffer, st = run_level(lv, model, buffer, prompt_ids, null_ids, schedule, sampling,
                               seed=seed, mesh=mesh, max_segments_per_call=max_segments_per_call,
                               memory_fraction=memory_fraction, progress=progress,
                               chunk=first.chunk if resumed else None,
                               first_chunk=first.first_chunk if resumed else 0,
                               on_chunk=chunk_cb)
        stats.append(st)
        if on_level is not None:
            on_level(lv, buffer)
    return Sampled(buffer[:plan.frames], sum(s.calls for s in stats),
                   sum(s.wall_s for s in stats), tuple(stats))
