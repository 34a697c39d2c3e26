"""Level sampling indices: the paper's numbers and agreement with the inference plan."""
import numpy as np
import pytest

from nuwa_xl_jax.data import sampling
from nuwa_xl_jax.dod import plan


def test_paper_numbers_L16_m3():
    assert sampling.window_size(16, 3) == 3376
    assert [sampling.level_stride(16, 3, d) for d in range(3)] == [225, 15, 1]
    g = sampling.global_indices(16, 3, start=100)
    assert g.indices[0] == 100 and g.indices[-1] == 100 + 3375 and g.stride == 225
    assert not g.mask.any()
    l1 = sampling.local_indices(16, 3, 1, pair=2)
    assert list(l1.indices[[0, -1]]) == [450, 675] and l1.stride == 15
    l2 = sampling.local_indices(16, 3, 2, pair=7)
    assert list(l2.indices) == list(range(105, 121)) and l2.stride == 1
    for ex in (l1, l2):
        assert list(ex.mask) == [1] + [0] * 14 + [1]


@pytest.mark.parametrize("L,m", [(16, 3), (4, 3), (5, 2)])
def test_local_frames_are_exactly_the_parent_levels_frames(L, m):
    """Every local example's ends are adjacent frames of its parent level, and its whole set of
    examples is the inference plan's segments of that level."""
    p = plan.make_plan(L, m)
    parent = set(sampling.global_indices(L, m).indices.tolist())
    for d in range(1, m):
        examples = [sampling.local_indices(L, m, d, q) for q in range(sampling.num_pairs(L, d))]
        ordered = sorted(parent)
        for ex in examples:
            a, b = ex.indices[0], ex.indices[-1]
            assert a in parent and b in parent and ordered.index(b) == ordered.index(a) + 1
            assert not (set(ex.indices[1:-1].tolist()) & parent)
        rows = np.stack([ex.indices for ex in examples])
        assert np.array_equal(rows, p.levels[d].frames)
        assert np.array_equal(np.stack([ex.mask > 0 for ex in examples]), p.levels[d].given)
        parent |= set(rows.ravel().tolist())
    assert parent == set(range(sampling.window_size(L, m)))
    assert np.array_equal(sampling.global_indices(L, m).indices, p.levels[0].frames[0])


def test_sample_is_seeded_and_in_range():
    spec = sampling.Spec(frames_per_call=16, depth=3, level=-1)
    a = [sampling.sample(spec, 5000, np.random.default_rng(7)) for _ in range(3)]
    b = [sampling.sample(spec, 5000, np.random.default_rng(7)) for _ in range(3)]
    assert all(np.array_equal(x.indices, y.indices) for x, y in zip(a, b))
    rng = np.random.default_rng(0)
    levels = set()
    for _ in range(200):
        ex = sampling.sample(spec, 5000, rng)
        levels.add(ex.level)
        assert ex.indices.min() >= 0 and ex.indices.max() < 5000
        assert np.all(np.diff(ex.indices) == ex.stride)
    assert levels == {1, 2}  # -1 draws the local levels (one shared local model)


def test_autoregressive_and_artv():
    ar = sampling.sample(sampling.Spec(mode="ar", frames_per_call=16, ar_stride=3, ar_prefix=4),
                         100, np.random.default_rng(0))
    assert np.all(np.diff(ar.indices) == 3) and ar.mask.sum() in (0, 4)
    assert list(ar.mask) in ([1] * 4 + [0] * 12, [0] * 16)
    assert ar.level == -1
    spec = sampling.Spec(mode="artv", frames_per_call=4, depth=2)
    for s in range(20):
        ex = sampling.sample(spec, 40, np.random.default_rng(s))
        anchor, prev, new = ex.indices
        assert new - prev == 1 and anchor <= prev and new - anchor < spec.window
        assert list(ex.mask) == [1, 1, 0]


