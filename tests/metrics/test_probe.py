"""The synthetic-world probe is honest at both ends: ~1 on real frames, ~0 on
black/grey/noise/mush."""
import numpy as np
import pytest
from scipy import ndimage

from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.metrics import probe, storyboard_probe

LENGTH = 226  # the demo's length


def box_blur(frames, k=3):
    out = ndimage.uniform_filter(frames.astype(np.float32), (0, k, k, 0), mode="nearest")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def episode(seed, resolution=(32, 32), length=LENGTH):
    return synthetic.episode(seed, 0, length, resolution)


@pytest.mark.parametrize("resolution", [(32, 32), (64, 64)])
@pytest.mark.parametrize("seed", [0, 1])
def test_ceiling_on_real_episodes(resolution, seed):
    scores = storyboard_probe.ceiling(LENGTH, resolution, seed)
    assert scores["both"] >= 0.95 and scores["scene"] == 1.0, scores
    assert scores["unknown"] == 0.0 and scores["identity"] >= 0.95, scores


@pytest.mark.parametrize("resolution", [(16, 16), (24, 40)])
def test_any_resolution_from_16(resolution):
    assert storyboard_probe.ceiling(LENGTH, resolution, 2)["both"] >= 0.95


def _floors(resolution=(32, 32), T=64):
    rng = np.random.default_rng(0)
    H, W = resolution
    real, captions, _ = episode(0, resolution)
    # Mush: real frames blurred until no horizon or shape is left, and the six scenes averaged.
    mush = ndimage.gaussian_filter(real[:T].astype(np.float32), (0, H / 4, W / 4, 0), mode="wrap")
    blend = synthetic.backgrounds(resolution).astype(np.float32).mean(0)
    blend = blend[None] + rng.normal(0, 4, (T, H, W, 3))
    videos = {"black": np.zeros((T, H, W, 3)), "grey": np.full((T, H, W, 3), 128.0),
              "noise": rng.integers(0, 256, (T, H, W, 3)), "mush": mush, "blend": blend}
    return {k: np.clip(np.round(v), 0, 255).astype(np.uint8) for k, v in videos.items()}, captions[
        :T
    ]


@pytest.mark.parametrize("resolution", [(32, 32), (64, 64)])
def test_floor_black_grey_noise_mush(resolution):
    videos, captions = _floors(resolution)
    for name, frames in videos.items():
        scores = storyboard_probe.agreement(frames, captions)
        assert scores["scene"] <= 0.05 and scores["both"] <= 0.05, (name, scores)
        assert scores["unknown"] >= 0.95, (name, scores)
    assert storyboard_probe.agreement(videos["noise"], captions)["characters"] <= 0.05


def test_no_characters_on_backgrounds():
    for resolution in [(16, 16), (32, 32), (64, 64), (32, 48)]:
        bg = synthetic.backgrounds(resolution)
        for frames in (bg, box_blur(bg), (0.5 * bg + 64).astype(np.uint8)):
            reading = probe.read(frames)
            assert not reading.visible.any(), resolution
            np.testing.assert_array_equal(reading.scene, np.arange(len(synthetic.SCENES)))


def test_fade_toward_grey_keeps_scene_and_characters():
    frames, captions, _ = episode(1)
    faded = np.round(0.5 * frames + 0.5 * 128).astype(np.uint8)
    clean, scores = (
        storyboard_probe.agreement(frames, captions),
        storyboard_probe.agreement(faded, captions),
    )
    assert scores["scene"] >= 0.95, scores
    assert scores["characters"] >= 0.9 * clean["characters"], (scores, clean)


def test_grain_keeps_scene_and_characters():
    frames, captions, _ = episode(2)
    grainy = frames + np.random.default_rng(0).normal(0, 20, frames.shape)
    scores = storyboard_probe.agreement(
        np.clip(np.round(grainy), 0, 255).astype(np.uint8), captions
    )
    assert scores["scene"] >= 0.95 and scores["characters"] >= 0.9, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_blur_keeps_characters(seed):
    frames, captions, _ = episode(seed)
    clean = storyboard_probe.agreement(frames, captions)
    blurred = storyboard_probe.agreement(box_blur(frames), captions)
    assert blurred["scene"] >= 0.95, blurred
    assert blurred["characters"] >= 0.9 * clean["characters"], (blurred, clean)


