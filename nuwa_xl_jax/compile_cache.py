"""JAX's persistent compilation cache for the command lines (train, generate).

An SD-size sampler loop takes minutes to compile; without a disk cache every stage, resume and
generate pays it again. The CLIs call :func:`configure` before anything compiles:

- ``--compilation_cache=PATH`` (or the environment variable ``NUWA_XL_JAX_COMPILATION_CACHE``)
  moves the cache; ``off`` (also ``none``, ``false``, ``0`` or empty) disables it;
- otherwise a folder JAX was already given (``JAX_COMPILATION_CACHE_DIR``) is kept;
- otherwise ``$XDG_CACHE_HOME/nuwa_xl_jax/jax`` (default ``~/.cache/nuwa_xl_jax/jax``).

JAX's own thresholds stay as they are (programs compiling in under
``jax_persistent_cache_min_compile_time_secs``, 1 s by default, are not written). The cache is
trusted code: do not point it at a folder others can write to.
"""
from __future__ import annotations

import os
from typing import Optional

import jax

ENV = "NUWA_XL_JAX_COMPILATION_CACHE"
OFF = ("off", "none", "false", "0", "")


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nuwa_xl_jax", "jax")


def configure(setting: Optional[str] = None) -> Optional[str]:
    """Turns the cache on (returns its folder) or off (returns None); see the module doc for how
    ``setting`` (a flag's value; None = not given) and the environment decide."""
    if setting is None:
        setting = os.environ.get(ENV)
    if setting is None:
        setting = jax.config.jax_compilation_cache_dir or default_dir()
    if setting.strip().lower() in OFF:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = os.path.abspath(os.path.expanduser(setting))
    os.makedirs(path, exist_ok=True)  # an unwritable place fails here, with its name
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_enable_compilation_cache", True)
    return path
