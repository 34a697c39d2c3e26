"""The main job end to end, on the tiny variant of the embedded default (the README's `make demo`
runs the default variant, which takes ~25 minutes): train every stage, then generate the video and
contact sheet, and a second run only reports them."""
import json
import os
import subprocess
import sys

import pytest
from cpu_flags import xla_flags

from nuwa_xl_jax.io.videos import read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_tiny_main_job(tmp_path):
    env = dict(
        os.environ, XLA_FLAGS=xla_flags(2), JAX_PLATFORMS="cpu"
    )
    cmd = [sys.executable, "-m", "nuwa_xl_jax.train", "--config=configs/synthetic.py:tiny",
           f"--workdir={tmp_path}", f"--config.data.data_dir={tmp_path / 'tfds'}"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 10 and summary["sequential_model_calls"] == 2
    assert read_video(summary["video"]).shape == (10, 32, 32, 3)
    assert os.path.getsize(summary["contact_sheet"]) > 0
    for stage in ("vae", "mtd_global", "mtd_local1"):
        assert os.path.exists(tmp_path / stage / "export" / "done.json")
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already generated" in again.stdout
