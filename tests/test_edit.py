"""Edits and chunk-level resume (dod/edit.py, pipeline.edit, dod/generation_state.py) on a tiny
family with random weights (L=4, depth 2, 10 frames: keyframes 0 3 6 9, three segments; decode
calls of 4 frames keeping 2).

An edit reruns only what a changed prompt touches: every frame outside the re-decoded windows is
the old video's byte for byte, and with the keyframes untouched the edited segment is what a full
run of the new storyboard draws. Edits chain, run the same on 1 and 8 devices, and refuse what
they cannot do without touching any state. A run killed after a chunk resumes bit for bit."""
import json
import os

import jax
import numpy as np
import pytest
from tiny_family import write_random_family

from nuwa_xl_jax import parallel
from nuwa_xl_jax.dod import edit, generation_state, pins, runner
from nuwa_xl_jax.dod.plan import make_plan
from nuwa_xl_jax.pipeline import NuwaXLPipeline

PROMPTS = ["fred walks left in the cave"] * 5 + ["wilma jumps in the desert"] * 5
EDITED = PROMPTS[:7] + ["barney enters in the forest"] * 2 + PROMPTS[9:]  # frames 7 and 8


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return NuwaXLPipeline.from_pretrained(write_random_family(str(tmp_path_factory.mktemp("fam"))))


@pytest.fixture(scope="module")
def original(pipe, tmp_path_factory):
    """The whole video of PROMPTS, with its state."""
    state = str(tmp_path_factory.mktemp("runs") / "state")
    return state, pipe(PROMPTS, steps=2, seed=7, state=state, progress=False)


def test_the_edit_plan_reruns_what_a_change_touches():
    plan = make_plan(4, depth=2, frames=10)  # level 1 segments: 0-3, 3-6, 6-9
    no = np.zeros(10, bool)
    inside = no.copy()
    inside[[7, 8]] = True  # between keyframes 6 and 9
    ed = edit.edit_plan(plan, inside, no)
    assert ed.segments_run == (0, 1) and ed.segments_full == (1, 3)
    assert ed.plan.levels[1].ids.tolist() == [2]
    assert edit.ranges(ed.regenerated) == [(7, 8)]
    key = no.copy()
    key[6] = True  # a keyframe: regenerated with keyframes 0 3 9 given, then both its segments
    ed = edit.edit_plan(plan, key, no)
    assert ed.plan.levels[0].given.tolist() == [[True, True, False, True]]
    assert ed.segments_run == (1, 2) and ed.plan.levels[1].ids.tolist() == [1, 2]
    assert edit.ranges(ed.regenerated) == [(4, 8)]
    pin = no.copy()
    pin[3] = True  # a new pin on keyframe 3: given everywhere, its two segments rerun
    ed = edit.edit_plan(pins.pin_plan(plan, [3]), no, pin)
    assert ed.segments_run == (0, 2) and edit.ranges(ed.regenerated) == [(1, 5)]
    deep = make_plan(4, depth=3, frames=28)  # a change reaches every level below it
    one = np.zeros(28, bool)
    one[9] = True  # a level-0 keyframe
    ed = edit.edit_plan(deep, one, np.zeros(28, bool))
    assert ed.segments_run == (1, 2, 6) and edit.ranges(ed.regenerated) == [(1, 17)]
    assert edit.describe(edit.ranges(ed.regenerated)) == "1-17"
    assert edit.describe([]) == "none"


def test_changed_frames_compares_prompts_and_pins():
    z = np.zeros((2, 2, 1), np.float32)
    prompts, pins = edit.changed_frames(["a", "b", "c"], ["a", "x", "c"], (np.array([0, 2]), z),
                                        (np.array([0]), z[:1] + 1))
    assert prompts.tolist() == [False, True, False] and pins.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="keeps the length"):
        edit.changed_frames(["a"], ["a", "b"], None, None)


