"""'auto' attention's compile-time fallback (models/attention_fallback.py): where cuDNN refuses a
program's fused attention when XLA compiles it, the train step and the DoD level program are
traced again with XLA's attention, with one log line. CPU cannot compile cuDNN, so the refusal is
simulated: every compile of a program traced with 'auto' free to take cuDNN raises the error a
cuDNN build gives."""
import fake_accelerators as fake
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax.models import attention_fallback, layers

REFUSAL = "INTERNAL: cuDNN graph failed to build: CUDNN_STATUS_NOT_SUPPORTED (simulated)"


@pytest.fixture
def cudnn_refuses(monkeypatch):
    return refuse_cudnn(monkeypatch)


def refuse_cudnn(monkeypatch):
    """Compiles outside the fallback raise cuDNN's refusal; returns the log lines the fallback
    writes."""
    real = jax.stages.Lowered.compile

    def compile(self, *args, **kwargs):
        if not attention_fallback.xla_only_active():
            raise jax.errors.JaxRuntimeError(REFUSAL)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(jax.stages.Lowered, "compile", compile)
    logged = []
    monkeypatch.setattr(attention_fallback.logging, "warning",
                        lambda *a: logged.append(a[0] % a[1:]))
    return logged


def test_auto_takes_xla_while_the_fallback_traces(monkeypatch):
    fake.fake_nvidia_gpu(monkeypatch)
    q = jax.ShapeDtypeStruct((2, 64, 4, 40), jnp.bfloat16)

    def kernels():  # a fresh function: JAX caches traces per function
        attend = lambda q: layers.attend(q, q, q, implementation="auto")
        return fake.primitives(jax.make_jaxpr(attend)(q)) & {"dot_product_attention_fwd_wrapper"}

    assert kernels()
    with attention_fallback.xla_only():
        assert not kernels()


def test_a_refused_program_is_traced_again_and_runs(cudnn_refuses):
    traces = []

    def lower():  # a fresh function each call, as the builders make
        def f(x):
            traces.append(attention_fallback.xla_only_active())
            return x * 2
        return jax.jit(f).lower(jnp.ones(3))

    compiled = attention_fallback.compile_program(lower, "prog")
    np.testing.assert_array_equal(compiled(jnp.ones(3)), 2 * np.ones(3))
    assert traces == [False, True]
    assert len(cudnn_refuses) == 1 and cudnn_refuses[0].startswith("prog: cuDNN refused")


def test_other_compile_errors_are_not_swallowed(monkeypatch):
    def compile(self, *a, **k):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory")

    monkeypatch.setattr(jax.stages.Lowered, "compile", compile)
    with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED"):
        attention_fallback.compile_program(lambda: jax.jit(jnp.sin).lower(1.0), "prog")


def test_the_train_step_falls_back_and_trains(cudnn_refuses, tmp_path):
    from train.toy_stage import make_stage

    from nuwa_xl_jax import parallel
    from nuwa_xl_jax.configuration import train as train_config
    from nuwa_xl_jax.train import loop

    cfg = train_config.train_block()
    cfg.update(steps=4, batch_size=8, learning_rate=0.05, warmup_steps=0, log_every=1,
               checkpoint_every=4, async_checkpoints=False)
    r = loop.train(make_stage(), cfg, str(tmp_path), parallel.make_mesh((-1, 2)), progress=False)
    assert r.step == 4 and np.isfinite(r.losses).all()
    assert [line.split(":")[0] for line in cudnn_refuses] == ["toy/step"]


def test_the_level_program_falls_back_to_the_same_video(monkeypatch):
    from dod import test_engine as toy

    from nuwa_xl_jax.dod import compiled
    from nuwa_xl_jax.dod import plan as planlib

    plan = planlib.make_plan(toy.L, 2)
    mesh = toy.mesh_of(1)
    compiled.cache_of(toy.toy_denoise).clear()  # programs and executables built afresh
    plain = toy.run(plan, mesh, models=toy.models_for(2))
    compiled.cache_of(toy.toy_denoise).clear()
    logged = refuse_cudnn(monkeypatch)
    fallback = toy.run(plan, mesh, models=toy.models_for(2))
    assert logged and all("DoD level program" in line for line in logged)
    np.testing.assert_array_equal(np.asarray(fallback.latents), np.asarray(plain.latents))
