"""Baselines on the engine's toy denoiser: autoregressive over diffusion (FDM*) and DoD with one
call per segment."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_engine import (
    LATENT,
    NULL,
    SCHEDULE,
    T,
    mesh_of,
    models_for,
    prompts,
    toy_denoise,
    toy_params,
)

from nuwa_xl_jax.dod import baselines, engine
from nuwa_xl_jax.dod import level_models as lm
from nuwa_xl_jax.dod import plan as planlib

L = 4
P = 2
KW = dict(sampler="ddpm", steps=3, guidance_scale=2.0)


def counting_denoise():
    """The toy denoiser plus a host counter of model evaluations (one per sampler step)."""
    count = [0]

    def bump(_):
        count[0] += 1

    def denoise(params, x, t, ids, cond, mask, level):
        jax.debug.callback(bump, t[0, 0])
        return toy_denoise(params, x, t, ids, cond, mask, level)

    return denoise, count


def ar(n, model=None, **kw):
    model = model or lm.LevelModel(toy_denoise, toy_params(5))
    return baselines.autoregressive(model, prompts(9)[:n], NULL, SCHEDULE, LATENT, L=L, prefix=P,
                                    seed=1, **{**KW, **kw})


def test_autoregressive_makes_n_frames_in_the_expected_sequential_calls():
    denoise, count = counting_denoise()
    res = ar(9, lm.LevelModel(denoise, toy_params(5)))
    # 4 frames, then 2 new frames per call: 4 + 2 + 2 + 2 >= 9 -> 4 calls of 3 steps each.
    assert res.sequential_calls == baselines.ar_num_calls(L, 9, P) == 4
    assert count[0] == 4 * 3
    out = np.asarray(res.latents)
    assert out.shape == (9, *LATENT) and np.all(np.isfinite(out))
    assert np.all(np.abs(out).reshape(9, -1).max(1) > 0)  # every frame was generated
    assert [baselines.ar_num_calls(L, n, P) for n in (2, 4, 5, 6, 7, 28)] == [1, 1, 2, 2, 3, 13]


def test_autoregressive_is_causal_call_by_call():
    """Frames 0..5 come from calls 0 and 1, whose prompts and keys are the same for N=7 and N=9:
    a call depends only on its prefix and its own key."""
    a, b = np.asarray(ar(9).latents), np.asarray(ar(7).latents)
    np.testing.assert_allclose(a[:6], b[:6], rtol=1e-6, atol=1e-6)
    assert np.abs(a[6] - b[6]).max() > 1e-3  # frame 7's prompt differs (clipped to frame 6 at N=7)


def test_autoregressive_from_a_given_prefix_and_a_first_model():
    prefix = jnp.asarray(np.random.default_rng(0).normal(size=(2, *LATENT)), jnp.float32)
    res = ar(6, prefix_latents=prefix)
    out = np.asarray(res.latents)
    assert res.sequential_calls == 2 and np.array_equal(out[:2], np.asarray(prefix))
    plain = np.asarray(ar(6).latents)
    assert np.abs(out[2:] - plain[2:]).max() > 1e-3
    first = np.asarray(ar(6, first=lm.LevelModel(toy_denoise, toy_params(0))).latents)
    assert np.abs(first[:4] - plain[:4]).max() > 1e-3


def test_sequential_calls_of_dod_per_segment_and_ar():
    plan = planlib.make_plan(L, 3)  # 28 frames
    per_segment = baselines.dod_per_segment(plan, models_for(3), prompts(28), NULL, SCHEDULE,
                                            LATENT, seed=7, **KW)
    assert per_segment.sequential_calls == 1 + 3 + 9
    assert per_segment.latents.shape == (28, *LATENT)
    batched = engine.run(plan, models_for(3), prompts(28), NULL, SCHEDULE, LATENT, seed=7,
                         mesh=mesh_of(1), **KW)
    assert batched.sequential_calls == plan.sequential_calls() == 3
    assert baselines.ar_num_calls(L, 28, P) == 13


def test_baseline_bad_input():
    m = lm.LevelModel(toy_denoise, toy_params(5))
    with pytest.raises(ValueError, match="prefix must be an integer in 1..3"):
        baselines.autoregressive(m, prompts(6), NULL, SCHEDULE, LATENT, L=L, prefix=4)
    with pytest.raises(ValueError, match="unknown sampler"):
        baselines.autoregressive(m, prompts(6), NULL, SCHEDULE, LATENT, L=L, prefix=2,
                                 sampler="heun")
    with pytest.raises(ValueError, match=r"prompt_ids must be \[N, T\]"):
        baselines.autoregressive(m, prompts(6)[0], NULL, SCHEDULE, LATENT, L=L, prefix=2)
    with pytest.raises(ValueError, match="prefix_latents must be"):
        baselines.autoregressive(m, prompts(6), NULL, SCHEDULE, LATENT, L=L, prefix=2,
                                 prefix_latents=np.zeros((4, *LATENT)))
    with pytest.raises(ValueError, match="one segment per call"):
        baselines.dod_per_segment(planlib.make_plan(L, 2), models_for(2), prompts(10), NULL,
                                  SCHEDULE, LATENT, max_segments_per_call=3)
    assert T == NULL.shape[0]
