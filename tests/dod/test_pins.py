"""Pinned frames are given (and never written) at every level whose segment holds them, and a
known-answer denoiser shows the frames around a pin led into it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax import parallel
from nuwa_xl_jax.diffusion import schedules
from nuwa_xl_jax.dod import engine
from nuwa_xl_jax.dod import level_models as lm
from nuwa_xl_jax.dod.pins import pin_plan
from nuwa_xl_jax.dod.plan import make_plan


def test_a_pinned_frame_is_given_wherever_a_segment_holds_it():
    plan = pin_plan(make_plan(4, depth=2, frames=10), [0, 4])
    g0, g1 = plan.levels
    assert g0.given[0].tolist() == [True, False, False, False]  # frame 0 at the global level
    assert not g0.writes[0, 0]
    seg = g1.frames.tolist().index([3, 4, 5, 6])
    assert g1.given[seg].tolist() == [True, True, False, True]  # ends + the pin at frame 4
    for lv in plan.levels:
        assert not lv.writes[np.isin(lv.frames, [0, 4])].any()
    # only the mask changes: the segments and their shapes are the plan's own
    base = make_plan(4, depth=2, frames=10)
    for a, b in zip(plan.levels, base.levels):
        np.testing.assert_array_equal(a.frames, b.frames)


def test_no_pins_is_the_plan_itself_and_out_of_range_is_an_error():
    plan = make_plan(4, depth=2, frames=10)
    assert pin_plan(plan, []) is plan
    with pytest.raises(ValueError, match=r"0\.\.9"):
        pin_plan(plan, [10])


# A known-answer denoiser: it predicts the noise that makes x0 the piecewise-linear interpolation
# of the segment's given frames (flat past the outermost), and 0 when nothing is given. DDIM
# (eta 0) then lands on that interpolation, so where each level's pins go is visible in the
# output: the neighbours of a pinned frame lead smoothly into it, with no jump.
SCHEDULE = schedules.make_schedule("scaled_linear", 1000)
LATENT = (2, 2, 1)


def interpolating_denoise(params, x, t, ids, cond, mask, level):
    del params, ids, level
    F = x.shape[1]
    pos = jnp.arange(F)
    given = mask > 0
    left = jax.lax.cummax(jnp.where(given, pos, -1), axis=1)
    right = jnp.flip(jax.lax.cummin(jnp.flip(jnp.where(given, pos, F), 1), axis=1), 1)
    has_l, has_r = left >= 0, right < F
    li, ri = jnp.clip(left, 0, F - 1), jnp.clip(right, 0, F - 1)
    take = lambda i: jnp.take_along_axis(cond, i[:, :, None, None, None], axis=1)
    w = jnp.where(has_l & has_r, (pos - left) / jnp.maximum(right - left, 1), 0.0)
    w = jnp.where(has_r & ~has_l, 1.0, w)[:, :, None, None, None]
    x0 = (1 - w) * take(li) + w * take(ri)
    x0 = jnp.where((has_l | has_r)[:, :, None, None, None], x0, 0.0)
    ab = jnp.asarray(SCHEDULE.alphas_cumprod)[t][:, :, None, None, None]
    return (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)


def test_the_neighbours_of_a_pinned_frame_lead_into_it():
    plan = pin_plan(make_plan(4, depth=2, frames=10), [0, 5])
    levels = lm.level_models(interpolating_denoise, {}, [{}], 2)
    pinned = (np.array([0, 5]), np.stack([np.full(LATENT, 2.0), np.full(LATENT, 8.0)]))
    out = engine.run(plan, levels, np.ones((10, 3), np.int32), np.zeros(3, np.int32), SCHEDULE,
                     LATENT, sampler="ddim", steps=20, seed=0, pinned=pinned,
                     mesh=parallel.make_mesh(devices=jax.devices()[:1]))
    z = np.asarray(out.latents)[:, 0, 0, 0]
    # level 0 holds frame 0 (2.0): keyframes 3 6 9 flat from it; level 1 holds frame 5 (8.0) in
    # segment 3-6: frame 4 halfway between 3 and 5, frame 6 the keyframe (2.0) again
    np.testing.assert_array_equal(z[[0, 5]], [2.0, 8.0])  # the pins, bit for bit
    np.testing.assert_allclose(z, [2, 2, 2, 2, 5, 8, 2, 2, 2, 2], atol=0.05)
