"""Storyboards (formats and every error), video writers (round trips, overwrite), contact sheets."""
import json
import os

import numpy as np
import pytest

from nuwa_xl_jax import io
from nuwa_xl_jax.data import synthetic

FRED = "fred jumps in the desert"
WILMA = "wilma walks left in the cave"
DINO = "dino grows with betty in the snow"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------------------------
# Storyboards


def test_text_equal_spans_earlier_scenes_take_the_remainder(tmp_path):
    path = _write(tmp_path, "story.txt", f"# a comment\n{FRED}\n\n  {WILMA}  \n# another\n{DINO}\n")
    prompts = io.load_storyboard(path, 11)
    assert prompts == [FRED] * 4 + [WILMA] * 4 + [DINO] * 3
    assert [s.where for s in prompts.scenes] == ["line 2", "line 4", "line 6"]
    assert [(s.start, s.frames) for s in prompts.scenes] == [(0, 4), (4, 4), (8, 3)]


def test_a_file_without_extension_is_text(tmp_path):
    assert io.load_storyboard(_write(tmp_path, "story", FRED), 3) == [FRED] * 3


def test_json_counts_that_sum_to_frames_are_used_as_written(tmp_path):
    scenes = [{"prompt": FRED, "frames": 2}, {"prompt": WILMA, "frames": 5}]
    path = _write(tmp_path, "s.json", json.dumps(scenes))
    assert io.load_storyboard(path, 7) == [FRED] * 2 + [WILMA] * 5


def test_yaml_counts_are_rescaled_proportionally(tmp_path):
    path = _write(tmp_path, "s.yaml", f"scenes:\n  - prompt: {FRED}\n    frames: 1\n"
                                       f"  - {{prompt: {WILMA}, frames: 3}}\n")
    assert io.load_storyboard(path, 8) == [FRED] * 2 + [WILMA] * 6
    long = io.load_storyboard(path, 226)
    assert [s.frames for s in long.scenes] == [57, 169] and len(long) == 226  # tie: earlier


def test_rescaling_keeps_every_scene(tmp_path):
    scenes = [{"prompt": FRED, "frames": 1}, {"prompt": WILMA, "frames": 1000}]
    prompts = io.load_storyboard(_write(tmp_path, "s.json", json.dumps(scenes)), 5)
    assert prompts == [FRED] + [WILMA] * 4


def test_yaml_list_of_strings_and_scenes_without_counts(tmp_path):
    path = _write(tmp_path, "s.yml", f"- {FRED}\n- prompt: {WILMA}\n")
    assert io.load_storyboard(path, 5) == [FRED] * 3 + [WILMA] * 2


@pytest.mark.parametrize("name,text,frames,match", [
    ("empty.txt", "# only comments\n\n", 4, r"empty.txt: the storyboard has no prompts"),
    ("empty.json", "[]", 4, r"no prompts"),
    ("empty.yaml", "", 4, r"no prompts"),
    ("zero.json", json.dumps([{"prompt": FRED, "frames": 0}]), 4,
     r"zero.json: scene 1: 'frames' is 0; a scene needs at least one frame"),
    ("neg.yaml", f"- prompt: {FRED}\n  frames: 2\n- prompt: {WILMA}\n  frames: -3\n", 4,
     r"neg.yaml: scene 2 \(line 3\): 'frames' is -3"),
    ("float.json", json.dumps([{"prompt": FRED, "frames": 2.5}]), 4,
     r"scene 1: 'frames' must be a positive integer, got 2.5"),
    ("nonstr.json", json.dumps([{"prompt": FRED}, {"prompt": 42}]), 4,
     r"scene 2: 'prompt' must be a string, got int 42"),
    ("nonstr.yaml", "- prompt: [a, b]\n", 4, r"scene 1 \(line 1\): 'prompt' must be a string"),
    ("many.txt", f"{FRED}\n{WILMA}\n{DINO}\n", 2,
     r"many.txt: 3 scenes but only 2 frames; .* ask for at least 3 frames or merge scenes"),
    ("bad.json", '[{"prompt": "a",}]', 4, r"bad.json: invalid JSON at line 1, column 17"),
    ("bad.yaml", "- prompt: [a\n", 4, r"bad.yaml: invalid YAML at line 2"),
    ("story.csv", FRED, 4, r"unknown storyboard format '.csv'; use .txt"),
    ("mixed.json", json.dumps([{"prompt": FRED, "frames": 2}, {"prompt": WILMA}]), 4,
     r"scene 2 has no 'frames' while other scenes do"),
    ("typo.json", json.dumps([{"prompt": FRED, "frame": 2}]), 4, r"unknown keys \['frame'\]"),
    ("noprompt.yaml", "- frames: 3\n", 4, r"scene 1 \(line 1\) has no 'prompt'"),
    ("map.json", json.dumps({"scene": []}), 4, r"a mapping with a 'scenes' list"),
    ("blank.json", json.dumps([{"prompt": "  "}]), 4, r"'prompt' is empty"),
])
def test_storyboard_errors(tmp_path, name, text, frames, match):
    with pytest.raises(io.StoryboardError, match=match):
        io.load_storyboard(_write(tmp_path, name, text), frames)


