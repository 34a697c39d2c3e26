"""Make JAX (and our platform checks) believe they run on an NVIDIA GPU or a TPU, on CPU, so that
attention selection and JAX's own cuDNN shape rules apply while a program is traced or lowered
(``jax.eval_shape``, ``jax.make_jaxpr``, ``.trace(...).lower(lowering_platforms=...)``), never
compiled or run. What is patched:

- ours: ``layers._on_nvidia_gpu`` / ``layers._on_tpu``, ``layers._cuda_compute_capability`` and
  ``layers._pallas_interpret``;
- JAX's cuDNN attention wrapper (``jax._src.cudnn.fused_attention_stablehlo``): the cuDNN version
  and compute-capability probes its shape rules read (``check_is_flash_attention``).
"""
from __future__ import annotations

from jax._src.cudnn import fused_attention_stablehlo as jax_cudnn

from nuwa_xl_jax.models import layers

HOPPER = (9, 0)  # H100 / H200
AMPERE = (8, 0)  # A100


def fake_nvidia_gpu(monkeypatch, capability=HOPPER, cudnn_version: int = 91000):
    """Until the test ends: our checks and JAX's cuDNN rules see an NVIDIA GPU of ``capability``."""
    def at_least(c: str) -> bool:
        return capability >= tuple(int(x) for x in c.split("."))

    monkeypatch.setattr(layers, "_on_nvidia_gpu", lambda: True)
    monkeypatch.setattr(layers, "_on_tpu", lambda: False)
    monkeypatch.setattr(layers, "_cuda_compute_capability", lambda: capability)
    monkeypatch.setattr(jax_cudnn, "check_cudnn_version", lambda: cudnn_version)
    monkeypatch.setattr(jax_cudnn, "check_compute_capability", at_least)
    monkeypatch.setattr(jax_cudnn, "is_cuda_compute_capability_equal",
                        lambda c: capability == tuple(int(x) for x in c.split(".")))


def fake_tpu(monkeypatch, mosaic: bool = False):
    """Until the test ends: our checks see a TPU. The splash kernel runs in Pallas' interpreter,
    or with ``mosaic`` is the real TPU kernel (lowered for 'tpu' only: CPU cannot run it)."""
    monkeypatch.setattr(layers, "_on_nvidia_gpu", lambda: False)
    monkeypatch.setattr(layers, "_on_tpu", lambda: True)
    monkeypatch.setattr(layers, "_pallas_interpret", lambda: not mosaic)


def primitives(jaxpr) -> set:
    """Every primitive name in a (closed) jaxpr, sub-jaxprs included."""
    from jax.extend import core as jcore

    def walk(j):
        for eqn in j.eqns:
            yield eqn.primitive.name
            for sub in jcore.jaxprs_in_params(eqn.params):
                yield from walk(sub)

    return set(walk(getattr(jaxpr, "jaxpr", jaxpr)))
