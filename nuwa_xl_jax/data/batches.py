"""Training batches: grain's Dataset API over the chunked TFDS episodes (or a latent cache).

Order of operations, and why:
  range(N examples)            N = episodes x samples_per_episode (an example = one random window)
  shuffle(seed) + repeat       ONE global order, the same on every host; grain reshuffles each epoch
  random_map(make example)     the window, level pair, etc. drawn from grain's RNG for the example's
                               global position (and the seed): never from the host or a worker
  batch(batch_size / n)        lazy blocks of rows: global batch k = blocks k*n .. k*n + n - 1
  [p : n * full batches : n]   host p keeps block p of each global batch (rows [p*b/n, (p+1)*b/n))
                               and builds only those; a trailing partial global batch is dropped
  to_iter_dataset -> mp_prefetch (optional workers; they split whole host batches)
So the global batches depend only on (data config, seed): changing the number of hosts (or of
workers) does not change what the model sees. Batches run across epoch boundaries (none is lost
to a remainder until the last epoch of a finite run). The iterator is grain's: ``get_state()`` /
``set_state()`` checkpoint it exactly. ``to_global`` turns a host batch into global
``jax.Array``s with the mesh's batch sharding.

Each example: frames [L, H, W, 3] uint8 (or latents [L, h, w, c] float32 from a latent cache),
prompt_ids [L, T] int32, mask [L] float32 (1 = given), level, stride, indices [L] (episode frame
numbers), episode, example (the virtual example number, for shard checks).
"""
from __future__ import annotations

from typing import Any, Callable

import grain
import jax
import numpy as np
from absl import flags

from nuwa_xl_jax import parallel
from nuwa_xl_jax.configuration.data import DataConfig
from nuwa_xl_jax.data import latent_cache, sampling, sources


def spec_from_config(c: Any) -> sampling.Spec:
    return sampling.Spec(mode=c.mode, frames_per_call=c.frames_per_call, depth=c.depth,
                         level=c.level, ar_stride=c.ar_stride, ar_prefix=c.ar_prefix,
                         extra_given=float(getattr(c, "extra_given", 0.0)))


class ExampleMaker:
    """``(example number, rng) -> example``. Picklable (opens its reader lazily) so grain's
    worker processes can each build one."""

    def __init__(self, open_reader: Callable[[], Any], spec: sampling.Spec, tokenizer: Any,
                 samples_per_episode: int):
        self.open_reader = open_reader
        self.spec = spec
        self.tokenizer = tokenizer
        self.samples_per_episode = samples_per_episode
        self._reader = None

    def __getstate__(self):
        return {**self.__dict__, "_reader": None}

    @property
    def reader(self):
        if self._reader is None:
            self._reader = self.open_reader()
        return self._reader

    def __call__(self, example: int, rng: np.random.Generator) -> dict:
        episode = int(example) // self.samples_per_episode
        name = f"episode {episode} ({self.reader.table[episode]['name']})"
        idx = sampling.sample(self.spec, self.reader.length(episode), rng, name)
        out = {"mask": idx.mask, "level": np.int32(idx.level), "stride": np.int32(idx.stride),
               "indices": idx.indices.astype(np.int32), "episode": np.int32(episode),
               "example": np.int32(example)}
        if hasattr(self.reader, "read_latents"):
            out["latents"], out["prompt_ids"] = self.reader.read_latents(episode, idx.indices)
        else:
            out["frames"], captions = self.reader.read(episode, idx.indices)
            out["prompt_ids"] = self.tokenizer(captions)
        return out


class _TfdsReader:
    def __init__(self, c: Any):
        self.c = c

    def __call__(self):
        return sources.episode_reader(self.c)


class _LatentReader:
    def __init__(self, c: Any):
        self.c = c

    def __call__(self):
        return latent_cache.LatentReader(self.c.latent_dir, self.c.split)


def make_dataset(c: Any, process_index: int | None = None, process_count: int | None = None,
                 tokenizer: Any = None) -> grain.IterDataset:
    """This process's rows of each global batch (``c.batch_size / process_count`` examples) as a
    grain dataset; the global batches do not depend on ``process_count``.

    ``tokenizer`` maps captions to ids [n, T]; the synthetic world's word tokenizer by default
    (flintstones_hd needs one, e.g. ``models.tokenizers.make_tokenizer(config.model.text)``).
    """
    c = DataConfig.from_dict(c)  # a DataConfig as it is; a ConfigDict block checked here
    pi = jax.process_index() if process_index is None else int(process_index)
    pc = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= pi < pc:
        raise ValueError(f"process_index {pi} must be in 0..{pc - 1}")
    if c.batch_size % pc:
        raise ValueError(f"data.batch_size={c.batch_size} must be divisible by the {pc} processes "
                         "(each reads batch_size / process_count examples)")
    spec = spec_from_config(c)
    if c.latent_dir:
        open_reader: Callable[[], Any] = _LatentReader(c)
    else:
        open_reader = _TfdsReader(c)
        tokenizer = tokenizer or sources.default_tokenizer(c)
        if tokenizer is None:
            raise ValueError(f"data.dataset={c.dataset!r} has free-text captions: pass a tokenizer "
                             "(e.g. a CLIP folder through model.text.tokenizer)")
    reader = open_reader()
    for e in range(len(reader)):
        sampling.check_length(spec, reader.length(e), f"episode {e} ({reader.table[e]['name']})")
    per_episode = c.samples_per_episode or max(1, min(reader.length(e) for e in range(len(reader)))
                                               // spec.window)
    total = len(reader) * per_episode
    if c.num_epochs and total * c.num_epochs < c.batch_size:
        raise ValueError(f"{len(reader)} episodes x {per_episode} samples x {c.num_epochs} epochs "
                         f"give fewer examples than one global batch of {c.batch_size}; raise "
                         "data.samples_per_episode or data.num_epochs")
    maker = ExampleMaker(open_reader, spec, tokenizer, per_episode)
    maker._reader = reader if not c.workers else None
    # Global order and per-example RNG first (host-independent), the host's rows last.
    ds = grain.MapDataset.range(total).shuffle(seed=c.shuffle_seed).repeat(c.num_epochs or None)
    ds = ds.random_map(maker, seed=c.shuffle_seed)
    local_batch = c.batch_size // pc
    full_batches = len(ds) // c.batch_size
    ds = ds.batch(local_batch, drop_remainder=True)[pi:full_batches * pc:pc]  # lazy: own rows only
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
    if c.workers:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (library use, no main)
            flags.FLAGS.mark_as_parsed()
        # Workers slice the host batches (not examples), so batches match any worker count.
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=c.workers))
    return ds


def make_iterator(c: Any, **kwargs):
    """A checkpointable iterator (``get_state`` / ``set_state``) over this process's batches."""
    return iter(make_dataset(c, **kwargs))


def to_global(batch: dict, mesh, batch_axes=("data", "fsdp")) -> dict:
    """Host batch -> global jax.Arrays split over the mesh's batch axes (every host calls this)."""
    ways = parallel.batch_devices(mesh, batch_axes)
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        global_batch = v.shape[0] * jax.process_count()
        if global_batch % ways:
            raise ValueError(
                f"global batch {global_batch} is not divisible by the {ways} devices "
                f"on mesh axes {batch_axes}; make data.batch_size a multiple of {ways}"
            )
        out[k] = jax.make_array_from_process_local_data(
            parallel.batch_sharding(mesh, v.ndim, batch_axes), v)
    return out