def test_episode_shorter_than_window_is_a_clear_error():
    spec = sampling.Spec(frames_per_call=16, depth=3)
    with pytest.raises(sampling.EpisodeTooShortError,
                       match=r"ep7 has 3000 frames but a dod window .* needs 3376"):
        sampling.sample(spec, 3000, np.random.default_rng(0), name="ep7")
    with pytest.raises(ValueError, match="data.level must be"):
        sampling.Spec(depth=3, level=3)
    with pytest.raises(ValueError, match="data.ar_prefix"):
        sampling.Spec(mode="ar", ar_prefix=16)


def test_autoregressive_prefix_includes_nothing_given():
    """The AR model's first call at generation has nothing given, so its training draws that case
    too: prefix 0 for about ar_no_prefix of the examples, else ar_prefix; per example from its own
    rng (the same rng gives the same example, so a resumed run sees the same data)."""
    spec = sampling.Spec(mode="ar", frames_per_call=16, ar_prefix=8)
    prefixes = [int(sampling.sample(spec, 100, np.random.default_rng(s)).mask.sum())
                for s in range(400)]
    assert set(prefixes) == {0, 8}
    assert 0.18 < prefixes.count(0) / len(prefixes) < 0.32  # ar_no_prefix = 0.25
    again = [
        int(sampling.sample(spec, 100, np.random.default_rng(s)).mask.sum()) for s in range(400)
    ]
    assert again == prefixes
    for s in range(20):  # a prefix of 0 is always a leading run of given frames, never a gap
        m = sampling.sample(spec, 100, np.random.default_rng(s)).mask
        assert list(m) == sorted(m, reverse=True)
    always = sampling.Spec(mode="ar", frames_per_call=16, ar_prefix=8, ar_no_prefix=0.0)
    assert sampling.sample(always, 100, np.random.default_rng(0)).mask.sum() == 8
    with pytest.raises(ValueError, match="ar_no_prefix"):
        sampling.Spec(mode="ar", ar_no_prefix=1.5)


def test_vae_clips_draw_nothing_for_the_prefix():
    """mode 'ar' with ar_prefix 0 (the VAE stage's clips) draws no prefix length, so its examples
    are what they were: the window start is the rng's first and only draw."""
    spec = sampling.Spec(mode="ar", frames_per_call=4, ar_prefix=0)
    for s in range(10):
        rng = np.random.default_rng(s)
        ex = sampling.sample(spec, 100, rng)
        assert ex.indices[0] == np.random.default_rng(s).integers(0, 100 - 4 + 1)
        assert rng.random() == _after_one_integer(s)
        assert not ex.mask.any()


def _after_one_integer(seed):
    rng = np.random.default_rng(seed)
    rng.integers(0, 97)
    return rng.random()


def test_extra_given_frames_are_drawn_only_when_asked():
    """data.extra_given: frames between the ends also given (keyframe images), ends kept; at 0
    the examples and the rng stream are the paper's masks, unchanged."""
    from nuwa_xl_jax.data.sampling import Spec, sample

    base = Spec(frames_per_call=8, depth=2, level=-1)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    plain = sample(base, 200, a)
    assert plain.mask.tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    sample(Spec(frames_per_call=8, depth=2, level=-1, extra_given=0.0), 200, b)
    assert a.random() == b.random()  # p = 0 draws nothing
    rng = np.random.default_rng(0)
    masks = np.stack([sample(Spec(frames_per_call=8, depth=2, level=1, extra_given=0.5), 200,
                             rng).mask for _ in range(400)])
    assert (masks[:, [0, -1]] == 1).all()
    assert 0.4 < masks[:, 1:-1].mean() < 0.6
    glob = sample(Spec(frames_per_call=8, depth=2, level=0, extra_given=0.5), 200, rng)
    assert glob.mask[[0, -1]].tolist() == [0, 0]  # the global level's ends stay free


def test_extra_given_outside_a_probability_is_a_config_error():
    from nuwa_xl_jax.configuration import ConfigError
    from nuwa_xl_jax.configuration.data import DataConfig

    with pytest.raises(ConfigError, match=r"data.extra_given must be a probability in \[0, 1\)"):
        DataConfig(extra_given=1.5)
