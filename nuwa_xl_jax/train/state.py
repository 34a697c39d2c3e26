"""The training state and the optimizer, shared by every stage (T-KLVAE, MTD levels, baselines).

The state is one pytree: step, params, optimizer state, EMA params and the RNG key data, so one
``jax.jit`` with explicit shardings updates it and one Orbax item saves it.

``frozen`` names top-level parameter groups (e.g. ``("text",)``) that stay fixed: they are kept in
``params`` and ``ema_params`` (checkpoints and exports hold them), but the optimizer state covers
only the trained groups (no moments for frozen weights) and no gradients are taken for them.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array  # uint32 key data (raw, so Orbax saves it like any array)

    def key(self) -> jax.Array:
        return jax.random.wrap_key_data(self.rng)


def make_optimizer(learning_rate: float, warmup_steps: int, total_steps: int,
                   weight_decay: float = 0.0, clip_norm: float | None = 1.0,
                   b1: float = 0.9, b2: float = 0.999, accumulate_steps: int = 1,
                   end_lr_fraction: float = 0.0,
                   fixed: Callable[[str], bool] | None = None) -> optax.GradientTransformation:
    """AdamW with linear warmup and cosine decay, gradient clipping, optional accumulation.

    ``fixed(path)`` (``"vae/params/encoder/conv_in/kernel"``): parameters held at their starting
    values (a pretrained image model's layers while the added ones train): zero updates, no
    optimizer moments, no weight decay, and left out of the clipping norm.

    ``warmup_steps`` and ``total_steps`` count training steps (micro-batches); with
    ``accumulate_steps=k`` the inner optimizer updates once every k of them, so its schedule runs
    over ``1/k`` as many updates and still ends where the run ends.
    """
    k = max(int(accumulate_steps), 1)
    warmup, total = max(warmup_steps, 0) // k, max(total_steps // k, 1)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=warmup,
        decay_steps=max(total, warmup + 1), end_value=learning_rate * end_lr_fraction)
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))
    tx = optax.chain(*parts)
    if fixed is not None:
        tx = optax.multi_transform({"train": tx, "fixed": optax.set_to_zero()},
                                   lambda params: path_labels(params, fixed))
    if accumulate_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate_steps)
    return tx


def path_labels(params: Any, fixed: Callable[[str], bool]) -> Any:
    """``"fixed"`` / ``"train"`` for every leaf of ``params`` by its path (dict keys joined by
    ``/``; a boxed leaf's ``value`` attribute is not part of it)."""
    def label(path, _):
        name = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
        return "fixed" if fixed(name) else "train"

    return jax.tree_util.tree_map_with_path(label, params)


def split(params: Any, frozen=()) -> tuple[Any, dict]:
    """``(trained, frozen)`` top-level groups of ``params``; ``params`` itself when none is
    frozen."""
    if not frozen:
        return params, {}
    missing = set(frozen) - set(params)
    if missing:
        raise ValueError(
            f"frozen parameter groups {sorted(missing)} are not among {sorted(params)}"
        )
    return ({k: v for k, v in params.items() if k not in frozen},
            {k: v for k, v in params.items() if k in frozen})


def create(params: Any, tx: optax.GradientTransformation, key: jax.Array,
           frozen=()) -> TrainState:
    """A fresh state. Call inside ``jax.jit`` with ``out_shardings`` to create it already
    sharded."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(split(params, frozen)[0]),
                      ema_params=jax.tree.map(jnp.copy, params), rng=jax.random.key_data(key))


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """``decay * ema + (1 - decay) * params``, written as a step toward ``params`` so that a
    parameter equal to its average (one held fixed from the start) keeps it bit for bit, however
    the compiler orders the arithmetic."""
    return jax.tree.map(lambda e, p: e + (1.0 - decay) * (p.astype(e.dtype) - e), ema, params)


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """EMA warm-up: ``min(decay, (1 + step) / (10 + step))``, so early averages are not dominated
    by the random initialisation (with 0.995 and no warm-up, 13% of the EMA after 400 steps would
    still be the initial weights)."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def apply_gradients(state: TrainState, grads: Any, tx: optax.GradientTransformation,
                    ema_decay: float, frozen=()) -> TrainState:
    """One optimizer update from ``grads`` of the trained groups (all of ``params`` unless some
    are ``frozen``: those, and their EMA, pass through unchanged)."""
    trained, fixed = split(state.params, frozen)
    ema_trained, ema_fixed = split(state.ema_params, frozen)
    updates, opt_state = tx.update(grads, state.opt_state, trained)
    trained = optax.apply_updates(trained, updates)
    ema = ema_update(ema_trained, trained, ema_decay_at(state.step, ema_decay))
    if frozen:
        trained, ema = {**trained, **fixed}, {**ema, **ema_fixed}
    return state.replace(step=state.step + 1, params=trained, opt_state=opt_state, ema_params=ema)
