"""Attention implementations (models/layers.attend): XLA everywhere, cuDNN's flash kernel where the
hardware exists (the GPU test skips elsewhere), Pallas' TPU splash kernel in Pallas' interpreter on
CPU, and 'auto' choosing between them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax.models import layers

ON_NVIDIA = jax.devices()[0].platform == "gpu"


def qkv(dtype=jnp.float32, head_dim=40, seq=64, ctx=64, seed=0):
    r = np.random.default_rng(seed)
    shape = lambda s: (2, s, 4, head_dim)
    return tuple(jnp.asarray(r.normal(size=shape(n)), dtype) for n in (seq, ctx, ctx))


def reference(q, k, v):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("nqhd,nkhd->nhqk", q, k) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("nhqk,nkhd->nqhd", p, v)


@pytest.mark.parametrize("implementation", ["xla", "auto"])
def test_xla_and_auto_are_softmax_attention(implementation):
    q, k, v = qkv(ctx=7)  # cross-attention shapes: 64 queries, 7 prompt tokens
    out = jax.jit(lambda q, k, v: layers.attend(q, k, v, implementation=implementation))(q, k, v)
    np.testing.assert_allclose(np.asarray(out), reference(q, k, v), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head_dim,dtype,mask,applies", [
    (40, jnp.bfloat16, None, True), (80, jnp.bfloat16, None, True), (128, jnp.float16, None, True),
    (160, jnp.bfloat16, None, False),  # SD's deepest heads: XLA
    (40, jnp.float32, None, False), (44, jnp.bfloat16, None, False),
    (40, jnp.bfloat16, np.ones((1, 1, 4, 4), bool), False)])
def test_when_cudnn_applies(head_dim, dtype, mask, applies):
    assert layers.cudnn_applies(head_dim, dtype, mask) is applies


@pytest.mark.skipif(ON_NVIDIA, reason="checks the error off NVIDIA GPUs")
def test_cudnn_off_an_nvidia_gpu_is_a_clear_error():
    q, k, v = qkv(jnp.bfloat16)
    with pytest.raises(ValueError, match="attention='cudnn' needs an NVIDIA GPU.*use 'auto'"):
        layers.attend(q, k, v, implementation="cudnn")
    with pytest.raises(ValueError, match="'flash'.*'auto', 'xla', 'cudnn'"):
        layers.attend(q, k, v, implementation="flash")


@pytest.mark.skipif(not ON_NVIDIA, reason="cuDNN flash attention needs an NVIDIA GPU")
@pytest.mark.parametrize("head_dim,seq,ctx", [(40, 1024, 1024), (80, 256, 77), (64, 16, 16)])
def test_cudnn_equals_xla_in_bf16(head_dim, seq, ctx):
    q, k, v = qkv(jnp.bfloat16, head_dim, seq, ctx)
    run = lambda impl: np.asarray(
        jax.jit(lambda q, k, v: layers.attend(q, k, v, implementation=impl))(q, k, v), np.float32
    )
    np.testing.assert_allclose(run("cudnn"), run("xla"), atol=2e-2, rtol=2e-2)
    lowered = jax.jit(lambda q, k, v: layers.attend(q, k, v, implementation="auto")).lower(q, k, v)
    assert "cudnn" in lowered.compile().as_text().lower()  # 'auto' took the fused kernel


def tiny_mtd_block():
    """A two-level MTD block small enough for CPU tests, with cross-attention in both levels."""
    from nuwa_xl_jax.configuration import mtd_block
    c = mtd_block()
    c.block_out_channels = (32, 64)
    c.layers_per_block = 1
    c.attention_head_dim = 4
    c.cross_attention_dim = 16
    c.norm_num_groups = 8
    c.down_block_types = ("CrossAttnDownBlock2D", "DownBlock2D")
    c.up_block_types = ("UpBlock2D", "CrossAttnUpBlock2D")
    return c


def test_the_mtd_threads_its_attention_setting_to_every_attention():
    from nuwa_xl_jax.models.mtd import MTDUNet
    c = tiny_mtd_block()
    c.attention = "cudnn"  # with fp32 compute cuDNN never applies, so every backend refuses it
    m = MTDUNet.from_config(c)
    args = (jnp.zeros((1, 2, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 2, 3, 16)),
            jnp.zeros((1, 2, 8, 8, 4)), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="attention='cudnn'"):  # the setting reached a layer
        jax.eval_shape(m.init, jax.random.key(0), *args)
    c.attention = "xla"
    jax.eval_shape(MTDUNet.from_config(c).init, jax.random.key(0), *args)


# Pallas' TPU splash kernel: run here in Pallas' interpreter (interpret=True), the same kernel code
# a TPU compiles with Mosaic. Never run on a TPU by these tests; see docs/models.md.

@pytest.mark.parametrize("q_len,dtype,mask,applies", [
    (128, jnp.bfloat16, None, True), (4096, jnp.float32, None, True),
    (200, jnp.bfloat16, None, True),
    (16, jnp.bfloat16, None, False),  # temporal attention over 16 frames: XLA
    (128, jnp.float16, None, False), (128, jnp.bfloat16, np.ones((1, 1, 4, 4), bool), False)])
def test_when_splash_applies(q_len, dtype, mask, applies):
    assert layers.splash_applies(q_len, dtype, mask) is applies
    assert layers.splash_supports(dtype, mask) is (applies or q_len < 128)


@pytest.mark.parametrize("length,block,padded", [
    (16, 128, 128), (77, 128, 128), (128, 128, 128), (200, 256, 256), (384, 128, 384),
    (640, 128, 640), (1024, 512, 1024), (4096, 512, 4096), (1000, 512, 1024)])
def test_splash_pads_sequences_to_multiples_of_128_only(length, block, padded):
    assert layers.splash_block(length) == (block, padded)


def run_attention(fn, q, k, v):
    return np.asarray(jax.jit(fn)(q, k, v), np.float32)


@pytest.mark.parametrize("dtype,head_dim,seq,ctx,tol", [
    (jnp.float32, 40, 200, 77, 1e-5),    # SD's 40; queries and prompt keys both padded
    (jnp.float32, 160, 128, 128, 1e-5),  # SD's 160 (head dim padded to 256); no sequence padding
    (jnp.float32, 64, 16, 16, 1e-5),     # temporal shapes: 16 frames padded to one block
    (jnp.bfloat16, 80, 130, 130, 2e-2)])  # bf16; 130 -> 256 keys, 126 of them masked
def test_splash_interpreted_equals_xla(dtype, head_dim, seq, ctx, tol):
    q, k, v = qkv(dtype, head_dim, seq, ctx)
    out = run_attention(lambda q, k, v: layers.splash_attention(q, k, v, interpret=True), q, k, v)
    xla = run_attention(lambda q, k, v: layers.attend(q, k, v, implementation="xla"), q, k, v)
    np.testing.assert_allclose(out, xla, atol=tol, rtol=tol)
    if dtype == jnp.float32:
        np.testing.assert_allclose(out, reference(q, k, v), atol=tol, rtol=tol)


def test_splash_gradients_equal_xlas():
    q, k, v = (a[:1, :, :2] for a in qkv(jnp.float32, 40, 130, 77))  # one example, two heads
    loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))
    splash = jax.jit(
        jax.grad(loss(lambda *a: layers.splash_attention(*a, interpret=True)), (0, 1, 2))
    )
    xla = jax.grad(loss(lambda *a: layers.attend(*a, implementation="xla")), (0, 1, 2))
    for a, b in zip(splash(q, k, v), xla(q, k, v)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


def test_splash_is_shard_mapped_over_the_context_meshs_batch_axes():
    from nuwa_xl_jax import parallel
    mesh = parallel.make_mesh((4, 2))
    q, k, v = (jax.device_put(jnp.concatenate([a] * 4), parallel.batch_sharding(mesh, 4))
               for a in qkv(jnp.float32, 40, 130, 77, seed=1))  # N = 8: one example per device
    fn = jax.jit(lambda q, k, v: layers.splash_attention(q, k, v, interpret=True))
    assert layers.splash_shard_axes(8) is None  # no mesh context: called directly
    with jax.set_mesh(mesh):
        assert layers.splash_shard_axes(8) == ("data", "fsdp")
        assert layers.splash_shard_axes(6) is None  # 8 devices do not divide 6 examples
        assert "manual_computation" in fn.lower(q, k, v).as_text()
        out = np.asarray(fn(q, k, v))
    np.testing.assert_allclose(out, reference(q, k, v), atol=1e-5, rtol=1e-5)


def test_splash_where_it_cannot_run_is_a_clear_error(monkeypatch):
    q, k, v = qkv(jnp.bfloat16)
    if jax.devices()[0].platform != "tpu":
        with pytest.raises(
            ValueError,
            match=r"attention='splash' \(model.mtd.attention\) needs a TPU"
            r".*set model.mtd.attention='auto'",
        ):
            layers.attend(q, k, v, implementation="splash")
    monkeypatch.setattr(layers, "_on_tpu", lambda: True)
    with pytest.raises(ValueError, match=r"needs a TPU, bf16/fp32 inputs.*float16"):
        layers.attend(*(a.astype(jnp.float16) for a in (q, k, v)), implementation="splash")
    with pytest.raises(ValueError, match=r"and no mask.*mask True"):
        layers.attend(q, k, v, mask=jnp.ones((1, 1, 64, 64), bool), implementation="splash")


def test_auto_takes_splash_on_a_tpu_only_where_it_applies(monkeypatch):
    taken = []
    monkeypatch.setattr(layers, "splash_attention", lambda q, k, v: taken.append(q.shape) or q)
    auto = lambda q: layers.attend(q, q, q, implementation="auto")
    q128, q16 = qkv(seq=128)[0], qkv(seq=16)[0]
    auto(q128)
    assert taken == []  # on CPU (or GPU) 'auto' never takes splash
    monkeypatch.setattr(layers, "_on_tpu", lambda: True)  # pretend; the kernel itself is stubbed
    auto(q16)
    auto(q128.astype(jnp.float16))
    assert taken == []  # short queries and fp16 stay on XLA
    auto(q128)  # 8 devices and no mesh context: the kernel's work would not be split: XLA
    assert taken == []
    from nuwa_xl_jax import parallel
    with jax.set_mesh(parallel.make_mesh((2, 4))):
        auto(jnp.concatenate([q128] * 4))
    assert taken == [(8, 128, 4, 40)]
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    auto(q128)
    assert taken[-1] == (2, 128, 4, 40)  # one device: splash without a mesh


@pytest.mark.slow  # the MTD with every attention interpreted: ~1.5 min of CPU
def test_the_mtd_with_splash_equals_xla(monkeypatch):
    from nuwa_xl_jax.models.mtd import MTDUNet
    c = tiny_mtd_block()
    r = np.random.default_rng(0)
    args = tuple(jnp.asarray(r.normal(size=s), jnp.float32) for s in
                 [(1, 2, 8, 8, 4), (1,), (1, 2, 3, 16), (1, 2, 8, 8, 4), (1, 2)])
    c.attention = "xla"
    xla = MTDUNet.from_config(c)
    variables = xla.init(jax.random.key(0), *args)
    # make the temporal attentions' zero output projections non-zero so they count
    variables = jax.tree.map(lambda p: p + 0.05 * jnp.asarray(r.normal(size=p.shape), p.dtype),
                             variables)
    monkeypatch.setattr(layers, "_on_tpu", lambda: True)  # splash_attention then interprets
    c.attention = "splash"
    out = jax.jit(MTDUNet.from_config(c).apply)(variables, *args)
    np.testing.assert_allclose(np.asarray(out), np.asarray(jax.jit(xla.apply)(variables, *args)),
                               atol=1e-4, rtol=1e-4)