def test_smallest_character_survives_blur_everywhere():
    """Each character at the minimum size (4.5 px tall at 32x32), in every scene, blurred 3x3."""
    K, S = len(synthetic.CHARACTERS), len(synthetic.SCENES)
    scene = np.repeat(np.arange(S), K).astype(np.int32)
    who = np.tile(np.arange(K), S)
    visible = np.zeros((S * K, K), bool)
    visible[np.arange(S * K), who] = True
    size = np.full((S * K, K), synthetic.MIN_SIZE, np.float32)
    x = np.full((S * K, K), 0.37, np.float32)
    y = synthetic._ground_y(scene, size[:, 0])[:, None] + np.zeros((1, K), np.float32)
    zeros = np.zeros((S * K, K), np.int8)
    truth = synthetic.Truth(
        scene, visible, x, y.astype(np.float32), size, zeros, who, scene, ("",) * (S * K)
    )
    frames = box_blur(synthetic.render(truth, (32, 32)))
    reading = probe.read(frames)
    np.testing.assert_array_equal(reading.scene, scene)
    np.testing.assert_array_equal(reading.visible, visible)
    seen = reading.visible
    assert np.abs(reading.x[seen] - x[seen]).max() <= 1.5 / 32
    # Blur drops a 4.5 px shape's thin parts (apex, arms) below half colour: size reads smaller.
    assert np.abs(reading.size[seen] - size[seen]).max() <= 2.5 / 32


def test_positions_and_sizes_match_truth():
    frames, _, truth = episode(0, (64, 64))
    reading = probe.read(frames)
    judged = reading.judged  # wholly inside the frame and clear of other characters
    assert judged.sum() > 50 and truth.visible[judged].all()
    for got, want, px in (
        (reading.x, truth.x, 64),
        (reading.y, truth.y, 64),
        (reading.size, truth.size, 64),
    ):
        assert np.abs(got[judged] - want[judged]).max() <= 1.5 / px


def test_flicker_small_on_real_large_on_noise():
    flickers = [storyboard_probe.agreement(*episode(s)[:2])["flicker"] for s in (0, 1, 2)]
    assert np.mean(flickers) <= 0.6 and max(flickers) <= 1.0, flickers
    videos, captions = _floors()
    assert storyboard_probe.agreement(videos["noise"], captions)["flicker"] >= 50
    assert storyboard_probe.agreement(videos["grey"], captions)["flicker"] == 0.0


def _swapped(truth, resolution, colour_of):
    """Renders ``truth`` with character k drawn in the colour of character colour_of[k]."""
    old = synthetic.CHARACTER_COLOURS.copy()
    try:
        synthetic.CHARACTER_COLOURS[:] = old[colour_of]
        return synthetic.render(truth, resolution)
    finally:
        synthetic.CHARACTER_COLOURS[:] = old


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identity_high_on_real_low_when_colours_swap_shapes(seed):
    frames, captions, truth = episode(seed)
    assert storyboard_probe.agreement(frames, captions)["identity"] >= 0.95
    # square<->triangle, circle<->tall, diamond<->cross: each colour on another shape.
    swapped = _swapped(truth, (32, 32), [2, 5, 0, 4, 3, 1])
    scores = storyboard_probe.agreement(swapped, captions)
    assert scores["detections"] > 0 and scores["identity"] <= 0.3, scores


def test_keyframes_and_inbetween_are_scored_apart():
    frames, captions, _ = episode(0)
    mask = np.zeros(len(frames), bool)
    mask[::15] = True
    broken = frames.copy()
    broken[~mask] = 128  # in-between frames lost: grey
    scores = storyboard_probe.agreement(broken, captions, keyframes=mask)
    assert scores["keyframes"]["both"] >= 0.95 and scores["inbetween"]["both"] == 0.0, scores
    assert scores["both"] == pytest.approx(scores["keyframes"]["both"] * mask.mean(), abs=1e-6)
    assert "keyframes" not in storyboard_probe.agreement(frames, captions)


def test_bad_input_is_a_clear_error():
    frames, captions, _ = episode(0, length=4)
    with pytest.raises(ValueError, match="uint8"):
        storyboard_probe.agreement(frames.astype(np.float32), captions)
    with pytest.raises(ValueError, match="uint8"):
        storyboard_probe.agreement(frames[0], captions)
    with pytest.raises(ValueError, match="4 frames but 3 prompts"):
        storyboard_probe.agreement(frames, captions[:3])
    with pytest.raises(ValueError, match="16x16"):
        probe.read(frames[:, :8, :8])
    with pytest.raises(ValueError, match="keyframes"):
        storyboard_probe.agreement(frames, captions, keyframes=np.ones(3, bool))
    with pytest.raises(ValueError, match="keyframes"):
        storyboard_probe.agreement(frames, captions, keyframes=np.ones(4, int))
