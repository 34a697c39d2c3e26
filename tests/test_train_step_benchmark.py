"""benchmarks/train_step.py on the vae stage: the compiled step's memory per clip, with the
VAE's own dtype and remat policy (what the flintstones VAE is sized by)."""
import json
import os
import subprocess
import sys

from cpu_flags import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_vae_step_reports_compiled_memory_per_clip(tmp_path):
    out = tmp_path / "rows.jsonl"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "train_step.py"),
                        "--config=configs/synthetic.py:tiny", "--stage=vae", "--steps=1",
                        "--warmup=0", "--config.vae_train.batch_size=2",
                        "--config.model.vae.remat=full", f"--json={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, XLA_FLAGS=xla_flags(1)))
    assert p.returncode == 0, p.stderr[-2000:]
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (row["stage"], row["dtype"], row["remat"]) == ("vae", "float32", "full")
    assert row["memory_bytes_per_clip"] == row["memory_bytes_per_device"] / 2 > 0
    assert "MiB/clip" in p.stdout
