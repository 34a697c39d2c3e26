"""Test helper: a module's variables created directly in their shardings (what training does
with ``jax.eval_shape`` -> ``parallel.tree_shardings`` -> ``jax.jit(init, out_shardings=...)``,
train/loop.py), for tests that check a model's logical axis names on a mesh."""
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh

from nuwa_xl_jax import parallel


def init_sharded(init_fn: Callable[..., Any], mesh: Mesh, *args,
                 rules: Sequence[tuple[str, Any]] = parallel.DEFAULT_RULES) -> Any:
    """Runs ``init_fn(*args)`` under jit with parameters created directly in their shardings.

    Never materialises a replicated copy first: ``eval_shape`` gives the logical specs, those give
    ``out_shardings``. Returns the unboxed variables.
    """
    abstract = jax.eval_shape(init_fn, *args)
    shardings = parallel.tree_shardings(abstract, mesh, rules)
    return jax.jit(lambda *a: nn.meta.unbox(init_fn(*a)), out_shardings=shardings)(*args)
