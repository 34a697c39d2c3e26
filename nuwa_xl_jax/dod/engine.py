"""Runs a diffusion-over-diffusion :class:`~nuwa_xl_jax.dod.plan.Plan` on per-level models.

Level 0 (global) is one sampler loop on ``[1, L, h, w, c]`` with nothing given. Level k >= 1
gathers ALL its segments into one batch ``[S, L, h, w, c]``: the two ends are read from a latent
buffer indexed by absolute frame (written by the level above), every other position is zero in the
visual condition and masked. The whole sampler loop for all segments is ONE jitted call whose batch
axis is sharded over the mesh, so a level costs the time of one call, not S calls (the paper's
speed-up, as a sharding axis instead of a Python loop).

Randomness [ours]: segment ``i`` of level ``k`` draws everything (starting noise and, for DDPM or
DDIM with eta > 0, the per-step noise) from ``fold_in(fold_in(key(seed), k), i)``. The sampler is
``vmap``-ped over segments with those keys, so a segment's noise does not depend on which other
segments share its batch, on the batch position, on chunking or on the device count: the video is
the same on 1 or 8 devices and batched or one segment at a time (up to float rounding of batched
kernels).

Step-invariant work is done once per call, outside the sampler loop: prompt states (and the null
prompt's, for guidance) and the condition features of the given frames (:class:`Denoiser`); each
step runs only the UNet. Weights are placed on the mesh once (:func:`place_models`), not per call.

Memory: with ``max_segments_per_call`` a level runs in balanced chunks of one fixed size (padded),
so every chunk reuses one compilation; padded rows are computed and dropped. ``"auto"`` sizes the
chunks from the compiled program's own memory analysis against a budget (a fraction of one
device's memory, :func:`memory_budget`): the whole level in one call when it fits, else the
largest balanced chunk that does (:func:`auto_chunk_size`). Level programs are compiled ahead of
time once per shape (:func:`_compiled`), so sizing a chunk and running it share one compile. The
latent buffer is donated to each write. Given frames are never written back (the buffer keeps the
level above's values bit-exact); frames >= N that later segments need as ends stay in the buffer
and are cut from the output.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import time
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from nuwa_xl_jax import parallel
from nuwa_xl_jax.diffusion import samplers
from nuwa_xl_jax.dod.plan import Level, Plan
from nuwa_xl_jax.models import text

Denoise = Callable[..., jax.Array]  # denoise(params, x, t, ids, cond, mask, level) -> prediction
MaxSegments = Union[int, str, None]  # segments per call: an int >= 1, "auto" (memory-sized) or None
DEFAULT_MEMORY_FRACTION = 0.8  # of one device's memory, for max_segments_per_call="auto"


class Denoiser(Protocol):
    """A denoiser split by what changes across sampler steps (stages.MTDModels is one). Prompts
    and given frames are fixed for a whole sampler call, so the level program encodes them once,
    outside the loop, and each step runs only ``unet``."""

    def encode_prompts(self, params, ids) -> Any:
        """``[..., T]`` token ids -> prompt states ``[..., T, D]``."""

    def condition(self, params, cond, mask) -> Any:
        """Given latents ``[B, F, h, w, c]`` and mask ``[B, F]`` -> features (a batch-first pytree)."""

    def unet(self, params, x, t, states, features, level) -> jax.Array:
        """One step's prediction from the encoded prompts and condition features."""


@dataclasses.dataclass(frozen=True)
class FunctionDenoiser:
    """A plain ``denoise(params, x, t, ids, cond, mask, level)`` as a :class:`Denoiser` that
    encodes nothing ahead: ids, cond and mask pass through and the whole function runs per step."""
    denoise: Denoise

    def encode_prompts(self, params, ids):
        return ids

    def condition(self, params, cond, mask):
        return cond, mask

    def unet(self, params, x, t, states, features, level):
        return self.denoise(params, x, t, states, *features, level)


def as_denoiser(denoise) -> Denoiser:
    return denoise if hasattr(denoise, "unet") else FunctionDenoiser(denoise)


