"""Fréchet distance and streaming statistics: known answers (numpy only, fast)."""
import numpy as np
import pytest
from scipy import linalg

from nuwa_xl_jax.metrics import frechet
from nuwa_xl_jax.metrics.frechet import FrechetError, RunningStats


def _random_cov(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    for d, rank in ((8, None), (64, None), (64, 5)):  # full rank and singular
        mu, sigma = rng.standard_normal(d), _random_cov(rng, d, rank)
        assert frechet.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_gaussians_match_the_closed_form():
    # Diagonal covariances commute: tr((S1 S2)^(1/2)) = sum sqrt(a_i b_i), so
    # FD = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    a, b = rng.uniform(0.1, 3.0, 32), rng.uniform(0.1, 3.0, 32)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-12)
    # One dimension by hand: N(0, 1) vs N(3, 4): 9 + (1 - 2)^2 = 10.
    assert frechet.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)


def test_rotation_of_both_leaves_the_distance_unchanged():
    # Non-diagonal, non-commuting case with a known answer: rotate a diagonal pair by the same
    # orthogonal Q (means too); the distance is invariant.
    rng = np.random.default_rng(2)
    d = 16
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.2, 2.0, d), rng.uniform(0.2, 2.0, d)
    base = frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    rotated = frechet.frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert rotated == pytest.approx(base, rel=1e-9)


def test_agrees_with_scipy_sqrtm_where_that_is_well_conditioned():
    rng = np.random.default_rng(3)
    d = 48
    s1, s2 = _random_cov(rng, d) + 0.1 * np.eye(d), _random_cov(rng, d) + 0.1 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = linalg.sqrtm(s1 @ s2).real
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-9)


def test_singular_covariances_are_handled_without_an_offset():
    # Fewer samples than dimensions (as with B-FVD's few videos per block): covariances of rank 3
    # in 50-d. The result must be finite, >= 0, and equal the distance computed in the 6-d span.
    rng = np.random.default_rng(4)
    basis, _ = np.linalg.qr(rng.standard_normal((50, 6)))
    x, y = rng.standard_normal((4, 6)), rng.standard_normal((4, 6)) + 0.5
    fx, fy = x @ basis.T, y @ basis.T
    big = frechet.frechet_distance(fx.mean(0), np.cov(fx, rowvar=False),
                                   fy.mean(0), np.cov(fy, rowvar=False))
    small = frechet.frechet_distance(x.mean(0), np.cov(x, rowvar=False),
                                     y.mean(0), np.cov(y, rowvar=False))
    assert np.isfinite(big) and big > 0 and big == pytest.approx(small, rel=1e-7)


@pytest.mark.parametrize("batches", [[1000], [1, 999], [7, 300, 1, 692], [250] * 4])
def test_streaming_statistics_equal_numpy_on_the_concatenation(batches):
    rng = np.random.default_rng(5)
    # A large common offset is where E[xx^T] - mu mu^T loses every digit; Chan's update does not.
    data = 1e4 + rng.standard_normal((sum(batches), 12)) * rng.uniform(0.1, 5, 12)
    stats = RunningStats(12)
    start = 0
    for n in batches:
        stats.update(data[start:start + n])
        start += n
    assert stats.count == len(data)
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(data, rowvar=False), rtol=1e-8, atol=1e-10)


def test_merge_equals_one_pass_and_stats_round_trip_through_npz(tmp_path):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((40, 5)), rng.standard_normal((25, 5)) + 2
    merged = RunningStats(5).update(a).merge(RunningStats(5).update(b))
    whole = RunningStats(5).update(np.concatenate([a, b]))
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.cov, whole.cov, rtol=1e-10)
    path = frechet.save_statistics(str(tmp_path / "ref"), {"frames": merged, "other": whole},
                                   meta={"network": "inception", "output": "pool"})
    assert path.endswith(".npz")
    loaded, meta = frechet.load_statistics(path)
    assert meta == {"network": "inception", "output": "pool"} and set(loaded) == {"frames", "other"}
    assert loaded["frames"].count == 65
    np.testing.assert_array_equal(loaded["frames"].m2, merged.m2)
    # Loaded statistics keep streaming: adding more samples equals one pass over all of them.
    c = rng.standard_normal((10, 5))
    loaded["frames"].update(c)
    np.testing.assert_allclose(
        loaded["frames"].cov, np.cov(np.concatenate([a, b, c]), rowvar=False), rtol=1e-10
    )


