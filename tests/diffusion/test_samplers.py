"""Samplers on Gaussian data, where the exact denoiser is known in closed form.

For x0 ~ N(mu, s^2) (per dimension) and x_t = sqrt(a) x0 + sqrt(1 - a) eps, a = abar_t:
  E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a)
  E[x0 | x_t]  = mu + sqrt(a) s^2 (x_t - sqrt(a) mu) / (a s^2 + 1 - a)
A sampler driven by these must return samples with mean mu and std s. Data: 8192 samples of
4 dims with spreads 0.1 .. 2, DDPM's linear schedule (abar_T = 4e-5, so x_T ~ N(0, I) holds),
starting noise standardised per dim so that what is measured is the sampler, not the seed.

Stated tolerances: |mean - mu| <= 0.03 s, and |std / s - 1| <= TOL[sampler]:
- DDPM-1000: 6%. Its reverse variance beta_tilde ignores Var(x0 | x_t), so it shrinks narrow data:
  measured -4.8% for s = 0.1, -1.4% for s = 0.5, < 1% for s >= 1 (plus ~0.8% sampling noise).
- DDIM-50: 6%. First-order steps of dlambda on the log-SNR grid shrink by ~exp(-dlambda / 4):
  dlambda = 9.6 / 49 gives -4.8%, measured -4.8% on every dim.
- DPM-Solver++(2M)-20: 5% (second order; measured within 2.5%).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax.diffusion import samplers as M
from nuwa_xl_jax.diffusion import schedules as S

MU = jnp.array([1.5, -1.0, 0.0, 0.5])
SD = jnp.array([0.5, 1.0, 2.0, 0.1])
N = 8192
TOL = {"ddpm": 0.06, "ddim": 0.06, "dpm++2m": 0.05}


def exact_model(schedule):
    abar = schedule.table("alphas_cumprod")

    def model(x, t, mu=None):
        mu = MU if mu is None else mu
        a = abar[t][:, None]
        d = a * SD ** 2 + 1 - a
        eps = jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / d
        if schedule.prediction_type == "epsilon":
            return eps
        x0 = mu + jnp.sqrt(a) * SD ** 2 * (x - jnp.sqrt(a) * mu) / d
        return jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * x0

    return model


def standard_noise(shape, seed=0):
    z = np.random.default_rng(seed).standard_normal(shape)
    return jnp.asarray((z - z.mean(0)) / z.std(0), jnp.float32)


@pytest.mark.parametrize("name,steps,ptype", [("ddpm", 1000, "epsilon"), ("ddim", 50, "epsilon"),
                                              ("dpm++2m", 20, "epsilon"), ("dpm++2m", 20, "v"),
                                              ("ddim", 50, "v")])
def test_known_answer_gaussian(name, steps, ptype):
    sch = S.make_schedule("linear", 1000, 1e-4, 0.02, ptype)
    x = M.sample(name, exact_model(sch), sch, jax.random.key(0), (N, 4), steps=steps,
                 x_T=standard_noise((N, 4)))
    mean_err = np.asarray((x.mean(0) - MU) / SD)
    std_err = np.asarray(x.std(0) / SD - 1)
    print(
        f"{name}-{steps} ({ptype}): (mean-mu)/s {np.round(mean_err, 4)}, std/s-1 "
        f"{np.round(std_err, 4)}"
    )
    assert np.all(np.abs(mean_err) <= 0.03), mean_err
    assert np.all(np.abs(std_err) <= TOL[name]), std_err


def test_evenly_spaced_t_is_worse_for_dpm_solver():
    """Why 'logsnr' is DPM-Solver++'s default grid (see samplers.timesteps)."""
    sch = S.make_schedule("linear", 1000, 1e-4, 0.02)
    errs = {}
    for spacing in ("linspace", "logsnr"):
        x = M.sample("dpm++2m", exact_model(sch), sch, jax.random.key(0), (N, 4), steps=20,
                     spacing=spacing, x_T=standard_noise((N, 4)))
        errs[spacing] = float(np.abs(np.asarray(x.std(0) / SD - 1)).max())
    assert errs["logsnr"] < 0.05 < 0.1 < errs["linspace"], errs