@dataclasses.dataclass(frozen=True)
class LevelModel:
    """One level's denoiser and weights. ``denoise``: a :class:`Denoiser` (e.g. the family's
    stages.MTDModels, ``params = {"mtd": ..., "text": ...}``) or a plain
    ``denoise(params, x, t, ids, cond, mask, level)`` (run whole at every step). Reuse the same
    denoiser for every level so levels of equal shape share one compilation (params are an
    argument). ``level``: the level value the model is passed (default: the plan's level). A
    shared local model run deeper than it was trained gets its deepest trained level here, so its
    level embedding is never read past ``num_levels`` (dod/generate.level_models_for)."""
    denoise: Any
    params: Any
    level: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Sampler settings; hashable, they are part of the compiled program."""
    name: str = "ddim"
    steps: Optional[int] = None
    guidance_scale: float = 1.0
    eta: float = 0.0
    spacing: Optional[str] = None

    def check(self, schedule) -> None:
        """Fails before any compile on what ``samplers.sample`` would reject inside a trace."""
        if self.name not in samplers.TABLES:
            raise ValueError(f"unknown sampler {self.name!r}; choose one of {', '.join(samplers.TABLES)}")
        if self.eta != 0.0 and self.name != "ddim":
            raise ValueError(f"eta is a DDIM setting; sampler {self.name!r} does not take it")
        if not self.eta >= 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        steps = self.steps
        if steps is None:
            steps = schedule.num_train_timesteps if self.name == "ddpm" else 50
        samplers.timesteps(schedule, steps, self.spacing or samplers.DEFAULT_SPACING[self.name])


@dataclasses.dataclass(frozen=True)
class LevelStats:
    """What one level cost: ``segments`` real segments, ``calls`` sequential sampler loops
    (chunks), ``chunk`` the padded batch of each call, ``traces`` new traces of the level program
    (0 when an earlier level or run had the same shape), ``wall_s`` seconds incl. gather/scatter,
    ``program_bytes`` the compiled level program's peak memory on one device (XLA's estimate:
    arguments + outputs + temporaries - aliased)."""
    level: int
    segments: int
    calls: int
    chunk: int
    traces: int
    wall_s: float
    program_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class Result:
    latents: jax.Array  # [N, h, w, c]
    levels: tuple[LevelStats, ...]

    @property
    def sequential_calls(self) -> int:
        """Sampler loops that ran one after another (one per chunk of each level)."""
        return sum(s.calls for s in self.levels)

    @property
    def wall_s(self) -> float:
        return sum(s.wall_s for s in self.levels)


# ------------------------------------------------------------------------------------------
# Building blocks.

_TRACES: collections.Counter = collections.Counter()


def trace_count() -> int:
    """How many times any level program has been traced (each trace is one compile)."""
    return sum(_TRACES.values())


def level_models(denoise: Denoise, global_params: Any, local_params: Any, depth: int,
                 local_models: str = "separate") -> tuple[LevelModel, ...]:
    """Per-level models for a plan of ``depth``: level 0 the global weights; level k >= 1 the
    local weights of depth k (``separate``: ``local_params[k - 1]``) or one shared local model
    (``shared``: ``local_params`` itself, told apart by the ``level`` the engine passes)."""
    if local_models not in ("separate", "shared"):
        raise ValueError(f"local_models={local_models!r}; use 'separate' or 'shared'")
    if local_models == "shared":
        locals_ = [local_params] * (depth - 1)
    else:
        local_params = list(local_params or [])
        if len(local_params) < depth - 1:
            raise ValueError(f"depth {depth} needs {depth - 1} local models (one per depth), got "
                             f"{len(local_params)}")
        locals_ = local_params[:depth - 1]
    return tuple(LevelModel(denoise, p) for p in [global_params, *locals_])


def segment_keys(seed: int, level: int, segments: Sequence[int]) -> jax.Array:
    """The keys of the given segments of a level: fold_in(fold_in(key(seed), level), segment)."""
    base = jax.random.fold_in(jax.random.key(seed), level)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(segments, jnp.uint32))


def _shardings(mesh: Mesh, replicate: bool):
    """(sharding for an array of ndim) -> batch-split, or replicated for single-segment calls."""
    if replicate:
        return lambda ndim: parallel.replicated(mesh)
    return lambda ndim: parallel.batch_sharding(mesh, ndim)


def place_params(params: Any, mesh: Mesh) -> Any:
    """Leaves already laid out on ``mesh`` (e.g. FSDP-sharded, or placed by an earlier call) are
    returned as they are; others (e.g. numpy weights of an export) are copied to the devices,
    replicated. Place weights once per loaded family (dod/generate.load_family) or per run
    (:func:`run`), never per call. The level program then takes the params' own shardings."""
    rep = parallel.replicated(mesh)

    def place(a):
        s = getattr(a, "sharding", None)
        if isinstance(s, NamedSharding) and s.mesh == mesh:
            return a
        return jax.device_put(a, rep)

    return jax.tree.map(place, params)