def test_bad_input_is_named():
    with pytest.raises(FrechetError, match="sigma2 must be"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(FrechetError, match="at least 2 samples"):
        _ = RunningStats(3).update(np.zeros((1, 3))).cov
    with pytest.raises(FrechetError, match=r"\[n, 3\]"):
        RunningStats(3).update(np.zeros((2, 4)))
    with pytest.raises(FrechetError, match="NaN"):
        RunningStats(2).update(np.array([[np.nan, 0.0]]))
    with pytest.raises(FrechetError, match="different networks"):
        frechet.fd_of_stats(RunningStats(2).update(np.eye(2)), RunningStats(3).update(np.eye(3)))


def test_load_refuses_missing_or_foreign_files(tmp_path):
    with pytest.raises(FrechetError, match="does not exist"):
        frechet.load_statistics(str(tmp_path / "none.npz"))
    np.savez(tmp_path / "foreign.npz", mu=np.zeros(3))
    with pytest.raises(FrechetError, match="not a statistics file"):
        frechet.load_statistics(str(tmp_path / "foreign.npz"))


# ---- streaming helpers with a cheap stand-in feature function (the networks: test_fid_fvd.py)


class Recorder:
    """Features of frames or clips: per-channel means and a few pixels, and the batch shapes
    seen."""

    def __init__(self):
        self.shapes = []

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        x = batch.reshape(batch.shape[0], -1, 3).astype(np.float64)
        return np.concatenate([x.mean(1), x[:, :5, 0]], axis=1)


def test_frame_statistics_stream_from_generators_in_fixed_batches():
    rng = np.random.default_rng(7)
    videos = [rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8) for n in (5, 11, 3)]
    rec = Recorder()
    stats = frechet.frame_statistics((iter(list(v)) for v in videos), rec, batch_size=4)
    assert set(rec.shapes) == {(4, 4, 4, 3)}  # one shape: the last batch is padded, not shorter
    feats = rec(np.concatenate(videos))
    assert stats.count == 19
    np.testing.assert_allclose(stats.mean, feats.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(feats, rowvar=False), rtol=1e-9)
    with pytest.raises(FrechetError, match="video 1 frame 0"):
        frechet.frame_statistics([videos[0], np.zeros((2, 5, 5, 3), np.uint8)], rec)


def test_block_statistics_cut_16_frame_blocks_per_index():
    rng = np.random.default_rng(8)
    videos = [rng.integers(0, 256, (35, 2, 2, 3), dtype=np.uint8) for _ in range(3)]
    rec = Recorder()
    blocks = frechet.block_statistics((iter(v) for v in videos), rec, batch_size=3)
    assert len(blocks) == 2 and all(b.count == 3 for b in blocks)  # frames 32..34 dropped
    assert set(rec.shapes) == {(3, 16, 2, 2, 3)}
    for i, b in enumerate(blocks):
        feats = rec(np.stack([v[16 * i:16 * (i + 1)] for v in videos]))
        np.testing.assert_allclose(b.mean, feats.mean(0), rtol=1e-12)
        np.testing.assert_allclose(b.cov, np.cov(feats, rowvar=False), rtol=1e-9)
    value, per_block = frechet.b_fvd(blocks, blocks)
    assert value == pytest.approx(0.0, abs=1e-9) and len(per_block) == 2


def test_b_fvd_refuses_short_videos_and_mismatched_sets():
    rec = Recorder()
    with pytest.raises(FrechetError, match="video 1 has 12 frames; B-FVD-16 needs at least 16"):
        frechet.block_statistics([np.zeros((16, 2, 2, 3), np.uint8),
                                  np.zeros((12, 2, 2, 3), np.uint8)], rec)
    one = frechet.block_statistics([np.zeros((32, 2, 2, 3), np.uint8)] * 2, rec)
    two = frechet.block_statistics([np.zeros((16, 2, 2, 3), np.uint8)] * 2, rec)
    with pytest.raises(FrechetError, match="2 blocks, the reference 1"):
        frechet.b_fvd(one, two)
    single = frechet.block_statistics([np.zeros((16, 2, 2, 3), np.uint8)], rec)
    with pytest.raises(FrechetError, match="at least 2 videos"):
        frechet.b_fvd(single, single)
