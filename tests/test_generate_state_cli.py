"""generate --until_level=0 --state=DIR writes the keyframe preview; --resume=DIR finishes the run,
frame for frame the uninterrupted command's (PNG frames, lossless)."""
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
    full = generate(family, f"--storyboard={STORY}", f"--out={tmp_path / 'full'}/")
    assert full.returncode == 0, full.stderr[-3000:]
    state = tmp_path / "state"
    prev = generate(family, f"--storyboard={STORY}", "--until_level=0", f"--state={state}",
                    f"--out={tmp_path / 'keys.gif'}")
    assert prev.returncode == 0, prev.stderr[-3000:]
    assert json.loads(prev.stdout.strip().splitlines()[-1])["frames"] == 4  # keyframes 0 3 6 9
    assert os.path.getsize(tmp_path / "keys_sheet.png") > 0
    again = generate(family, f"--storyboard={STORY}", "--until_level=0", f"--state={state}",
                     f"--out={tmp_path / 'keys2.gif'}")  # never into another run's state
    assert again.returncode == 1 and "not an empty folder" in again.stderr
    res = generate(family, f"--resume={state}", f"--out={tmp_path / 'resumed'}/")
    assert res.returncode == 0, res.stderr[-3000:]
    np.testing.assert_array_equal(read_video(str(tmp_path / "resumed")),
                                  read_video(str(tmp_path / "full")))
