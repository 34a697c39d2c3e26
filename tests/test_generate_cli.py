"""The generate command on a model family with random weights (timing and plumbing do not depend
on training): exact lengths, video + contact sheet written, bad storyboards are one clear line."""
import json
import os
import subprocess
import sys

import pytest
from cpu_flags import xla_flags
from tiny_family import STAGES, write_random_family

from nuwa_xl_jax.io.videos import read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, XLA_FLAGS=xla_flags(2), JAX_PLATFORMS="cpu",
           PYTHONPATH=ROOT)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A workdir as training leaves it: config.json and every stage exported (random weights)."""
    return write_random_family(str(tmp_path_factory.mktemp("family")), STAGES + ("mtd_artv",))


def generate(family, tmp_path, *args, frames=10, storyboard=None):
    if storyboard is None:
        storyboard = os.path.join(ROOT, "configs", "storyboards", "cartoon.txt")
    cmd = [sys.executable, "-m", "nuwa_xl_jax.generate", f"--workdir={family}",
           f"--storyboard={storyboard}", f"--frames={frames}", f"--out={tmp_path / 'v.mp4'}",
           "--steps=2", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def test_exact_length_video_and_contact_sheet(family, tmp_path):
    story = tmp_path / "story.txt"
    story.write_text("fred walks left in the cave\nwilma jumps in the desert\n")
    r = generate(family, tmp_path, frames=7, storyboard=str(story))  # trained: 10 frames; cut to 7
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 7 and summary["sequential_model_calls"] == 2
    assert read_video(str(tmp_path / "v.mp4")).shape[0] == 7
    assert os.path.getsize(tmp_path / "v_sheet.png") > 0
    assert {"frames", "scene", "characters", "both"} <= set(summary["storyboard_agreement"])
    again = generate(family, tmp_path, frames=7, storyboard=str(story))  # never overwrites
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_more_frames_than_trained_is_one_clear_line(family, tmp_path):
    """The tiny family is trained at depth 2 (10 frames): 11 frames would run a level no model was
    trained for, so it is refused before any model is loaded, naming the length and the flags."""
    r = generate(family, tmp_path, frames=11)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "trained for 10" in r.stderr and "--frames=10" in r.stderr and "--extend" in r.stderr
    assert not os.path.exists(tmp_path / "v.mp4")
    # --extend lifts the limit (it fails later, on the storyboard, not on the length)
    r = generate(family, tmp_path, "--extend", frames=11, storyboard=str(tmp_path / "none.txt"))
    assert r.returncode == 1 and "trained for" not in r.stderr and "none.txt" in r.stderr


@pytest.mark.parametrize("text,match", [
    ("", "no prompts"),
    ("# only a comment\n", "no prompts"),
    ("fred flies in the desert\n", "flies"),
])
def test_bad_storyboards_are_one_clear_line(family, tmp_path, text, match):
    path = tmp_path / "story.txt"
    path.write_text(text)
    r = generate(family, tmp_path, storyboard=str(path))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and match in r.stderr, r.stderr[-2000:]


def test_zero_frame_scene_and_missing_workdir(family, tmp_path):
    path = tmp_path / "story.json"
    path.write_text(json.dumps([{"prompt": "fred stands in the cave", "frames": 0}]))
    r = generate(family, tmp_path, storyboard=str(path))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "frames" in r.stderr
    r = generate(str(tmp_path / "nowhere"), tmp_path)
    assert r.returncode == 1 and "config.json" in r.stderr and "Traceback" not in r.stderr


def test_artv_mode_one_call_per_frame(family, tmp_path):
    """--mode=artv: ART•V frame by frame (the anchor drawn first), one sampler loop per frame."""
    story = tmp_path / "story.txt"
    story.write_text("fred walks left in the cave\nwilma jumps in the desert\n")
    r = generate(family, tmp_path, "--mode=artv", frames=5, storyboard=str(story))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 5 and summary["sequential_model_calls"] == 5
    assert read_video(str(tmp_path / "v.mp4")).shape[0] == 5
    assert os.path.getsize(tmp_path / "v_sheet.png") > 0


def test_an_unknown_word_is_refused_before_any_weight_loads(tmp_path, monkeypatch):
    """check_vocabulary runs on the family's tokenizer, built from its config alone, before the
    pipeline loads a weight (it used to run after, inside generation)."""
    from nuwa_xl_jax import configuration, generate
    from nuwa_xl_jax.io.storyboards import StoryboardError
    from nuwa_xl_jax.train import stage_runner

    workdir = str(tmp_path / "family")
    stage_runner.save_config(configuration.load("configs/synthetic.py:tiny"), workdir)
    monkeypatch.setattr(generate.NuwaXLPipeline, "from_pretrained",
                        lambda *a, **k: pytest.fail("weights loaded before the vocabulary check"))
    story = tmp_path / "story.txt"
    story.write_text("fred walks left in the cave\nfred rides a dragon\n")
    with pytest.raises(StoryboardError, match="dragon"):
        generate.main([f"--workdir={workdir}", f"--storyboard={story}", "--frames=4",
                       f"--out={tmp_path / 'v.mp4'}", "--compilation_cache=off"])