def test_an_edit_keeps_every_other_frame_byte_for_byte(pipe, original, tmp_path):
    state, before = original
    after = pipe.edit(state, EDITED, new_state=str(tmp_path / "edit1"), progress=False)
    e = after.edit
    assert e["changed"] == "7-8" and e["regenerated"] == "7-8"
    assert e["segments_run"] == 1 and e["segments_full"] == 4 and e["keyframes_run"] == 0
    assert e["redecoded"] == "6-9" and (e["windows_run"], e["windows_full"]) == (2, 5)
    np.testing.assert_array_equal(after.frames[:6], before.frames[:6])  # byte for byte
    np.testing.assert_array_equal(after.latents[:7], before.latents[:7])
    np.testing.assert_array_equal(after.latents[9:], before.latents[9:])  # keyframe 9 given
    assert not np.array_equal(after.latents[7:9], before.latents[7:9])
    # the re-decoded windows are what decoding the whole edited video gives (random weights
    # decode nearly flat frames: the demo family shows the scene change, docs/generation.md)
    whole = np.concatenate(list(runner.decode_frames(pipe.family, after.latents)))
    np.testing.assert_array_equal(after.frames, whole)
    # keyframes untouched: the rerun segment is the one a full run of EDITED draws
    full = pipe(EDITED, steps=2, seed=7, progress=False)
    np.testing.assert_allclose(after.latents, full.latents, rtol=1e-5, atol=1e-5)
    saved = json.load(open(tmp_path / "edit1" / "state.json"))
    assert saved["prompts"] == EDITED and saved["edited_from"] == os.path.abspath(state)
    assert saved["finished_level"] == 1 and saved["seed"] == 7
    np.testing.assert_array_equal(np.load(tmp_path / "edit1" / "frames.npy"), after.frames)
    # edits chain: back to PROMPTS from the edited state
    back = pipe.edit(str(tmp_path / "edit1"), PROMPTS, new_state=str(tmp_path / "edit2"),
                     progress=False)
    np.testing.assert_array_equal(back.frames[:6], after.frames[:6])
    np.testing.assert_allclose(back.latents, before.latents, rtol=1e-5, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["edit1", "edit2"]


def test_the_same_edit_on_one_and_eight_devices(pipe, original, tmp_path):
    state, before = original
    one = parallel.make_mesh(devices=jax.devices()[:1])
    a = pipe.edit(state, EDITED, new_state=str(tmp_path / "one"), mesh=one, progress=False)
    b = pipe.edit(state, EDITED, new_state=str(tmp_path / "eight"), progress=False)
    assert len(jax.devices()) == 8
    np.testing.assert_allclose(a.latents, b.latents, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.frames[:6], b.frames[:6])
    assert a.edit == {**b.edit, "state": a.edit["state"]}


def test_what_an_edit_refuses_leaves_every_state_as_it_was(pipe, original, tmp_path):
    state, _ = original
    listing = sorted(os.listdir(state))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("data")
    with pytest.raises(generation_state.StateError, match="not an empty folder"):
        pipe.edit(state, EDITED, new_state=str(busy), progress=False)
    assert os.listdir(busy) == ["keep.txt"]
    with pytest.raises(ValueError, match="10 frames"):
        pipe.edit(state, EDITED[:9], new_state=str(tmp_path / "n"), progress=False)
    preview = str(tmp_path / "preview")
    pipe.preview(PROMPTS, steps=2, state=preview, progress=False)
    with pytest.raises(generation_state.StateError, match="did not finish.*--resume first"):
        pipe.edit(preview, EDITED, progress=False)
    assert sorted(os.listdir(state)) == listing and not os.path.exists(tmp_path / "n")
    assert not os.path.exists(preview + "_edit")


def test_a_run_killed_after_a_chunk_resumes_bit_for_bit(pipe, tmp_path, monkeypatch):
    one = parallel.make_mesh(devices=jax.devices()[:1])  # 3 segments in 3 chunks of 1
    full = pipe(PROMPTS, steps=2, seed=3, mesh=one, max_segments_per_call=1, progress=False)
    save = generation_state.save_chunk

    def killed(directory, state, level, chunks, chunk, buffer):
        save(directory, state, level, chunks, chunk, buffer)
        raise KeyboardInterrupt  # killed right after the first chunk of level 1 was saved

    monkeypatch.setattr(generation_state, "save_chunk", killed)
    state = str(tmp_path / "state")
    with pytest.raises(KeyboardInterrupt):
        pipe(PROMPTS, steps=2, seed=3, mesh=one, max_segments_per_call=1, state=state,
             progress=False)
    monkeypatch.undo()
    saved = json.load(open(os.path.join(state, "state.json")))
    assert saved["finished_level"] == 0
    assert saved["partial"] == {"level": 1, "chunks": 1, "chunk": 1}
    resumed = pipe.resume(state, mesh=one, progress=False)
    np.testing.assert_array_equal(resumed.latents, full.latents)
    np.testing.assert_array_equal(resumed.frames, full.frames)
    saved = json.load(open(os.path.join(state, "state.json")))
    assert saved["finished_level"] == 1 and saved["partial"] is None
    assert not os.path.exists(os.path.join(state, "partial.npy"))
