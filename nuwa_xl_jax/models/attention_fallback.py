"""'auto' attention's compile-time fallback. JAX's rules refuse some shapes for cuDNN's fused
attention while a program is traced (layers.cudnn_attention falls back there); a cuDNN build can
still refuse one when XLA compiles the program (an engine it has no plan for, a newer rule). Then
the program is traced again with 'auto' taking XLA's attention, and one line is logged.

The builders of compiled programs (the train step, the DoD level program) compile through
:func:`compile_program`. A retrace needs a fresh function: JAX caches traces per Python function,
so ``lower`` must build its jitted program anew each call.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable

import jax
from absl import logging

_XLA_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("xla_attention_only",
                                                                 default=False)


@contextlib.contextmanager
def xla_only():
    """While programs are traced inside, 'auto' attention takes XLA's (layers.attend)."""
    token = _XLA_ONLY.set(True)
    try:
        yield
    finally:
        _XLA_ONLY.reset(token)


def xla_only_active() -> bool:
    return _XLA_ONLY.get()


def refused_by_cudnn(error: BaseException) -> bool:
    """Whether a compile error is cuDNN's (XLA names cuDNN in every error its fused attention
    raises: the custom call ``__cudnn$fmha...``, cuDNN's status or graph messages)."""
    return isinstance(error, jax.errors.JaxRuntimeError) and "cudnn" in str(error).lower()


def compile_program(lower: Callable[[], Any], name: str):
    """``lower().compile()``; where cuDNN refuses the program's fused attention at compile time,
    one log line and ``lower()`` again, traced with XLA's attention. Other errors propagate."""
    try:
        return lower().compile()
    except jax.errors.JaxRuntimeError as e:
        if xla_only_active() or not refused_by_cudnn(e):
            raise
        reason = str(e).strip().splitlines()[0][:300]
    logging.warning("%s: cuDNN refused its fused attention at compile time (%s): XLA attention "
                    "instead", name, reason)
    with xla_only():
        return lower().compile()
