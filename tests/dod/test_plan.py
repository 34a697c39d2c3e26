"""The diffusion-over-diffusion plan: the paper's frame counts, exact coverage, exact lengths."""
import numpy as np
import pytest

from nuwa_xl_jax.dod import plan as dod_plan


def test_paper_frame_counts():
    assert [dod_plan.num_frames(16, d) for d in (1, 2, 3)] == [16, 226, 3376]
    assert [dod_plan.num_frames(8, d) for d in (1, 2, 3)] == [8, 50, 344]
    p = dod_plan.make_plan(16, depth=3)
    assert p.frames == 3376 and p.span == 3376
    assert [lv.stride for lv in p.levels] == [225, 15, 1]
    assert [lv.num_segments for lv in p.levels] == [1, 15, 225]


def _check_exact_cover(p):
    written = np.concatenate([lv.frames[lv.writes] for lv in p.levels])
    assert len(written) == p.frames, "every frame is written exactly once"
    np.testing.assert_array_equal(np.sort(written), np.arange(p.frames))


@pytest.mark.parametrize("L,depth", [(16, 1), (16, 2), (16, 3), (8, 3), (4, 4)])
def test_every_frame_written_once(L, depth):
    _check_exact_cover(dod_plan.make_plan(L, depth=depth))


@pytest.mark.parametrize("L,depth", [(16, 3), (8, 3), (5, 4)])
def test_local_ends_are_frames_of_the_level_above(L, depth):
    p = dod_plan.make_plan(L, depth=depth)
    for upper, lower in zip(p.levels, p.levels[1:]):
        upper_frames = upper.frames.ravel()
        ends = lower.frames[:, [0, -1]]
        assert np.isin(ends, upper_frames).all()
        # each segment spans exactly one adjacent pair of the level above
        assert (ends[:, 1] - ends[:, 0] == upper.stride).all()
        assert lower.given[:, [0, -1]].all() and not lower.given[:, 1:-1].any()
        # and every adjacent pair of the level above (up to the cut) has its segment
        pairs = {(a, a + upper.stride) for a in upper.frames[:, :-1].ravel()}
        assert {tuple(e) for e in ends} == pairs
    assert not p.levels[0].given.any()


@pytest.mark.parametrize("frames", [2, 17, 100, 226, 227, 1024, 3000])
def test_exact_lengths(frames):
    p = dod_plan.make_plan(16, frames=frames)
    assert p.frames == frames
    assert p.full_frames >= frames
    assert p.depth == 1 or dod_plan.num_frames(16, p.depth - 1) < frames
    _check_exact_cover(p)
    for lv in p.levels:  # no segment wholly past the end
        assert (lv.frames[:, 0] < frames).all()
        assert lv.prompts.max() <= frames - 1


@pytest.mark.parametrize("frames", [2, 16, 17, 31, 100, 226])
def test_trained_depth_cut_at_n(frames):
    """A depth-2 family's plan cut at N: strides as trained, every frame < N written once, and no
    segment that writes nothing (one starting at N - 1 would only write frames >= N)."""
    p = dod_plan.make_plan(16, depth=2, frames=frames)
    assert p.depth == 2 and [lv.stride for lv in p.levels] == [15, 1]
    _check_exact_cover(p)
    for lv in p.levels:
        assert lv.writes.any(axis=1).all()
    if frames == 16:  # frames 0 and 15 from level 0, 1..14 from one level-1 segment
        assert [lv.num_segments for lv in p.levels] == [1, 1]


def test_1024_frames_skips_segments_past_the_end():
    p = dod_plan.make_plan(16, frames=1024)
    assert p.depth == 3
    full = dod_plan.make_plan(16, depth=3)
    assert [lv.num_segments for lv in p.levels] == [1, 5, 69]
    assert sum(lv.num_segments for lv in p.levels) < sum(lv.num_segments for lv in full.levels)


def test_prompts_follow_frames():
    p = dod_plan.make_plan(16, frames=100)
    for lv in p.levels:
        np.testing.assert_array_equal(lv.prompts, np.minimum(lv.frames, 99))


@pytest.mark.parametrize("kwargs,match", [
    (dict(L=2, depth=2), "L \\(frames per call\\)"),
    (dict(L=16), "needs depth, frames"),
    (dict(L=16, depth=0), "depth must be"),
    (dict(L=16, frames=1), "frames must be"),
    (dict(L=16, depth=1, frames=17), "exceeds the 16 frames"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dod_plan.make_plan(**kwargs)
