"""Avg-FID and B-FVD-16 end to end through the Flax networks with random weights: a set against
itself gives ~0, a changed copy (noised, or shuffled in time) gives clearly more.

Random-weight networks are only for these checks; real metrics need the converted public weights
(docs/evaluation.md). I3D runs on 16-frame clips resized to 224 px (as the FVD code does), so the
full B-FVD-16 test with several blocks and copies is marked slow; a one-block version runs always.
"""
import numpy as np
import pytest

from nuwa_xl_jax.metrics import frechet
from nuwa_xl_jax.models import i3d, inception


def moving_squares(n_videos, frames, size=16, seed=0):
    """uint8 videos [frames, size, size, 3]: a coloured square moving over a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n_videos):
        colour = rng.integers(64, 256, 3)
        y0, x0, vy, vx = rng.integers(0, size // 2, 2).tolist() + rng.choice([-1, 1], 2).tolist()
        video = np.empty((frames, size, size, 3), np.uint8)
        for t in range(frames):
            frame = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 60)], -1)
            y, x = (y0 + vy * t) % (size - 4), (x0 + vx * t) % (size - 4)
            frame[y:y + 4, x:x + 4] = colour
            video[t] = frame
        out.append(video)
    return out


def noised(videos, sigma=40.0, seed=1):
    rng = np.random.default_rng(seed)
    return [np.clip(v + rng.normal(0, sigma, v.shape), 0, 255).astype(np.uint8) for v in videos]


@pytest.fixture(scope="module")
def fid_fn():
    module = inception.FIDInceptionV3()
    return inception.feature_fn(module, inception.init_params(module, seed=0))


@pytest.fixture(scope="module")
def fvd_fn():
    module = i3d.InceptionI3D()
    return i3d.feature_fn(module, i3d.init_params(module, seed=0))


def test_avg_fid_of_a_set_against_itself_is_zero(fid_fn):
    videos = moving_squares(2, 2, size=32)
    ref = frechet.frame_statistics(videos, fid_fn, batch_size=2)
    again = frechet.frame_statistics((iter(v) for v in videos), fid_fn, batch_size=2)
    other = frechet.frame_statistics(noised(videos), fid_fn, batch_size=2)
    assert ref.count == 4 and ref.dim == inception.FEATURE_DIM
    same, changed = frechet.avg_fid(again, ref), frechet.avg_fid(other, ref)
    print(f"random-weight Avg-FID: itself {same:.3g}, noised copy {changed:.3g}")
    assert changed > 0 and same <= 1e-6 * changed


def test_b_fvd_16_one_block(fvd_fn):
    videos = moving_squares(2, 16)
    ref = frechet.block_statistics(videos, fvd_fn, batch_size=2)
    other = frechet.block_statistics(noised(videos), fvd_fn, batch_size=2)
    assert len(ref) == 1 and ref[0].count == 2 and ref[0].dim == i3d.NUM_CLASSES
    same, _ = frechet.b_fvd(ref, ref)
    changed, _ = frechet.b_fvd(other, ref)
    print(f"random-weight B-FVD-16 (1 block): itself {same:.3g}, noised copy {changed:.3g}")
    assert changed > 0 and same <= 1e-6 * changed


@pytest.mark.slow
def test_b_fvd_16_itself_shuffled_and_noised(fvd_fn):
    videos = moving_squares(3, 34, seed=3)  # 2 blocks each; frames 32, 33 dropped
    rng = np.random.default_rng(4)
    shuffled = [v[rng.permutation(len(v))] for v in videos]
    ref = frechet.block_statistics(videos, fvd_fn, batch_size=3)
    again = frechet.block_statistics((iter(v) for v in videos), fvd_fn, batch_size=3)
    same, per_block = frechet.b_fvd(again, ref)
    shuf, _ = frechet.b_fvd(frechet.block_statistics(shuffled, fvd_fn, batch_size=3), ref)
    noisy, _ = frechet.b_fvd(frechet.block_statistics(noised(videos), fvd_fn, batch_size=3), ref)
    print(f"random-weight B-FVD-16 (2 blocks): itself {same:.3g}, shuffled {shuf:.3g}, "
          f"noised {noisy:.3g}")
    assert len(per_block) == 2
    assert shuf > 0 and noisy > 0 and same <= 1e-6 * min(shuf, noisy)
