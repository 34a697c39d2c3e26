"""Keyframe images in storyboards: a scene's "image" pins its first frame, top-level "keyframes"
pin any frame; images are cropped and resized to the family's resolution; every bad image or frame
is one error naming the scene or keyframe."""
import json

import numpy as np
import pytest
from PIL import Image

from nuwa_xl_jax.io import keyframe_images, storyboards

FRED = "fred jumps in the desert"
WILMA = "wilma walks left in the cave"


def _image(path, w, h, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(path)
    return str(path)


def _board(tmp_path, data, name="story.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_scene_image_pins_its_first_frame_and_keyframes_pin_any(tmp_path):
    _image(tmp_path / "a.png", 32, 32)
    _image(tmp_path / "b.png", 64, 32)
    path = _board(tmp_path, {"scenes": [{"prompt": FRED, "frames": 4},
                                        {"prompt": WILMA, "frames": 6, "image": "a.png"}],
                             "keyframes": [{"frame": 9, "image": str(tmp_path / "b.png")}]})
    board = storyboards.load_storyboard(path, 10)
    assert board == [FRED] * 4 + [WILMA] * 6
    assert [(p.frame, p.image) for p in board.pins] == [(4, str(tmp_path / "a.png")),
                                                        (9, str(tmp_path / "b.png"))]
    frames, images = keyframe_images.load_pins(board.pins, (16, 16))
    assert frames.tolist() == [4, 9] and images.shape == (2, 16, 16, 3)
    assert images.dtype == np.uint8


def test_yaml_scene_image(tmp_path):
    _image(tmp_path / "a.png", 8, 8)
    path = tmp_path / "story.yaml"
    path.write_text(f"- {{prompt: {FRED}, image: a.png}}\n- {WILMA}\n")
    assert [p.frame for p in storyboards.load_storyboard(str(path), 6).pins] == [0]


def test_images_are_center_cropped_then_resized(tmp_path):
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # the centre third: what a square crop keeps
    Image.fromarray(wide).save(tmp_path / "wide.png")
    out = keyframe_images.load_image(str(tmp_path / "wide.png"), "scene 1", (10, 10))
    assert out.shape == (10, 10, 3) and out.min() == 255


@pytest.mark.parametrize("data, match", [
    ({"scenes": [{"prompt": FRED, "image": "missing.png"}]}, r"scene 1 'image'.*does not exist"),
    ({"scenes": [FRED], "keyframes": [{"frame": 12, "image": "a.png"}]},
     r"keyframe 1: frame 12 is outside the video's 10 frames"),
    ({"scenes": [FRED], "keyframes": [{"frame": 0, "image": "a.png"}, {"frame": 0,
                                                                       "image": "a.png"}]},
     r"keyframe 2 pins frame 0, already pinned by keyframe 1"),
    ({"scenes": [FRED], "keyframes": [{"frame": "3", "image": "a.png"}]},
     r"keyframe 1: 'frame' must be an integer"),
    ({"scenes": [FRED], "keyframes": [{"image": "a.png"}]}, r"keyframe 1 must be a mapping"),
    ({"scenes": [FRED], "keyframes": {"frame": 0}}, r"'keyframes' must be a list"),
    ({"scenes": [{"prompt": FRED, "image": 3}]}, r"scene 1: 'image' must be a file path"),
    ({"scenes": [FRED], "keyframes": [{"frame": 1, "image": "bad.png"}]},
     r"keyframe 1: cannot read image"),
])
def test_bad_keyframes_are_one_clear_error(tmp_path, data, match):
    _image(tmp_path / "a.png", 8, 8)
    (tmp_path / "bad.png").write_text("not an image")
    path = _board(tmp_path, data)
    with pytest.raises(ValueError, match=match):
        board = storyboards.load_storyboard(path, 10)
        keyframe_images.load_pins(board.pins, (8, 8))  # images are read before any model runs
