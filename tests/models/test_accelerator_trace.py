"""Accelerators proven by simulation (docs/DESIGN.md): on CPU, with JAX's GPU probes and our
platform checks patched (tests/fake_accelerators.py), the SD-size MTD in bf16 with attention
'auto' traces forward and gradient on an NVIDIA GPU, and the DoD level program (vmap over segments,
guidance) traces too; attention programs lower for 'cuda'. Trace and lower only, never compile."""
import fake_accelerators as fake
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax.configuration import presets
from nuwa_xl_jax.models import layers
from nuwa_xl_jax.models.mtd import MTDUNet

CUDNN = {"dot_product_attention_fwd_wrapper", "dot_product_attention_fwd"}


def bf16(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.bfloat16)


def attention_loss(q, k, v):
    return layers.attend(q, k, v, implementation="auto").astype(jnp.float32).sum()


@pytest.mark.parametrize("q_len,kv_len", [(256, 77), (15, 15), (1024, 1024)])
def test_cudnn_gradient_traces_at_any_length(monkeypatch, q_len, kv_len):
    """JAX's backward rule needs even lengths (it passes a placeholder bias): 77 prompt tokens and
    odd frame counts are padded and masked, and cuDNN is still the kernel."""
    fake.fake_nvidia_gpu(monkeypatch)
    q, k = bf16(2, q_len, 8, 40), bf16(2, kv_len, 8, 40)
    grads = jax.eval_shape(jax.grad(attention_loss, (0, 1, 2)), q, k, k)
    assert [g.shape for g in grads] == [q.shape, k.shape, k.shape]
    jaxpr = jax.make_jaxpr(jax.grad(attention_loss, (0, 1, 2)))(q, k, k)
    assert fake.primitives(jaxpr) & CUDNN


def test_cudnn_padding_equals_xla():
    """The padded, length-masked inputs give XLA's attention on the real ones (run through XLA
    with the same padding and lengths, which is what the cuDNN kernel computes)."""
    r = np.random.default_rng(0)
    q, k, v = (jnp.asarray(r.normal(size=(2, n, 2, 8)), jnp.float32) for n in (15, 77, 77))
    pad = lambda t: jnp.pad(t, ((0, 0), (0, 1), (0, 0), (0, 0)))
    lengths = lambda n: jnp.full((2,), n, jnp.int32)
    padded = jax.nn.dot_product_attention(pad(q), pad(k), pad(v), query_seq_lengths=lengths(15),
                                          key_value_seq_lengths=lengths(77))[:, :15]
    np.testing.assert_allclose(padded, jax.nn.dot_product_attention(q, k, v), atol=1e-6)


@pytest.mark.parametrize("capability,head_dim,cudnn", [
    (fake.HOPPER, 160, True), (fake.AMPERE, 160, False), (fake.AMPERE, 80, True)])
def test_head_dim_cap_follows_the_gpu_generation(monkeypatch, capability, head_dim, cudnn):
    fake.fake_nvidia_gpu(monkeypatch, capability)
    assert layers.cudnn_max_head_dim() == (256 if capability >= (9, 0) else 128)
    q = bf16(2, 64, 4, head_dim)
    jaxpr = jax.make_jaxpr(jax.grad(attention_loss, (0, 1, 2)))(q, q, q)
    assert bool(fake.primitives(jaxpr) & CUDNN) is cudnn


def test_a_shape_cudnn_refuses_falls_back_to_xla_with_one_log_line(monkeypatch):
    fake.fake_nvidia_gpu(monkeypatch)
    from jax._src.cudnn import fused_attention_stablehlo as jax_cudnn

    def refuse(*a, **k):
        raise NotImplementedError("a rule of a newer cuDNN")

    monkeypatch.setattr(jax_cudnn, "check_is_flash_attention", refuse)
    logged = []
    monkeypatch.setattr(layers.logging, "warning", lambda *a: logged.append(a))
    q = bf16(2, 64, 4, 40)
    for _ in range(2):
        jaxpr = jax.make_jaxpr(jax.grad(attention_loss, (0, 1, 2)))(q, q, q)
    assert not fake.primitives(jaxpr) & CUDNN
    assert len(logged) == 1 and "XLA attention instead" in logged[0][0]


