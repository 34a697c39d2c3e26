"""T-KLVAE loss pieces: KL, hinge losses, the adaptive weight, PatchGAN shapes, LPIPS from a
file."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax.configuration.presets import vae_loss as vae_loss_config
from nuwa_xl_jax.models.discriminator import NLayerDiscriminator
from nuwa_xl_jax.models.lpips import VGG_STAGES
from nuwa_xl_jax.models.tklvae import DiagonalGaussian
from nuwa_xl_jax.train import vae_loss
from nuwa_xl_jax.weights.common import WeightsError
from nuwa_xl_jax.weights.lpips import load_lpips


def test_kl_is_zero_for_a_standard_normal_and_known_otherwise():
    zeros = jnp.zeros((2, 3, 4, 4, 4))
    assert float(vae_loss.kl_loss(zeros, zeros)) == 0.0
    # mean 1, logvar 0: 0.5 * 1 per element, 64 elements per frame.
    np.testing.assert_allclose(vae_loss.kl_loss(zeros + 1, zeros), 32.0, rtol=1e-6)
    # var e: 0.5 * (e - 1 - 1) per element.
    np.testing.assert_allclose(vae_loss.kl_loss(zeros, zeros + 1), 32.0 * (np.e - 2), rtol=1e-6)


def test_posterior_clips_logvar_and_samples_with_its_std():
    moments = jnp.concatenate([jnp.full((1, 1, 2, 2, 2), 3.0), jnp.full((1, 1, 2, 2, 2), 50.0)], -1)
    post = DiagonalGaussian.from_moments(moments)
    assert float(post.logvar.max()) == 20.0 and float(post.mode().mean()) == 3.0
    post = DiagonalGaussian(jnp.full((4000,), 2.0), jnp.full((4000,), np.log(0.25)))
    s = post.sample(jax.random.key(0))
    assert abs(float(s.mean()) - 2.0) < 0.05 and abs(float(s.std()) - 0.5) < 0.05


def test_hinge_and_generator_losses_known_values():
    real, fake = jnp.array([2.0, 0.5]), jnp.array([-2.0, 0.5])
    # 0.5 * (mean(0, 0.5) + mean(0, 1.5)) = 0.5
    np.testing.assert_allclose(vae_loss.hinge_discriminator_loss(real, fake), 0.5)
    assert float(vae_loss.hinge_discriminator_loss(real + 10, fake - 10)) == 0.0
    np.testing.assert_allclose(vae_loss.generator_loss(fake), 0.75)
    assert float(vae_loss.discriminator_factor(9, 10)) == 0.0
    assert float(vae_loss.discriminator_factor(10, 10)) == 1.0


def test_reconstruction_is_summed_per_frame_with_lpips_per_pixel():
    x = jnp.zeros((2, 3, 4, 4, 3))
    np.testing.assert_allclose(vae_loss.reconstruction_nll(x, x + 0.5), 0.5 * 48)
    lp = jnp.full((2, 3), 0.1)
    np.testing.assert_allclose(vae_loss.reconstruction_nll(x, x + 0.5, 2.0, lp, 1.0), 48 + 0.1 * 48,
                               rtol=1e-6)


def test_adaptive_weight_is_ratio_of_last_layer_gradient_norms():
    z = jnp.array([1.0, -2.0, 3.0])
    x = jnp.array([0.5, 0.5, 0.5])
    c = jnp.array([1.0, 2.0, -1.0])
    params = {
        "decoder": {"conv_out": {"kernel": jnp.array([2.0, 1.0, -1.0])}, "other": jnp.ones(3)}
    }
    decode = lambda p: p["decoder"]["conv_out"]["kernel"] * z * p["decoder"]["other"]
    nll = lambda r: jnp.sum(jnp.square(r - x))
    gen = lambda r: -jnp.sum(r * c)
    g_nll, g_gen = vae_loss.last_layer_grads(decode, params, [nll, gen])
    w = params["decoder"]["conv_out"]["kernel"]
    np.testing.assert_allclose(g_nll, 2 * (w * z - x) * z, rtol=1e-6)
    np.testing.assert_allclose(g_gen, -c * z, rtol=1e-6)
    expected = np.linalg.norm(2 * (w * z - x) * z) / (np.linalg.norm(c * z) + 1e-4)
    weight = jax.jit(vae_loss.adaptive_weight)(g_nll, g_gen, 0.5)
    np.testing.assert_allclose(weight, 0.5 * expected, rtol=1e-5)
    # The weight is a constant for the optimiser.
    assert float(jax.grad(lambda a: vae_loss.adaptive_weight(a, g_gen))(g_nll).sum()) == 0.0
    assert float(vae_loss.adaptive_weight(g_nll, jnp.zeros(3))) == 1e4  # clipped


def test_generator_objective_switches_gan_term_on_at_disc_start():
    cfg = vae_loss_config()
    cfg.disc_start = 5
    x = jnp.zeros((1, 2, 4, 4, 3))
    mean, logvar = jnp.ones((1, 2, 2, 2, 4)), jnp.zeros((1, 2, 2, 2, 4))
    logits = jnp.full((1, 2, 1, 1, 1), -1.0)
    before, parts = vae_loss.generator_objective(cfg, x, x + 0.1, mean, logvar, logits, 4, 2.0)
    after, _ = jax.jit(
        lambda s: vae_loss.generator_objective(cfg, x, x + 0.1, mean, logvar, logits, s, 2.0)
    )(5)
    np.testing.assert_allclose(before, parts["nll"] + 1e-6 * parts["kl"], rtol=1e-6)
    np.testing.assert_allclose(after - before, 2.0 * 1.0, rtol=1e-5)
    plain, plain_parts = vae_loss.autoencoder_loss(x, x + 0.1, mean, logvar, cfg)
    np.testing.assert_allclose(plain, before, rtol=1e-6)
    np.testing.assert_allclose(plain_parts["kl"], 0.5 * 16, rtol=1e-6)  # mean 1: 0.5 per latent
    d_before, _ = vae_loss.discriminator_objective(cfg, logits, logits, 4)
    d_after, _ = vae_loss.discriminator_objective(cfg, logits, logits, 5)
    assert float(d_before) == 0.0 and float(d_after) == 1.0


def test_patchgan_is_per_frame_with_patch_logits():
    disc = NLayerDiscriminator(num_layers=3, channels=8)
    video = jax.random.uniform(jax.random.key(0), (2, 3, 32, 32, 3), minval=-1, maxval=1)
    variables = jax.jit(disc.init)(jax.random.key(1, impl="rbg"), video)
    logits, updates = jax.jit(lambda v, x: disc.apply(v, x, mutable=["batch_stats"]))(
        variables, video
    )
    assert logits.shape == (2, 3, 2, 2, 1)  # 32 -> 16 -> 8 -> 4 -> 3 -> 2
    assert "batch_stats" in updates
    frames = video.reshape(6, 32, 32, 3)
    judge = jax.jit(lambda v, x: disc.apply(v, x, train=False))
    eval_logits = judge(variables, frames)
    assert eval_logits.shape == (6, 2, 2, 1)
    changed = judge(variables, frames.at[0].set(0.0))
    assert np.abs(np.asarray(changed - eval_logits))[1:].max() == 0  # frames judged independently
    with pytest.raises(ValueError, match="discriminator input must be"):
        disc.apply(variables, video[0, 0])


def _write_fake_lpips(path, widths=(4, 8, 8, 8, 8), drop=None, fmt="npz"):
    rng = np.random.default_rng(0)
    tensors, cin = {}, 3
    for k, (indices, width) in enumerate(zip(VGG_STAGES, widths)):
        for i in indices:
            tensors[f"features.{i}.weight"] = rng.normal(0, 0.3, (width, cin, 3, 3)).astype(
                np.float32
            )
            tensors[f"features.{i}.bias"] = rng.normal(0, 0.1, (width,)).astype(np.float32)
            cin = width
        tensors[f"lin{k}.model.1.weight"] = np.abs(rng.normal(size=(1, width, 1, 1))).astype(
            np.float32
        )
    tensors.pop(drop, None)
    if fmt == "npz":
        np.savez(path, **tensors)
    else:
        from safetensors.numpy import save_file
        save_file(tensors, str(path))
    return str(path)


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_lpips_from_local_file_is_zero_only_for_identical_images(tmp_path, fmt):
    module, variables = load_lpips(_write_fake_lpips(tmp_path / f"lpips.{fmt}", fmt=fmt))
    x = jax.random.uniform(jax.random.key(0), (2, 3, 32, 32, 3), minval=-1, maxval=1)
    y = x + 0.2 * jax.random.normal(jax.random.key(1), x.shape)
    distance = jax.jit(module.apply)
    same = distance(variables, x, x)
    diff = distance(variables, x, y)
    assert same.shape == (2, 3) and float(jnp.abs(same).max()) < 1e-6
    assert float(diff.min()) > 1e-3


def test_lpips_file_errors_are_clear(tmp_path):
    with pytest.raises(
        WeightsError, match=r"LPIPS weights file .*nope.npz' not found; set vae_loss.lpips_path"
    ):
        load_lpips(str(tmp_path / "nope.npz"))
    cfg = vae_loss_config()
    cfg.lpips_path = str(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        vae_loss.make_lpips(cfg)
    cfg.lpips_path = ""
    assert vae_loss.make_lpips(cfg) is None
    bad = _write_fake_lpips(tmp_path / "bad.npz", drop="lin3.model.1.weight")
    with pytest.raises(WeightsError, match=r"missing lin3.model.1.weight"):
        load_lpips(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(WeightsError, match="cannot read LPIPS weights"):
        load_lpips(str(tmp_path / "junk.safetensors"))


@pytest.mark.slow
def test_gan_generator_step_with_adaptive_weight_jits_on_the_tklvae():
    from nuwa_xl_jax.configuration.presets import vae as vae_config
    from nuwa_xl_jax.models.tklvae import TKLVAE

    cfg = vae_config("tiny")
    cfg.block_out_channels, cfg.norm_num_groups = (8, 16), 4
    vae, disc = TKLVAE.from_config(cfg), NLayerDiscriminator(num_layers=2, channels=8)
    loss_cfg = vae_loss_config()
    loss_cfg.disc_start = 0
    video = jax.random.uniform(jax.random.key(0), (1, 2, 16, 16, 3), minval=-1, maxval=1)
    from flax.linen import meta
    params = meta.unbox(jax.jit(vae.init)(jax.random.key(1, impl="rbg"), video)["params"])
    disc_vars = jax.jit(disc.init)(jax.random.key(2, impl="rbg"), video)
    judge = lambda r: disc.apply(disc_vars, r, train=False)

    @jax.jit
    def step(params, key):
        def loss(params):
            mean, logvar = vae.apply({"params": params}, video, method="encode")
            z = DiagonalGaussian(mean, logvar).sample(key)
            decode = lambda p: vae.apply({"params": p}, z, method="decode")
            recon = decode(params)
            g_nll, g_gen = vae_loss.last_layer_grads(
                decode, params, [lambda r: vae_loss.reconstruction_nll(video, r),
                                 lambda r: vae_loss.generator_loss(judge(r))])
            d_weight = vae_loss.adaptive_weight(g_nll, g_gen, loss_cfg.disc_weight)
            return vae_loss.generator_objective(loss_cfg, video, recon, mean, logvar, judge(recon),
                                                1, d_weight)
        return jax.value_and_grad(loss, has_aux=True)(params)

    (total, parts), grads = step(params, jax.random.key(3))
    assert np.isfinite(float(total)) and float(parts["d_weight"]) > 0
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["encoder"]["conv_in"]["kernel"]).max()) > 0