def test_missing_file_and_bad_frame_count(tmp_path):
    with pytest.raises(io.StoryboardError, match=r"nope.txt' does not exist; give the path"):
        io.load_storyboard(str(tmp_path / "nope.txt"), 4)
    with pytest.raises(io.StoryboardError, match=r"is a folder"):
        io.load_storyboard(str(tmp_path), 4)
    with pytest.raises(io.StoryboardError, match=r"frames must be a positive integer, got 0"):
        io.load_storyboard(_write(tmp_path, "s.txt", FRED), 0)


def test_check_vocabulary_names_the_words_and_the_line(tmp_path):
    path = _write(tmp_path, "s.txt", f"{FRED}\nfred dances in the disco\n{WILMA}\n")
    prompts = io.load_storyboard(path, 6)
    with pytest.raises(io.StoryboardError, match=r"s.txt: words not in .*\n  line 2 \('fred dances "
                                                 r"in the disco'\): dances, disco\n.*Known words: fred"):
        io.check_vocabulary(prompts, synthetic.tokenizer())
    io.check_vocabulary(io.load_storyboard(_write(tmp_path, "ok.txt", FRED), 3),
                        synthetic.tokenizer())
    with pytest.raises(io.StoryboardError, match=r"frames 2-3 \('fred sings'\): sings"):
        io.check_vocabulary([FRED, FRED, "fred sings", "fred sings"], synthetic.tokenizer())


# ---------------------------------------------------------------------------------------------
# Videos


def _video(frames=12, h=16, w=16):
    """A moving gradient: smooth enough for lossy codecs, different in every frame."""
    t = np.arange(frames)[:, None, None]
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 / (w - 1) + 8 * t) % 256
    g = (y * 255 / (h - 1))[None].repeat(frames, 0)
    b = np.broadcast_to((t * 20) % 256, r.shape)
    return np.stack([r, g, b], -1).astype(np.uint8)


def test_mp4_round_trip_streams_frames(tmp_path):
    video = _video(20)
    path = str(tmp_path / "out" / "v.mp4")
    with io.VideoWriter(path, 8, (16, 16)) as writer:
        for i in range(0, 20, 7):  # in pieces, as a decoder yields them
            writer.write(video[i:i + 7])
        writer.write(video[0])  # a single frame [H, W, 3]
    assert writer.frames_written == 21
    back = io.read_video(path)
    assert back.shape == (21, 16, 16, 3) and back.dtype == np.uint8
    err = np.abs(back[:20].astype(int) - video.astype(int))
    assert err.mean() < 12, err.mean()
    assert np.abs(back[:20].astype(int) - video[::-1].astype(int)).mean() > 2 * err.mean()


def test_mp4_odd_size_is_padded_to_even(tmp_path):
    video = _video(4, 15, 13)
    path = str(tmp_path / "odd.mp4")
    with io.VideoWriter(path, 24, (15, 13)) as writer:
        writer.write(video)
    back = io.read_video(path)
    assert back.shape == (4, 16, 14, 3)
    assert np.abs(back[:, :15, :13].astype(int) - video.astype(int)).mean() < 12


@pytest.mark.parametrize("name", ["frames/", "frames_no_ext"])
def test_png_folder_is_exact(tmp_path, name):
    video = _video(5)
    path = os.path.join(str(tmp_path), name)
    with io.VideoWriter(path, 8, (16, 16)) as writer:
        writer.write(video)
    np.testing.assert_array_equal(io.read_video(path), video)
    assert sorted(os.listdir(path))[0] == "frame_000000.png"


