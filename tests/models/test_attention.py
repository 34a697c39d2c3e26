"""Attention implementations (models/layers.attend): XLA everywhere, cuDNN's flash kernel where the
hardware exists (the GPU test skips elsewhere), and 'auto' choosing between them."""
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
    run = lambda impl: np.asarray(jax.jit(lambda q, k, v: layers.attend(q, k, v, implementation=impl))(
        q, k, v), np.float32)
    np.testing.assert_allclose(run("cudnn"), run("xla"), atol=2e-2, rtol=2e-2)
    lowered = jax.jit(lambda q, k, v: layers.attend(q, k, v, implementation="auto")).lower(q, k, v)
    assert "cudnn" in lowered.compile().as_text().lower()  # 'auto' took the fused kernel


def test_the_mtd_threads_its_attention_setting_to_every_attention():
    from nuwa_xl_jax.configuration import mtd_block
    from nuwa_xl_jax.models.mtd import MTDUNet
    c = mtd_block()
    c.block_out_channels = (32, 64)
    c.layers_per_block = 1
    c.attention_head_dim = 4
    c.cross_attention_dim = 16
    c.norm_num_groups = 8
    c.down_block_types = ("CrossAttnDownBlock2D", "DownBlock2D")
    c.up_block_types = ("UpBlock2D", "CrossAttnUpBlock2D")
    c.attention = "cudnn"  # with fp32 compute cuDNN never applies, so every backend refuses it
    m = MTDUNet.from_config(c)
    args = (jnp.zeros((1, 2, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 2, 3, 16)),
            jnp.zeros((1, 2, 8, 8, 4)), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="attention='cudnn'"):  # the setting reached a layer
        jax.eval_shape(m.init, jax.random.key(0), *args)
    c.attention = "xla"
    jax.eval_shape(MTDUNet.from_config(c).init, jax.random.key(0), *args)