@functools.lru_cache(maxsize=16)
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


@functools.lru_cache(maxsize=64)
def _level_program(denoise, schedule, sampling: Sampling, mesh: Mesh, replicate: bool):
    """The jitted sampler loop for a batch of segments; cached so equal settings share the jit
    (and its per-shape compile cache) across levels, chunks and runs."""
    sh = _shardings(mesh, replicate)
    eta = sampling.eta if sampling.name == "ddim" else 0.0
    model = as_denoiser(denoise)
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
            return model.unet(params, x, t, states, features, level)

        def one(index, states, features, g, m, level):
            # One segment as a batch of 1: its own key makes its noise independent of the batch.
            key = jax.random.fold_in(level_key, index)
            g, m = g[None], m[None]
            out = samplers.sample(
                sampling.name, model_fn, schedule, key, g.shape, steps=sampling.steps,
                cond={"states": states[None], "features": jax.tree.map(lambda a: a[None], features),
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


@functools.lru_cache(maxsize=16)
def _gather_program(mesh: Mesh, replicate: bool):
    """Given latents of a chunk: buffer rows at the segment's frames where given, else zeros."""
    sh = _shardings(mesh, replicate)

    def gather(buffer, frames, mask):
        return jnp.take(buffer, frames, axis=0, mode="clip") * mask[..., None, None, None]

    return jax.jit(gather, in_shardings=(parallel.replicated(mesh), sh(2), sh(2)),
                   out_shardings=sh(5))


@functools.lru_cache(maxsize=16)
def _scatter_program(mesh: Mesh, replicate: bool):
    """Writes a chunk's produced frames into the buffer; index == len(buffer) is dropped (given
    positions and padded segments), so given frames stay bit-exact. The buffer is donated: written
    in place, never copied (3376 frames at 256 px are ~220 MB of latents)."""
    sh = _shardings(mesh, replicate)

    def scatter(buffer, index, x):
        return buffer.at[index].set(x.astype(buffer.dtype), mode="drop")

    return jax.jit(scatter, in_shardings=(parallel.replicated(mesh), sh(2), sh(5)),
                   out_shardings=parallel.replicated(mesh), donate_argnums=(0,))


_COMPILED: "collections.OrderedDict[Any, Any]" = collections.OrderedDict()
_COMPILED_MAX = 64


def _abstract(a):
    return jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))


def _compiled(program, params, args):
    """The level program compiled ahead of time for these shapes (cached): ``args`` may be
    arrays or ``jax.ShapeDtypeStruct``s, so a chunk size can be sized before any data exists and
    the same executable then runs it. Keyed on the params' shardings too (replicated or FSDP)."""
    p_leaves, p_tree = jax.tree.flatten(params)
    key = (program, p_tree,
           tuple((np.shape(a), jnp.result_type(a), getattr(a, "sharding", None)) for a in p_leaves),
           tuple((tuple(np.shape(a)), jnp.result_type(a)) for a in jax.tree.leaves(args)))
    hit = _COMPILED.get(key)
    if hit is None:
        hit = program.lower(params, *jax.tree.map(_abstract, args)).compile()
        _COMPILED[key] = hit
        while len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(key)
    return hit


