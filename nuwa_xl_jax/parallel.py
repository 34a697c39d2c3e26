"""Device mesh, logical-axis sharding rules, and helpers to create or move arrays sharded.

Parameters carry *logical* axis names (``nn.with_logical_partitioning``); a rules table maps them
to mesh axes (the config's ``mesh.rules``, configuration/mesh.py). A logical axis whose size does
not divide the mesh axes it maps to is left replicated (a 3-channel output conv on 8 devices,
say) instead of failing: small layers cost little memory, and every model then shards on any
device count.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# The rules table and batch axes of record live in the mesh config block, which checks them
# against the mesh's axis names; these defaults serve callers without a config (tests, notebooks).
from nuwa_xl_jax.configuration.mesh import DEFAULT_BATCH_AXES, DEFAULT_RULES


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` (arguments from the environment on TPU / Slurm when None),
    with gloo for cross-process collectives between CPU processes. Call before any JAX work."""
    # The setting only concerns the CPU backend (asking which backend is in use here would
    # initialise it too early).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


_BARRIERS = itertools.count()  # every process meets the barriers in the same order: ids agree


def sync_processes(name: str, timeout_s: float = 3600.0) -> None:
    """Waits until every process has reached this point (nothing with one process).

    A barrier of the coordination service that ``jax.distributed`` starts, not a device
    collective (``multihost_utils.sync_global_devices``): on CPU that is a gloo collective, whose
    fixed 30 s timeout fails while one process builds a latent cache or compiles more slowly.
    """
    if jax.process_count() == 1:
        return
    # Deferred: a private JAX module (the client JAX and Orbax use; no public accessor yet),
    # needed only by multi-process runs; a JAX that moves it breaks only this path.
    from jax._src import distributed

    distributed.global_state.client.wait_at_barrier(
        f"nuwa_xl_jax/{name}/{next(_BARRIERS)}", int(timeout_s * 1000))


def global_input(x: Any, sharding: NamedSharding) -> Any:
    """``x``, a host value every process holds alike (a plan's indices, say), as a global array
    laid out by ``sharding``, for a jitted program whose ``in_shardings`` split it: several
    processes may pass numpy there only replicated. Each process places its own shards. With
    one process ``x`` as it is (jit places it)."""
    if jax.process_count() == 1:
        return x
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x: Any) -> np.ndarray:
    """A global array as numpy on every process (an allgather of the shards other hosts hold when
    it is split across processes; never a read of them): for frames and latents that process 0
    then writes. Every process must call it, in the same order."""
    if getattr(x, "is_fully_addressable", True) or getattr(x, "is_fully_replicated", False):
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def compile_together(jitted: Callable[..., Any] | None, name: str,
                     compile: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """A callable that compiles the program for the arguments of its first call (``compile(*args)``,
    by default ``jitted.lower(*args).compile()``), waits for every process to have compiled
    (``sync_processes``), then runs it; ``jitted`` as is with one process and no ``compile``.
    Why: the first run of a program with cross-process collectives connects the processes (gloo
    on CPU) with a 30 s timeout, and processes can finish compiling minutes apart (a loaded host,
    a cold compilation cache). The program must keep its shapes from call to call.
    """
    if compile is None:
        if jax.process_count() == 1:
            return jitted
        compile = lambda *args: jitted.lower(*args).compile()
    compiled = None

    def run(*args):
        nonlocal compiled
        if compiled is None:
            compiled = compile(*args)
            if jax.process_count() > 1:
                sync_processes(f"compiled/{name}")
        return compiled(*args)

    return run


def under_mesh(fn: Callable[..., Any], mesh: Mesh) -> Callable[..., Any]:
    """``fn`` traced with ``mesh`` as the context mesh (``jax.sharding.use_abstract_mesh``), so
    code that reads the context mesh sees the mesh the program runs on: the TPU splash kernel is
    shard_mapped over its batch axes (models/layers.splash_shard_axes) and ``'auto'`` takes it on
    several chips. Wrap a function before ``jax.jit``."""
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args, **kwargs)

    return traced


