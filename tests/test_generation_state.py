"""Preview, state and resume on a tiny family with random weights: a run stopped after the global
level (a preview with state) and resumed equals the uninterrupted run byte for byte; the preview's
keyframes are that run's; a state folder never overwrites another run's; another family's state
is refused."""
import json
import os

import numpy as np
import pytest
from tiny_family import write_random_family

from nuwa_xl_jax.dod import generation_state
from nuwa_xl_jax.pipeline import NuwaXLPipeline

PROMPTS = ["fred walks left in the cave"] * 5 + ["wilma jumps in the desert"] * 5


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return NuwaXLPipeline.from_pretrained(write_random_family(str(tmp_path_factory.mktemp("fam"))))


def test_preview_then_resume_is_the_uninterrupted_run(pipe, tmp_path):
    full = pipe(PROMPTS, steps=2, seed=7, progress=False)
    state = str(tmp_path / "state")
    preview = pipe.preview(PROMPTS, steps=2, seed=7, state=state, progress=False)
    assert preview.keyframes[0].indices.tolist() == [0, 3, 6, 9]
    np.testing.assert_array_equal(preview.latents, full.latents[[0, 3, 6, 9]])
    saved = json.load(open(os.path.join(state, "state.json")))
    assert saved["finished_level"] == 0 and saved["seed"] == 7
    assert saved["sampling"]["steps"] == 2 and saved["prompts"] == PROMPTS
    resumed = pipe.resume(state, progress=False)  # the stopped run, continued from level 1
    np.testing.assert_array_equal(resumed.latents, full.latents)
    np.testing.assert_array_equal(resumed.frames, full.frames)
    assert json.load(open(os.path.join(state, "state.json")))["finished_level"] == 1


def test_state_never_overwrites_and_another_familys_state_is_refused(pipe, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("data")
    with pytest.raises(generation_state.StateError, match="not an empty folder"):
        pipe.preview(PROMPTS, steps=2, state=str(busy), progress=False)
    assert os.listdir(busy) == ["keep.txt"]
    state = str(tmp_path / "s")
    pipe.preview(PROMPTS, steps=2, state=state, progress=False)
    path = os.path.join(state, "state.json")
    data = json.load(open(path))
    json.dump({**data, "fingerprint": "0" * 64}, open(path, "w"))
    with pytest.raises(generation_state.StateError, match="another model family"):
        pipe.resume(state, progress=False)
    with pytest.raises(generation_state.StateError, match="holds no state.json"):
        pipe.resume(str(busy), progress=False)