def program_bytes(compiled) -> int:
    """Peak bytes of a compiled program on one device, from XLA's memory analysis (0 where the
    backend gives none)."""
    m = compiled.memory_analysis()
    if m is None:
        return 0
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def memory_budget(mesh: Mesh, fraction: float = DEFAULT_MEMORY_FRACTION) -> int:
    """Bytes one level call may use on one device: ``fraction`` of the device's memory limit
    (``memory_stats()["bytes_limit"]``: on GPU that is the pool JAX preallocated). CPU devices
    report none; there the host's physical memory is shared by its local devices."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"memory_fraction must be in (0, 1], got {fraction!r}")
    # one of this process's devices: another host's device cannot be queried (multi-host)
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    device = local[0] if local else jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        limit = int(stats["bytes_limit"])
    else:
        import os
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        limit = host // max(1, len(local))
    return int(limit * fraction)


def auto_chunk_size(segments: int, devices: int, peak: Callable[[int], int], budget: int) -> int:
    """The chunk size for ``max_segments_per_call="auto"``: the whole level (balanced over the
    devices) when ``peak(chunk)`` fits ``budget``, else the largest balanced chunk that does.
    Memory grows about linearly with the chunk (every row is one more segment's activations), so
    two small probes predict the size, a compile confirms it and the next larger balanced size is
    tried; ``peak`` compiles (cached, and the chosen size's executable is the one that runs)."""
    whole = _chunk_size(segments, None, devices)
    if peak(whole) <= budget:
        return whole
    c1 = devices
    p1 = peak(c1)
    if p1 > budget:
        raise MemoryError(
            f"one chunk of {c1} segment(s) needs {p1 / 2**30:.2f} GiB per device, over the "
            f"{budget / 2**30:.2f} GiB budget: raise memory_fraction, add devices, or use a "
            f"smaller model or resolution")
    c2 = 2 * devices
    if c2 >= whole:
        return c1
    per_row = max(1, peak(c2) - p1) / (c2 - c1)
    cap = c1 + int((budget - p1) // (per_row * devices)) * devices
    chunk = _chunk_size(segments, max(c1, min(cap, whole - devices)), devices)
    while chunk > c1 and peak(chunk) > budget:  # the estimate was optimistic: step down
        chunk = _chunk_size(segments, chunk - devices, devices)
    while True:  # XLA reuses buffers, so memory can grow slower than linearly: step up
        bigger = _next_chunk(segments, chunk, devices)
        if bigger >= whole or peak(bigger) > budget:
            return chunk
        chunk = bigger


def _next_chunk(segments: int, chunk: int, devices: int) -> int:
    """The smallest balanced chunk size above ``chunk``."""
    cap = chunk + devices
    while _chunk_size(segments, cap, devices) <= chunk:
        cap += devices
    return _chunk_size(segments, cap, devices)


def sample_segments(model: LevelModel, schedule, sampling: Sampling, mesh: Mesh, *, level_key,
                    seg_index, ids, given, mask, level, null_ids, replicate: bool = False):
    """One sampler loop over a batch of C segments (C a multiple of the batch devices unless
    ``replicate``). seg_index [C] (segment i's key: fold_in(level_key, i)), ids [C, L, T],
    given [C, L, h, w, c] (zeros where not given), mask [C, L], level [C]. Returns [C, L, h, w, c]
    with given positions bit-exact."""
    table, index = encode_table(model, mesh, ids, null_ids)
    return _sample_chunk(model, schedule, sampling, mesh, level_key=level_key, seg_index=seg_index,
                         table=table, index=index, given=given, mask=mask, level=level,
                         replicate=replicate)


def _sample_chunk(model: LevelModel, schedule, sampling: Sampling, mesh: Mesh, *, level_key,
                  seg_index, table, index, given, mask, level, replicate: bool):
    """sample_segments on prompt states already encoded (``table``, gathered by ``index`` [C, L])."""
    program = _level_program(model.denoise, schedule, sampling, mesh, replicate)
    # A no-op for weights already on the mesh (place_models); callers place them once.
    params = place_params(model.params, mesh)
    args = (level_key, jnp.asarray(seg_index, jnp.uint32), table, jnp.asarray(index, jnp.int32),
            given, jnp.asarray(mask, jnp.float32), jnp.asarray(level, jnp.int32))
    return _compiled(program, params, args)(params, *args)


def _program_peak(model: LevelModel, schedule, sampling: Sampling, mesh: Mesh, *, level_key,
                  chunk: int, frames: int, table, latent_shape, replicate: bool) -> int:
    """Peak bytes of the level program for ``chunk`` segments, compiled (and cached) for it."""
    program = _level_program(model.denoise, schedule, sampling, mesh, replicate)
    s = jax.ShapeDtypeStruct
    args = (level_key, s((chunk,), jnp.uint32), s(table.shape, table.dtype),
            s((chunk, frames), jnp.int32), s((chunk, frames, *latent_shape), jnp.float32),
            s((chunk, frames), jnp.float32), s((chunk,), jnp.int32))
    return program_bytes(_compiled(program, place_params(model.params, mesh), args))


def place_models(models: Sequence[LevelModel], mesh: Mesh) -> tuple[LevelModel, ...]:
    """The models with their weights on ``mesh``, each distinct weight tree placed once (a shared
    local model serves several levels with one copy)."""
    placed = {}
    for m in models:
        if id(m.params) not in placed:
            placed[id(m.params)] = place_params(m.params, mesh)
    return tuple(dataclasses.replace(m, params=placed[id(m.params)]) for m in models)


def _chunk_size(segments: int, max_segments: Optional[int], devices: int) -> int:
    """One chunk size per level, a multiple of the batch devices (max_segments rounded up to
    one): as few calls as the budget allows, and balanced, so the padding is spread instead of
    left to the last chunk (69 segments at 16: 5 calls of 14, not 5 of 16)."""
    if segments == 1:
        return 1  # one segment (level 0): no padding, replicated
    up = lambda n: -(-n // devices) * devices
    cap = up(segments if max_segments is None else min(segments, max_segments))
    calls = -(-segments // cap)
    return up(-(-segments // calls))


def check_max_segments(max_segments_per_call) -> MaxSegments:
    """``max_segments_per_call`` as the engine takes it: an int >= 1, ``"auto"`` or None (no
    limit). Also read from configs and flags: ``0``, ``"none"`` and ``""`` mean no limit, and a
    string of digits is its number."""
    value = max_segments_per_call
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", ""):
            return None
        value = int(text) if text.isdigit() else text
    if value is None or value == "auto":
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value) or None
    raise ValueError(f"max_segments_per_call must be an integer >= 1, 'auto' (sized to memory) or "
                     f"None/0 (no limit), got {max_segments_per_call!r}")


def _progress(total: int, desc: str, enabled: bool, unit: str = "segment"):
    """A tqdm bar that stays on screen (one line per level), or None."""
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit)


def run_level(lv: Level, model: LevelModel, buffer: jax.Array, prompt_ids: np.ndarray,
              null_ids, schedule, sampling: Sampling, *, seed: int, mesh: Mesh,
              max_segments_per_call: MaxSegments = None,
              memory_fraction: float = DEFAULT_MEMORY_FRACTION, progress: bool = False
              ) -> tuple[jax.Array, LevelStats]:
    """Samples every segment of ``lv`` (chunked at most ``max_segments_per_call`` per call, or
    sized to memory with ``"auto"``) and returns the buffer (donated: the one passed in is
    consumed) with its non-given frames written, plus the level's stats."""
    start_time = time.perf_counter()
    traces0 = trace_count()
    S, L = lv.frames.shape
    span = buffer.shape[0]
    nd = parallel.batch_devices(mesh)
    level_key = jax.random.fold_in(jax.random.key(seed), lv.level)
    # Each distinct prompt encoded once per level (not per chunk, not per sampler step): the
    # video's whole table, so every level's program has one shape and levels share compiles.
    table, prompt_index = encode_table(model, mesh, prompt_ids, null_ids)
    prompt_index = prompt_index[lv.prompts]  # [S, L]
    if max_segments_per_call == "auto" and S > 1:
        peak = functools.partial(_program_peak, model, schedule, sampling, mesh,
                                 level_key=level_key, frames=L, table=table,
                                 latent_shape=buffer.shape[1:], replicate=False)
        C = auto_chunk_size(S, nd, lambda c: peak(chunk=c), memory_budget(mesh, memory_fraction))
    else:
        C = _chunk_size(S, None if max_segments_per_call == "auto" else max_segments_per_call, nd)
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
    index = np.arange(S + pad, dtype=np.uint32)
    level = np.full(S + pad, lv.level if model.level is None else model.level, np.int32)
    gather = _gather_program(mesh, replicate)
    scatter = _scatter_program(mesh, replicate)
    bar = _progress(S, f"level {lv.level}", progress)
    for c in range(calls):  # chunks, not segments: one call when S fits the budget
        sl = slice(c * C, (c + 1) * C)
        given = gather(buffer, frames[sl], mask[sl])
        x = _sample_chunk(model, schedule, sampling, mesh, level_key=level_key,
                          seg_index=index[sl], table=table, index=prompt_index[sl], given=given,
                          mask=mask[sl], level=level[sl], replicate=replicate)
        buffer = scatter(buffer, write[sl], x)
        if bar is not None:
            buffer.block_until_ready()
            bar.update(min(C, S - c * C))
    if bar is not None:
        bar.close()
    buffer.block_until_ready()
    used = _program_peak(model, schedule, sampling, mesh, level_key=level_key, chunk=C, frames=L,
                         table=table, latent_shape=buffer.shape[1:], replicate=replicate)  # cached: the executable that just ran
    stats = LevelStats(lv.level, S, calls, C, trace_count() - traces0,
                       time.perf_counter() - start_time, used)
    return buffer, stats


def run(plan: Plan, models: Sequence[LevelModel], prompt_ids, null_ids, schedule,
        latent_shape: Sequence[int], *, sampler: str = "ddim", steps: Optional[int] = None,
        guidance_scale: float = 1.0, eta: float = 0.0, spacing: Optional[str] = None,
        seed: int = 0, mesh: Optional[Mesh] = None, max_segments_per_call: MaxSegments = None,
        memory_fraction: float = DEFAULT_MEMORY_FRACTION, progress: bool = False,
        on_level: Optional[Callable[[Level, jax.Array], None]] = None) -> Result:
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
    """
    sampling = Sampling(sampler, steps, float(guidance_scale), float(eta), spacing)
    sampling.check(schedule)
    if len(models) != plan.depth:
        raise ValueError(f"the plan has {plan.depth} levels but {len(models)} level models were given")
    prompt_ids = np.asarray(prompt_ids)
    if prompt_ids.ndim != 2 or prompt_ids.shape[0] != plan.frames:
        raise ValueError(f"prompt_ids must be [N, T] with one row per requested frame (N="
                         f"{plan.frames}), got shape {prompt_ids.shape}")
    null_ids = np.asarray(null_ids)
    if null_ids.shape != prompt_ids.shape[1:]:
        raise ValueError(f"null_ids must be [T]={prompt_ids.shape[1:]}, got shape {null_ids.shape}")
    max_segments_per_call = check_max_segments(max_segments_per_call)
    if not 0.0 < memory_fraction <= 1.0:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction!r}")
    latent_shape = tuple(int(d) for d in latent_shape)
    if len(latent_shape) != 3:
        raise ValueError(f"latent_shape must be (h, w, c), got {latent_shape}")
    mesh = parallel.make_mesh() if mesh is None else mesh
    buffer = jax.device_put(jnp.zeros((plan.span, *latent_shape), jnp.float32),
                            parallel.replicated(mesh))
    models = place_models(models, mesh)  # once per run, not per chunk
    stats = []
    for lv, model in zip(plan.levels, models):
        buffer, st = run_level(lv, model, buffer, prompt_ids, null_ids, schedule, sampling,
                               seed=seed, mesh=mesh, max_segments_per_call=max_segments_per_call,
                               memory_fraction=memory_fraction, progress=progress)
        stats.append(st)
        if on_level is not None:
            on_level(lv, buffer)
    return Result(buffer[:plan.frames], tuple(stats))
