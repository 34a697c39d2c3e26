"""Noise schedules: known values, q_sample statistics, eps / v conversions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax import configuration
from nuwa_xl_jax.diffusion import schedules as S


def test_scaled_linear_matches_stable_diffusion_endpoints():
    sch = S.make_schedule("scaled_linear", 1000, 0.00085, 0.012)
    assert sch.betas[0] == pytest.approx(0.00085, rel=1e-12)
    assert sch.betas[-1] == pytest.approx(0.012, rel=1e-12)
    # sqrt-space linear: the midpoint beta is the square of the mean of the square roots
    assert sch.betas[499] == pytest.approx(np.linspace(0.00085 ** .5, 0.012 ** .5, 1000)[499] ** 2)
    # SD v1's abar_T, the often quoted ~0.0047
    assert sch.alphas_cumprod[-1] == pytest.approx(0.004660, rel=1e-3)


@pytest.mark.interop
@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_alphas_cumprod_match_diffusers(name):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(beta_schedule={"cosine": "squaredcos_cap_v2"}.get(name, name),
                                  beta_start=0.00085, beta_end=0.012).alphas_cumprod.numpy()
    ours = S.make_schedule(name, 1000, 0.00085, 0.012).alphas_cumprod
    np.testing.assert_allclose(ours, ref, rtol=5e-5, atol=1e-7)  # diffusers computes in float32


def test_linear_and_monotone_alphas_cumprod():
    for name in S.SCHEDULES:
        sch = S.make_schedule(name, 1000, 1e-4, 0.02)
        a = sch.alphas_cumprod
        assert np.all(np.diff(a) < 0) and 0 < a[-1] < a[0] < 1, name
    lin = S.make_schedule("linear", 1000, 1e-4, 0.02)
    assert lin.betas[0] == pytest.approx(1e-4) and lin.betas[-1] == pytest.approx(0.02)
    assert lin.alphas_cumprod[-1] == pytest.approx(4.04e-5, rel=1e-2)  # DDPM's abar_T


def test_cosine_schedule_follows_its_formula():
    sch = S.make_schedule("cosine", 1000)
    s, t = 0.008, np.arange(1, 1001) / 1000
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    expected = f(t) / f(0)
    # equal to the closed form until the 0.999 beta clip bites at the very end
    np.testing.assert_allclose(sch.alphas_cumprod[:990], expected[:990], rtol=1e-10)
    assert sch.betas.max() <= 0.999
    # the property it was designed for: abar(T/2) = cos^2(pi/4 (1 + 2s)/(1 + s)) / f(0), ~ 0.49
    assert sch.alphas_cumprod[499] == pytest.approx(expected[499]) and 0.45 < expected[499] < 0.52


def test_q_sample_statistics_per_frame_t():
    sch = S.make_schedule("scaled_linear")
    key1, key2 = jax.random.split(jax.random.key(0))
    x0 = jnp.full((2, 3, 20000), 2.0)
    t = jnp.array([[0, 500, 999], [250, 750, 100]])
    xt = S.q_sample(sch, x0, t, jax.random.normal(key1, x0.shape))
    a = sch.alphas_cumprod[np.asarray(t)]
    np.testing.assert_allclose(np.asarray(xt.mean(-1)), 2 * np.sqrt(a), atol=0.03)
    np.testing.assert_allclose(np.asarray(xt.std(-1)), np.sqrt(1 - a), rtol=0.03, atol=2e-3)


@pytest.mark.parametrize("ptype", ["epsilon", "v"])
def test_target_and_conversion_round_trip(ptype):
    sch = S.make_schedule("cosine", 1000, prediction_type=ptype)
    k = jax.random.split(jax.random.key(1), 3)
    x0, eps = jax.random.normal(k[0], (4, 5, 3)), jax.random.normal(k[1], (4, 5, 3))
    t = jax.random.randint(k[2], (4, 5), 0, 1000)
    xt = S.q_sample(sch, x0, t, eps)
    target = S.training_target(sch, x0, eps, t)
    if ptype == "epsilon":
        np.testing.assert_array_equal(np.asarray(target), np.asarray(eps))
    else:
        a = jnp.asarray(sch.alphas_cumprod[np.asarray(t)], jnp.float32)[..., None]
        np.testing.assert_allclose(np.asarray(target),
                                   np.asarray(jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * x0), atol=1e-6)
    x0_hat, eps_hat = S.predict_x0_eps(sch, xt, t, target)
    np.testing.assert_allclose(
        np.asarray(eps_hat), np.asarray(eps), atol=2e-3 if ptype == "epsilon" else 1e-5
    )
    # eps -> x0 divides by sqrt(abar), ill-conditioned at t ~ T; v is well conditioned everywhere
    tol = 1e-5 if ptype == "v" else 0.5
    np.testing.assert_allclose(np.asarray(x0_hat), np.asarray(x0), atol=tol)


def test_bad_schedule_inputs():
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'.*linear"):
        S.make_schedule("quadratic")
    with pytest.raises(ValueError, match="unknown prediction_type 'x0'"):
        S.make_schedule("linear", prediction_type="x0")
    with pytest.raises(ValueError, match="betas .* must lie in"):
        S.make_schedule("linear", 10, 0.5, 1.5)
    sch = S.make_schedule("linear")
    with pytest.raises(ValueError, match="must prefix the data shape"):
        S.q_sample(sch, jnp.zeros((2, 3)), jnp.zeros((3,), jnp.int32), jnp.zeros((2, 3)))


def test_from_config_and_the_diffusion_block_checks():
    c = configuration.diffusion_block()
    sch = S.from_config(c)
    assert sch.name == "scaled_linear" and sch.num_train_timesteps == 1000
    for field, value, match in [("schedule", "quadratic", "diffusion.schedule"),
                                ("sampler", "euler", "diffusion.sampler.*ddpm"),
                                ("prediction_type", "x0", "diffusion.prediction_type"),
                                ("sample_steps", 2000, "sample_steps=2000 exceeds"),
                                ("beta_end", 0.0001, "beta_start"),
                                ("guidance_scale", 0.0, "guidance_scale"),
                                ("num_train_timesteps", 0, "num_train_timesteps")]:
        bad = configuration.diffusion_block()
        bad[field] = value
        with pytest.raises(configuration.ConfigError, match=match):
            configuration.DiffusionConfig.from_dict(bad)