def test_attention_gradient_lowers_for_cuda(monkeypatch):
    """Lowered for the 'cuda' platform from CPU: the cuDNN custom calls (forward and backward)
    are in the module, with the padded 78-token keys."""
    fake.fake_nvidia_gpu(monkeypatch)
    def loss(q, k, v):
        return layers.cudnn_attention(q, k, v).astype(jnp.float32).sum()

    q, k = bf16(2, 256, 8, 40), bf16(2, 77, 8, 40)
    lowered = jax.jit(jax.grad(loss, (0, 1, 2))).trace(q, k, k).lower(
        lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert "__cudnn$fmha" in text and "Backward" in text and "78x8x40" in text


def sd_mtd(frames: int = 16):
    c = presets.mtd("sd")
    c.dtype = "bfloat16"
    c.attention = "auto"
    return MTDUNet.from_config(c)


def sd_inputs(batch: int = 1, frames: int = 16, latent: int = 16):
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    x = f32(batch, frames, latent, latent, 4)
    return (x, jax.ShapeDtypeStruct((batch,), jnp.int32), f32(batch, frames, 77, 768), x,
            f32(batch, frames))


@pytest.mark.parametrize("capability", [fake.HOPPER, fake.AMPERE])
def test_sd_mtd_bf16_auto_traces_forward_and_gradient_on_a_gpu(monkeypatch, capability):
    fake.fake_nvidia_gpu(monkeypatch, capability)
    model, args = sd_mtd(), sd_inputs()
    params = jax.eval_shape(model.init, jax.random.key(0), *args)

    def loss(p, x, t, states, cond, mask):
        return jnp.mean(jnp.square(model.apply(p, x, t, states, cond, mask).astype(jnp.float32)))

    out = jax.eval_shape(model.apply, params, *args)
    assert out.shape == args[0].shape
    jaxpr = jax.make_jaxpr(jax.grad(loss))(params, *args)
    assert fake.primitives(jaxpr) >= {"dot_product_attention_fwd_wrapper",
                                      "dot_product_attention_bwd_wrapper"}


def test_sd_level_program_traces_under_vmap_with_guidance_on_a_gpu(monkeypatch):
    """The DoD level program (vmap over segments, classifier-free guidance) at SD size."""
    fake.fake_nvidia_gpu(monkeypatch)
    program, args = sd_level_program()
    jaxpr = jax.make_jaxpr(program)(*args)
    assert "dot_product_attention_fwd_wrapper" in fake.primitives(jaxpr)


def sd_level_program(guidance: float = 7.5, mesh=None):
    """The SD-size level program (128 px, L=16, CLIP-L text states) and abstract arguments for
    two segments."""
    from nuwa_xl_jax import configuration, parallel
    from nuwa_xl_jax.diffusion import samplers
    from nuwa_xl_jax.dod import segments
    from nuwa_xl_jax.family import MTDModels

    config = configuration.load("configs/synthetic.py")
    with config.unlocked():
        config.model.mtd = presets.mtd("sd")
        config.model.mtd.dtype = "bfloat16"
        config.model.text = presets.text("clip-l")
        config.model.text.tokenizer = "word"
        config.model.vae = presets.vae("sd")
        config.data.resolution = (128, 128)
        config.data.max_length = 77
    m = MTDModels(config, None, vae_params={})
    L = config.data.frames_per_call
    params = jax.eval_shape(lambda k: m.init(k, L), jax.random.key(0))
    mesh = mesh or parallel.make_mesh(devices=jax.devices()[:1])
    sampling = samplers.Settings("ddim", 2, guidance)
    program = segments._level_program(m, m.schedule, sampling, mesh, False)
    T, C = m.null_ids.shape[0], 8
    table = jax.eval_shape(m.encode_prompts, params, jnp.zeros((8, T), jnp.int32))
    args = (params, jax.random.key(0), jnp.zeros(C, jnp.uint32), table,
            jnp.zeros((C, L), jnp.int32), jnp.zeros((C, L, *m.latent_shape)), jnp.zeros((C, L)),
            jnp.zeros(C, jnp.int32))
    return program, args


def test_sd_level_program_takes_splash_on_a_tpu_pod(monkeypatch):
    """On 8 TPU chips 'auto' takes splash in the level program, shard_mapped over the mesh the
    engine runs on (it sets it as the context mesh while tracing): traced with the real kernel
    (Pallas' interpreter stands in for Mosaic)."""
    from nuwa_xl_jax import parallel
    fake.fake_tpu(monkeypatch)
    program, args = sd_level_program(mesh=parallel.make_mesh((2, 4)))
    names = fake.primitives(jax.make_jaxpr(program)(*args))
    assert {"shard_map", "pallas_call"} <= names, names


def test_sd_level_program_lowers_for_cuda(monkeypatch):
    """The guided SD-size level program lowered for 'cuda' from CPU: platform-only rules (cuDNN's
    custom calls and their layouts) are checked here, not first on a GPU."""
    fake.fake_nvidia_gpu(monkeypatch)
    program, args = sd_level_program()
    text = program.trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    assert "__cudnn$fmha" in text


def test_sd_level_program_lowers_for_tpu_with_the_mosaic_kernel(monkeypatch):
    """The guided SD-size level program on 8 TPU chips lowered for 'tpu' from CPU, with the real
    splash kernel (Mosaic, not the interpreter): its TPU-only lowering rules run here."""
    from nuwa_xl_jax import parallel
    fake.fake_tpu(monkeypatch, mosaic=True)
    program, args = sd_level_program(mesh=parallel.make_mesh((2, 4)))
    text = program.trace(*args).lower(lowering_platforms=("tpu",)).as_text()
    assert "tpu_custom_call" in text


def test_sd_mtd_gradient_lowers_for_cuda_under_fsdp(monkeypatch):
    """The SD-size MTD's bf16 gradient, FSDP over 8 devices (flintstones' mesh), lowered for
    'cuda'. On a mesh JAX's cuDNN attention is a custom-partitioned call whose partitioning rules
    (q, k and v sharded alike) run only when XLA compiles: what lowering can check, it does."""
    import flax.linen as nn

    from nuwa_xl_jax import parallel
    fake.fake_nvidia_gpu(monkeypatch)
    mesh = parallel.make_mesh((1, -1))
    model, args = sd_mtd(), sd_inputs(batch=8)
    boxed = jax.eval_shape(model.init, jax.random.key(0), *args)
    shardings = parallel.tree_shardings(boxed, mesh)
    params = nn.meta.unbox(boxed)

    def loss(p, x, t, states, cond, mask):
        return jnp.mean(jnp.square(model.apply(p, x, t, states, cond, mask).astype(jnp.float32)))

    batch = tuple(parallel.batch_sharding(mesh, len(a.shape)) for a in args)
    step = jax.jit(parallel.under_mesh(jax.grad(loss), mesh), in_shardings=(shardings, *batch),
                   out_shardings=shardings)
    text = step.trace(params, *args).lower(lowering_platforms=("cuda",)).as_text()
    assert "CustomSPMDPartitioning" in text  # cuDNN's forward and backward, partitioned later