def test_one_scan_not_a_python_loop():
    sch = S.make_schedule("linear", 1000, 1e-4, 0.02)
    traced = []
    inner = exact_model(sch)

    def model(x, t):
        traced.append(x.shape)
        return inner(x, t)

    M.sample("ddim", model, sch, jax.random.key(0), (16, 4), steps=50)
    assert len(traced) == 1  # the model is traced once for all 50 steps


def test_guidance_scale_one_is_the_conditional_model_exactly():
    sch = S.make_schedule("linear", 1000, 1e-4, 0.02)
    model = exact_model(sch)
    cond = {"mu": jnp.broadcast_to(MU, (64, 4))}
    null = {"mu": jnp.zeros((4,))}
    for name in ("ddpm", "ddim", "dpm++2m"):
        plain = M.sample(name, model, sch, jax.random.key(3), (64, 4), steps=20, cond=cond)
        guided = M.sample(name, model, sch, jax.random.key(3), (64, 4), steps=20, cond=cond,
                          null_cond=null, guidance_scale=1.0)
        np.testing.assert_array_equal(np.asarray(plain), np.asarray(guided))


def test_guidance_known_answer_and_one_batched_call():
    """eps* is affine in mu, so eps_u + g (eps_c - eps_u) is the exact eps of N(mu_u + g (mu_c -
    mu_u), s^2): guided samples must have that mean. The model sees [cond; null] in ONE call."""
    sch = S.make_schedule("linear", 1000, 1e-4, 0.02)
    inner = exact_model(sch)
    batches = []

    def model(x, t, mu):
        batches.append(x.shape[0])
        return inner(x, t, mu)

    mu_c, mu_u, g = MU, jnp.array([1.0, 0.0, 0.5, 0.4]), 2.5
    x = M.sample("dpm++2m", model, sch, jax.random.key(0), (N, 4), steps=20,
                 cond={"mu": jnp.broadcast_to(mu_c, (N, 4))}, null_cond={"mu": mu_u},
                 guidance_scale=g, x_T=standard_noise((N, 4)))
    assert batches == [2 * N]
    target = mu_u + g * (mu_c - mu_u)
    mean_err = np.asarray((x.mean(0) - target) / SD)
    assert np.all(np.abs(mean_err) <= 0.03), mean_err
    assert np.all(np.abs(np.asarray(x.std(0) / SD - 1)) <= 0.05)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm++2m"])
def test_given_frames_come_back_exactly(name):
    sch = S.make_schedule("scaled_linear", 1000)
    b, f = 3, 6
    given = jax.random.normal(jax.random.key(1), (b, f, 2, 2, 4)) * 3.0
    mask = jnp.zeros((b, f)).at[:, 0].set(1).at[:, -1].set(1)

    def model(x, t):  # a denoiser that mixes frames, so given frames influence the others
        return 0.5 * x + 0.1 * jnp.roll(x, 1, axis=1)

    x = M.sample(name, model, sch, jax.random.key(0), (b, f, 2, 2, 4), steps=10,
                 given=given * mask[..., None, None, None], mask=mask)
    np.testing.assert_array_equal(np.asarray(x[:, 0]), np.asarray(given[:, 0]))
    np.testing.assert_array_equal(np.asarray(x[:, -1]), np.asarray(given[:, -1]))
    assert not np.allclose(np.asarray(x[:, 1:-1]), 0.0)


def test_given_frames_seen_clean_with_given_t():
    sch = S.make_schedule("linear", 1000)
    b, f = 2, 4
    given = jnp.full((b, f, 3), 7.0)
    mask = jnp.array([[1, 0, 0, 1], [1, 1, 0, 0]], jnp.float32)
    seen = []

    def model(x, t):
        jax.debug.callback(lambda x, t: seen.append((np.asarray(x), np.asarray(t))), x, t)
        return jnp.zeros_like(x)

    M.sample("ddim", model, sch, jax.random.key(0), (b, f, 3), steps=3, given=given, mask=mask,
             given_t=0)
    jax.effects_barrier()
    assert len(seen) == 3
    m = np.asarray(mask, bool)
    expected_t = M.timesteps(sch, 3, "logsnr")
    for (x, t), step_t in zip(seen, expected_t):
        assert t.shape == (b, f)
        assert np.all(t[m] == 0) and np.all(t[~m] == step_t)
        assert np.all(x[m] == 7.0) and not np.any(x[~m] == 7.0)