def make_mesh(shape: Sequence[int] = (-1, 1), axes: Sequence[str] = ("data", "fsdp"),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over ``devices`` (all by default), laid out by ``jax.make_mesh``. One ``-1`` in
    ``shape`` takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != len(axes):
        raise ValueError(f"mesh.shape {tuple(shape)} and mesh.axes {tuple(axes)} differ in length")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh.shape {tuple(shape)}: at most one entry may be -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"mesh.shape {tuple(shape)} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"mesh.shape {tuple(shape)} needs {math.prod(shape)} devices but {len(devices)} are "
            "visible; set mesh.shape to match (use -1 for 'the rest')")
    # jax.make_mesh orders the devices by the physical topology (TPU torus, hosts) where a
    # reshape of the device list would not; Auto axes: shardings stay explicit in our jits.
    auto = (jax.sharding.AxisType.Auto,) * len(axes)
    return jax.make_mesh(tuple(shape), tuple(axes), axis_types=auto, devices=devices)


def _mesh_axes_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return math.prod(mesh.shape[a] for a in axes)


def logical_to_sharding(logical: P, shape: Sequence[int], mesh: Mesh,
                        rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> NamedSharding:
    """NamedSharding for an array of ``shape`` whose dims carry logical names ``logical``.

    Dims that the mapped mesh axes do not divide are replicated; a mesh axis is used once at most.
    """
    mesh_spec = nn.logical_to_mesh_axes(logical, rules)
    used: set[str] = set()
    out = []
    for dim, axes in zip(shape, tuple(mesh_spec) + (None,) * (len(shape) - len(mesh_spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        names = tuple(a for a in names if a in mesh.shape and a not in used)
        if names and dim % _mesh_axes_size(mesh, names) == 0 and _mesh_axes_size(mesh, names) > 1:
            used.update(names)
            out.append(names[0] if len(names) == 1 else names)
        else:
            out.append(None)
    return NamedSharding(mesh, P(*out))


def tree_shardings(abstract_boxed: Any, mesh: Mesh,
                   rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
    """Shardings for a (possibly boxed) pytree from ``jax.eval_shape(model.init, ...)``.

    Leaves without logical names are replicated. The result matches the *unboxed* tree.
    """
    specs = nn.get_partition_spec(abstract_boxed)
    shapes = nn.meta.unbox(abstract_boxed)
    # an empty node (optax's MaskedNode: no state for parameters an optimizer leaves fixed)
    # comes back as it is
    return jax.tree.map(
        lambda spec, x: logical_to_sharding(spec, x.shape, mesh, rules) if hasattr(x, "shape")
        else x, specs, shapes, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, ndim: int, batch_axes: Any = DEFAULT_BATCH_AXES) -> NamedSharding:
    """Sharding that splits dim 0 over the batch mesh axes and replicates the rest."""
    axes = tuple(a for a in ((batch_axes,) if isinstance(batch_axes, str) else batch_axes)
                 if a in mesh.shape)
    return NamedSharding(mesh, P(axes if axes else None, *([None] * (ndim - 1))))


def batch_devices(mesh: Mesh, batch_axes: Any = DEFAULT_BATCH_AXES) -> int:
    """How many ways the batch is split: a batch (or a level's segments) is padded to a multiple."""
    axes = tuple(a for a in ((batch_axes,) if isinstance(batch_axes, str) else batch_axes)
                 if a in mesh.shape)
    return _mesh_axes_size(mesh, axes)


def fsdp_sharding(shape: Sequence[int], mesh: Mesh, axis: str = "fsdp") -> NamedSharding:
    """A weight laid out as FSDP holds it, whatever its logical names: split over ``axis`` along its
    largest dimension that the axis size divides; replicated when none does (or no such axis)."""
    n = mesh.shape.get(axis, 1)
    dims = sorted(range(len(shape)), key=lambda d: -shape[d])
    for d in dims:
        if n > 1 and shape[d] % n == 0:
            spec = [None] * len(shape)
            spec[d] = axis
            return NamedSharding(mesh, P(*spec))
    return NamedSharding(mesh, P())


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
