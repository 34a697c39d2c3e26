"""Storyboards: the text, JSON and YAML formats, frame assignment and every error."""
import json
import os

import pytest

from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.io import storyboards

FRED = "fred jumps in the desert"
WILMA = "wilma walks left in the cave"
DINO = "dino grows with betty in the snow"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_text_equal_spans_earlier_scenes_take_the_remainder(tmp_path):
    path = _write(tmp_path, "story.txt", f"# a comment\n{FRED}\n\n  {WILMA}  \n# another\n{DINO}\n")
    prompts = storyboards.load_storyboard(path, 11)
    assert prompts == [FRED] * 4 + [WILMA] * 4 + [DINO] * 3
    assert [s.where for s in prompts.scenes] == ["line 2", "line 4", "line 6"]
    assert [(s.start, s.frames) for s in prompts.scenes] == [(0, 4), (4, 4), (8, 3)]


def test_shipped_storyboards_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prompts = storyboards.load_storyboard("configs/storyboards/cartoon.txt", 12)
    assert len(prompts) == 12 and os.path.isabs(prompts.path) and os.path.isfile(prompts.path)
    with pytest.raises(
        storyboards.StoryboardError, match="'configs/storyboards/none.txt' does not"
    ):
        storyboards.load_storyboard("configs/storyboards/none.txt", 12)


def test_a_file_without_extension_is_text(tmp_path):
    assert storyboards.load_storyboard(_write(tmp_path, "story", FRED), 3) == [FRED] * 3


def test_json_counts_that_sum_to_frames_are_used_as_written(tmp_path):
    scenes = [{"prompt": FRED, "frames": 2}, {"prompt": WILMA, "frames": 5}]
    path = _write(tmp_path, "s.json", json.dumps(scenes))
    assert storyboards.load_storyboard(path, 7) == [FRED] * 2 + [WILMA] * 5


def test_yaml_counts_are_rescaled_proportionally(tmp_path):
    path = _write(tmp_path, "s.yaml", f"scenes:\n  - prompt: {FRED}\n    frames: 1\n"
                                       f"  - {{prompt: {WILMA}, frames: 3}}\n")
    assert storyboards.load_storyboard(path, 8) == [FRED] * 2 + [WILMA] * 6
    long = storyboards.load_storyboard(path, 226)
    assert [s.frames for s in long.scenes] == [57, 169] and len(long) == 226  # tie: earlier


def test_rescaling_keeps_every_scene(tmp_path):
    scenes = [{"prompt": FRED, "frames": 1}, {"prompt": WILMA, "frames": 1000}]
    prompts = storyboards.load_storyboard(_write(tmp_path, "s.json", json.dumps(scenes)), 5)
    assert prompts == [FRED] + [WILMA] * 4


def test_yaml_list_of_strings_and_scenes_without_counts(tmp_path):
    path = _write(tmp_path, "s.yml", f"- {FRED}\n- prompt: {WILMA}\n")
    assert storyboards.load_storyboard(path, 5) == [FRED] * 3 + [WILMA] * 2


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
    with pytest.raises(storyboards.StoryboardError, match=match):
        storyboards.load_storyboard(_write(tmp_path, name, text), frames)


def test_missing_file_and_bad_frame_count(tmp_path):
    with pytest.raises(
        storyboards.StoryboardError, match=r"nope.txt' does not exist; give the path"
    ):
        storyboards.load_storyboard(str(tmp_path / "nope.txt"), 4)
    with pytest.raises(storyboards.StoryboardError, match=r"is a folder"):
        storyboards.load_storyboard(str(tmp_path), 4)
    with pytest.raises(
        storyboards.StoryboardError, match=r"frames must be a positive integer, got 0"
    ):
        storyboards.load_storyboard(_write(tmp_path, "s.txt", FRED), 0)


def test_check_vocabulary_names_the_words_and_the_line(tmp_path):
    path = _write(tmp_path, "s.txt", f"{FRED}\nfred dances in the disco\n{WILMA}\n")
    prompts = storyboards.load_storyboard(path, 6)
    with pytest.raises(
        storyboards.StoryboardError,
        match=r"s.txt: words not in .*\n  line 2 \('fred dances "
        r"in the disco'\): dances, disco\n.*Known words: fred",
    ):
        storyboards.check_vocabulary(prompts, synthetic.tokenizer())
    storyboards.check_vocabulary(storyboards.load_storyboard(_write(tmp_path, "ok.txt", FRED), 3),
                        synthetic.tokenizer())
    with pytest.raises(storyboards.StoryboardError, match=r"frames 2-3 \('fred sings'\): sings"):
        storyboards.check_vocabulary(
            [FRED, FRED, "fred sings", "fred sings"], synthetic.tokenizer()
        )
