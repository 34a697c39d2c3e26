"""Pinned frames are given (and never written) at every level whose segment holds them."""
import numpy as np
import pytest

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
