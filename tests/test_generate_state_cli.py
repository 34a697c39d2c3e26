"""generate --until_level=0 --state=DIR writes the keyframe preview; --resume=DIR finishes the run,
frame for frame the uninterrupted command's (PNG frames, lossless); --edit=DIR with a changed
storyboard rewrites only the frames the change touches: every other PNG file is byte-identical,
and it prints what changed and what ran against a full run."""
import json
import os
import subprocess
import sys

import numpy as np
from tiny_family import write_random_family

from nuwa_xl_jax.io.videos import read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
STORY = os.path.join(ROOT, "configs", "storyboards", "cartoon.txt")


def generate(family, *args):
    cmd = [sys.executable, "-m", "nuwa_xl_jax.generate", f"--workdir={family}", "--steps=2",
           *args]
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    return r


def test_preview_state_resume_equals_the_full_run(tmp_path):
    family = write_random_family(str(tmp_path / "family"))
    full = generate(family, f"--storyboard={STORY}", f"--out={tmp_path / 'full'}/",
                    f"--state={tmp_path / 'full_state'}")
    assert full.returncode == 0, full.stderr[-3000:]
    state = tmp_path / "state"
    prev = generate(family, f"--storyboard={STORY}", "--until_level=0", f"--state={state}",
                    f"--out={tmp_path / 'keys.gif'}")
    assert prev.returncode == 0, prev.stderr[-3000:]
    assert json.loads(prev.stdout.strip().splitlines()[-1])["frames"] == 4  # keyframes 0 3 6 9
    assert os.path.getsize(tmp_path / "keys_sheet.png") > 0
    res = generate(family, f"--resume={state}", f"--out={tmp_path / 'resumed'}/")
    assert res.returncode == 0, res.stderr[-3000:]
    np.testing.assert_array_equal(read_video(str(tmp_path / "resumed")),
                                  read_video(str(tmp_path / "full")))
    # the last scene (frame 9 of 10, a keyframe) changed: keyframe 9 is drawn again with 0 3 6
    # given, then segment 6-9
    lines = open(STORY).read().splitlines()
    changed = tmp_path / "changed.txt"
    changed.write_text("\n".join(lines[:-1] + ["barney jumps in the forest"]) + "\n")
    ed = generate(family, f"--edit={tmp_path / 'full_state'}", f"--storyboard={changed}",
                  f"--out={tmp_path / 'edited'}/")
    assert ed.returncode == 0, ed.stderr[-3000:]
    report = json.loads(ed.stdout.strip().splitlines()[-1])["edit"]
    assert report["changed"] == "9" and report["keyframes_run"] == 1
    assert report["segments_run"] == 2 and report["redecoded"] == "6-9"
    assert report["segments_full"] == 4 and report["state"] == f"{tmp_path / 'full_state'}_edit"
    assert "byte for byte" in ed.stdout
    names = sorted(os.listdir(tmp_path / "full"))
    assert names == sorted(os.listdir(tmp_path / "edited")) and len(names) == 10
    same = [n for n in names
            if open(tmp_path / "full" / n, "rb").read() == open(tmp_path / "edited" / n,
                                                                   "rb").read()]
    assert set(names[:6]) <= set(same)  # every frame outside the re-decoded windows
    assert os.path.isfile(tmp_path / "full_state_edit" / "frames.npy")
