"""Compiled programs: built once per denoiser and setting, compiled ahead of time once per shape,
and their peak memory (XLA's own analysis, which dod/memory.py sizes calls with).

Why per denoiser: a program closes over its denoiser (a family's runtime, which holds the VAE's
device weights), so a process-wide cache would keep every family it ever ran alive
(benchmarks/paper_tables.py loads many). The cache lives on the denoiser instead and goes with it.
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.models import attention_fallback

_ATTR = "_nuwa_xl_jax_programs"
_MAX = 128  # programs and executables kept per denoiser, least recently used dropped first
_SHARED: "collections.OrderedDict[Any, Any]" = collections.OrderedDict()


def cache_of(denoise) -> "collections.OrderedDict[Any, Any]":
    """The cache of ``denoise``'s programs, kept on the object (a bound method's on its
    ``__self__``); objects that take no attribute share one process-wide cache."""
    owner = getattr(denoise, "__self__", denoise)
    try:
        return vars(owner).setdefault(_ATTR, collections.OrderedDict())
    except TypeError:  # no __dict__ (a builtin, __slots__): programs live with the process
        return _SHARED


def _lookup(cache, key, make: Callable[[], Any]):
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = make()
        while len(cache) > _MAX:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return hit


def per_denoiser(build: Callable) -> Callable:
    """``build(denoise, *settings)`` cached in :func:`cache_of` ``(denoise)``."""
    @functools.wraps(build)
    def get(denoise, *settings):
        return _lookup(cache_of(denoise), (build.__qualname__, denoise, *settings),
                       lambda: build(denoise, *settings))
    return get


def _abstract(a):
    return jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))


def compiled(program, denoise, params, args, rebuild: Callable[[], Any] | None = None):
    """``program`` (a jitted program of ``denoise``) compiled ahead of time for these shapes,
    cached with ``denoise``'s programs: ``args`` may be arrays or ``jax.ShapeDtypeStruct``s, so
    a chunk size can be sized before any data exists and the executable that runs is the one
    that was sized. ``params`` keep their placed shardings. Where cuDNN refuses the program's
    attention at compile time, ``rebuild()`` (the same program, built anew so that it is traced
    again) is compiled with XLA's attention (models/attention_fallback.py)."""
    p_leaves, p_tree = jax.tree.flatten(params)
    key = ("aot", program, p_tree,
           tuple((np.shape(a), jnp.result_type(a), getattr(a, "sharding", None)) for a in p_leaves),
           tuple((tuple(np.shape(a)), jnp.result_type(a)) for a in jax.tree.leaves(args)))
    builds = iter((lambda: program, rebuild or (lambda: program)))
    lower = lambda: next(builds)().lower(params, *jax.tree.map(_abstract, args))
    return _lookup(cache_of(denoise), key,
                   lambda: attention_fallback.compile_program(lower, "the DoD level program"))


def program_bytes(executable) -> int:
    """Peak bytes of a compiled program on one device, from XLA's memory analysis (0 where the
    backend gives none)."""
    m = executable.memory_analysis()
    if m is None:
        return 0
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