def test_gif_round_trip(tmp_path):
    video = _video(6)
    path = str(tmp_path / "v.gif")
    with io.VideoWriter(path, 10, (16, 16)) as writer:
        writer.write(video)
    back = io.read_video(path)
    assert back.shape == video.shape
    assert np.abs(back.astype(int) - video.astype(int)).mean() < 8


def test_refuses_to_overwrite_unless_asked(tmp_path):
    for name in ("v.mp4", "v.gif", "frames/"):
        path = os.path.join(str(tmp_path), name)
        with io.VideoWriter(path, 8, (16, 16)) as writer:
            writer.write(_video(3))
        with pytest.raises(FileExistsError, match=r"already .*pass overwrite=True"):
            io.VideoWriter(path, 8, (16, 16))
        with io.VideoWriter(path, 8, (16, 16), overwrite=True) as writer:
            writer.write(_video(2))
        assert len(io.read_video(path)) == 2, "overwriting replaces every earlier frame"


def test_writer_input_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown video format '.avi'"):
        io.VideoWriter(str(tmp_path / "v.avi"), 8, (16, 16))
    with io.VideoWriter(str(tmp_path / "f/"), 8, (16, 16)) as writer:
        with pytest.raises(ValueError, match=r"frames must be \[n, 16, 16, 3\]"):
            writer.write(np.zeros((2, 8, 8, 3), np.uint8))
        with pytest.raises(ValueError, match=r"must be uint8, got float32; .*to_uint8"):
            writer.write(np.zeros((2, 16, 16, 3), np.float32))


def test_a_failed_run_keeps_a_playable_partial_video(tmp_path):
    path = str(tmp_path / "v.mp4")
    with pytest.raises(RuntimeError, match="boom"):
        with io.VideoWriter(path, 8, (16, 16)) as writer:
            writer.write(_video(5))
            raise RuntimeError("boom")
    assert io.read_video(path).shape == (5, 16, 16, 3)


def test_to_uint8():
    np.testing.assert_array_equal(io.to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 3.0])),
                                  [0, 0, 128, 255, 255])


# ---------------------------------------------------------------------------------------------
# Contact sheets


def test_contact_sheet_rows_and_thumbnails(tmp_path):
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    level_indices = [[0, 15, 30], list(range(31))]
    collector = io.KeyframeCollector(level_indices, max_per_row=4)
    video = np.zeros((31, 16, 16, 3), np.uint8)
    video[:] = colours[np.arange(31) % 3][:, None, None]
    for i in range(0, 31, 8):
        collector.add(video[i:i + 8])
    levels = collector.levels
    assert [list(lv.indices) for lv in levels] == [[0, 15, 30], [0, 10, 20, 30]]
    assert [lv.total for lv in levels] == [3, 31]
    path = str(tmp_path / "sheet.png")
    prompts = [FRED] * 16 + [WILMA] * 15
    sheet = io.contact_sheet(levels, path, prompts, thumb_height=32)
    cols, th, tw = 4, 32, 32
    row_h = th + io.INDEX_HEIGHT + io.GAP
    assert sheet.size[0] >= io.LABEL_WIDTH + cols * (tw + io.GAP) + io.GAP
    assert sheet.size[1] == io.GAP + 2 * row_h + 12 * 2 + io.GAP
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[:2] == sheet.size[::-1]
    for k, lv in enumerate(levels):  # each thumbnail shows its frame, at its place
        for j, i in enumerate(lv.indices):
            y = io.GAP + k * row_h + th // 2
            x = io.LABEL_WIDTH + j * (tw + io.GAP) + tw // 2
            np.testing.assert_array_equal(pixels[y, x], colours[i % 3])
    with pytest.raises(FileExistsError, match=r"sheet.png' already exists"):
        io.contact_sheet(levels, path)
    wide = io.contact_sheet([(np.arange(40), video[np.arange(40) % 31])], path, overwrite=True,
                            thumb_height=32, max_per_row=16)
    assert wide.size[0] == io.LABEL_WIDTH + 16 * (tw + io.GAP) + io.GAP


def test_contact_sheet_input_errors(tmp_path):
    with pytest.raises(ValueError, match=r"level 0: frames must be uint8"):
        io.contact_sheet([(np.arange(2), np.zeros((2, 8, 8, 3), np.float32))],
                         str(tmp_path / "s.png"))
    with pytest.raises(ValueError, match=r"level 0: 3 indices but 2 frames"):
        io.contact_sheet([(np.arange(3), np.zeros((2, 8, 8, 3), np.uint8))],
                         str(tmp_path / "s.png"))