def test_bad_input_errors():
    sch = S.make_schedule("linear", 1000)
    model = lambda x, t, **c: x
    key = jax.random.key(0)
    with pytest.raises(
        ValueError, match=r"unknown sampler 'euler'; choose one of ddpm, ddim, dpm\+\+2m"
    ):
        M.sample("euler", model, sch, key, (2, 3))
    with pytest.raises(ValueError, match="steps must be an integer in"):
        M.sample("ddim", model, sch, key, (2, 3), steps=1001)
    with pytest.raises(
        ValueError, match=r"given has shape \(2, 5, 3\) but x has shape \(2, 4, 3\)"
    ):
        M.sample(
            "ddim", model, sch, key, (2, 4, 3), given=jnp.zeros((2, 5, 3)), mask=jnp.ones((2, 5))
        )
    with pytest.raises(ValueError, match="mask of shape .* must prefix"):
        M.sample(
            "ddim", model, sch, key, (2, 4, 3), given=jnp.zeros((2, 4, 3)), mask=jnp.ones((2, 5))
        )
    with pytest.raises(ValueError, match="need both"):
        M.sample("ddim", model, sch, key, (2, 4, 3), mask=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"cond\['text'\] .* batch 2"):
        M.sample("ddim", model, sch, key, (2, 4, 3), cond={"text": jnp.zeros((3, 4, 5))})
    with pytest.raises(ValueError, match="null_cond has keys"):
        M.sample("ddim", model, sch, key, (2, 3), cond={"a": jnp.zeros((2, 1))},
                 null_cond={"b": jnp.zeros(1)}, guidance_scale=2.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        M.sample("ddim", model, sch, key, (2, 3), cond={"a": jnp.zeros((2, 4))},
                 null_cond={"a": jnp.zeros(3)}, guidance_scale=2.0)
    with pytest.raises(ValueError, match="eta is a DDIM setting"):
        M.sample("ddpm", model, sch, key, (2, 3), eta=0.5)
    with pytest.raises(ValueError, match="unknown timestep spacing"):
        M.sample("ddim", model, sch, key, (2, 3), spacing="karras")
    with pytest.raises(ValueError, match="given_t needs a mask"):
        M.sample("ddim", model, sch, key, (2, 3), given_t=0)


def test_ddim_eta_one_is_ddpm_variance_and_config_kwargs():
    sch = S.make_schedule("scaled_linear")
    ts = M.timesteps(sch, 25)
    ddpm, ddim1 = M.ddpm_table(sch, ts), M.ddim_table(sch, ts, 1.0)
    np.testing.assert_allclose(ddim1[:, 6], ddpm[:, 6], rtol=1e-12)  # sigma = sqrt(beta_tilde)
    np.testing.assert_allclose(M.ddim_table(sch, ts, 0.0)[:, 6], 0.0)
    from nuwa_xl_jax import configuration
    c = configuration.diffusion_block()
    c.sampler, c.ddim_eta = "ddim", 0.3
    assert M.config_kwargs(c) == dict(name="ddim", steps=50, guidance_scale=1.0, eta=0.3)


def test_the_default_step_count_is_written_once(monkeypatch):
    """The sampler loop and the settings check read one default (DDIM and DPM-Solver++ run
    DEFAULT_STEPS model calls when no number is given; DDPM its whole chain)."""
    sch = S.make_schedule("linear", num_train_timesteps=20)
    monkeypatch.setattr(M, "DEFAULT_STEPS", 30)  # more than the schedule has: both must refuse
    with pytest.raises(ValueError, match=r"num_train_timesteps=20\], got 30"):
        M.Settings("ddim").check(sch)
    with pytest.raises(ValueError, match=r"num_train_timesteps=20\], got 30"):
        M.sample("ddim", lambda x, t: x, sch, jax.random.key(0), (1, 2))
    M.Settings("ddpm").check(sch)  # DDPM: every training timestep, whatever DEFAULT_STEPS says
    assert M.default_steps("ddpm", sch) == 20 and M.default_steps("dpm++2m", sch) == 30
