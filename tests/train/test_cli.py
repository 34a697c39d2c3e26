"""The training command as a user runs it: exact resume after SIGKILL, SIGTERM saves and exits
cleanly, and bad input is one clear line with nothing overwritten."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cpu_flags import xla_flags

from nuwa_xl_jax.train import stages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def command(workdir, data_dir, *extra, steps=12):
    return [sys.executable, "-m", "nuwa_xl_jax.train", "--config=configs/synthetic.py:tiny",
            f"--workdir={workdir}", "--stages=vae", f"--config.data.data_dir={data_dir}",
            f"--config.vae_train.steps={steps}", "--config.vae_train.checkpoint_every=4",
            "--config.vae_train.log_every=1", "--config.vae_train.async_checkpoints=False", *extra]


ENV = dict(os.environ, XLA_FLAGS=xla_flags(4), JAX_PLATFORMS="cpu",
           PYTHONPATH=ROOT)


# Runs that train use one device: the same command, and half the compile of a 4-device program.
ONE = dict(ENV, XLA_FLAGS=xla_flags(1))


def run(cmd, timeout=600, env=ENV):
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _wait_for(path, proc, timeout=300):
    start = time.time()
    while not os.path.isdir(path):
        if proc.poll() is not None:
            pytest.fail(f"training ended before {path} appeared: {proc.stderr.read()[-2000:]}")
        if time.time() - start > timeout:
            proc.kill()
            pytest.fail(f"{path} did not appear in {timeout}s")
        time.sleep(0.02)


@pytest.mark.slow  # three runs of the CLI; the default run keeps test_loop's bitwise resume
def test_sigkill_then_same_command_resumes_exactly(tmp_path, data_dir):
    full = run(command(tmp_path / "full", data_dir), env=ONE)
    assert full.returncode == 0, full.stderr[-3000:]
    cmd = command(tmp_path / "killed", data_dir)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ONE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(tmp_path / "killed" / "vae" / "checkpoints" / "4", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    resumed = run(cmd, env=ONE)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stdout + resumed.stderr
    a, _ = stages.read_export(stages.export_dir(str(tmp_path / "full"), "vae"))
    b, _ = stages.read_export(stages.export_dir(str(tmp_path / "killed"), "vae"))
    import jax
    jax.tree.map(np.testing.assert_array_equal, a, b)  # bitwise, on CPU


@pytest.mark.slow  # a CLI training run; the default run keeps test_loop's SIGTERM save
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, data_dir):
    cmd = command(tmp_path, data_dir, steps=400)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ONE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(tmp_path / "vae" / "checkpoints" / "4", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM: saved a checkpoint at step" in out + err
    steps = sorted(int(d) for d in os.listdir(tmp_path / "vae" / "checkpoints") if d.isdigit())
    assert 4 <= steps[-1] < 400  # the signal may land while step 4 is being saved: then 4 is it
    from nuwa_xl_jax.train import checkpoint
    meta = checkpoint.Checkpointer(str(tmp_path / "vae" / "checkpoints")).read_meta(steps[-1])
    assert meta["stage"] == "vae"


@pytest.mark.parametrize("extra,match", [
    (["--config.vae_train.stpes=3"], "stpes"),
    (["--config.vae_train.batch_size=6"], "vae_train.batch_size=6 is not divisible by the 4"),
    (["--config.data.resolution=(30,30)"], "data.resolution=.*not divisible"),
])
def test_bad_config_is_one_clear_line(tmp_path, data_dir, extra, match):
    r = run(command(tmp_path, data_dir, *extra))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    import re
    assert re.search(match, r.stderr), r.stderr[-2000:]


# Two CLI training runs; the default run keeps test_checkpoint's and test_loop's refusal of a
# foreign checkpoint and the missing-dataset line below.
@pytest.mark.slow
def test_foreign_checkpoint_is_one_line_and_overwrites_nothing(tmp_path, data_dir):
    ok = run(command(tmp_path, data_dir, steps=4), env=ONE)
    assert ok.returncode == 0, ok.stderr[-3000:]
    before = sorted(os.listdir(tmp_path / "vae" / "checkpoints"))
    r = run(command(tmp_path, data_dir, "--config.model.vae.layers_per_block=2", steps=8), env=ONE)
    assert r.returncode == 1 and "another architecture" in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path / "vae" / "checkpoints")) == before


def test_missing_dataset_is_one_line(tmp_path):
    r = run([sys.executable, "-m", "nuwa_xl_jax.train", "--config=configs/flintstones.py:128",
             f"--workdir={tmp_path / 'f'}", "--stages=vae",
             f"--config.data.data_dir={tmp_path / 'd'}",
             f"--config.data.manual_dir={tmp_path / 'nowhere'}", "--config.vae_train.batch_size=4"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "nowhere" in r.stderr, r.stderr[-2000:]
