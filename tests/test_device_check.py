"""benchmarks/device_check.py --tiny: every part of the accelerator check runs on CPU at tiny
sizes (the code paths a GPU run takes), each in a process of its own, and writes its JSON."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_device_check_tiny_runs_every_part(tmp_path):
    out = tmp_path / "check.json"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "device_check.py"),
                        "--tiny", "--repeats=1", f"--json={out}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-2000:]
    results = json.loads(out.read_text())
    assert list(results) == ["versions", "attention", "train", "dod", "plan"]
    for part, rows in results.items():
        assert rows and not any("error" in r for r in rows), (part, rows)
    (train,) = results["train"]  # remat full: the compiled step recomputes, the model does not
    assert train["hardware_gflop"] > train["model_gflop"] > 0
    (plan,) = results["plan"]
    assert 0 < plan["program_peak_bytes"] and 1 <= plan["auto_chunk"]
    assert "## dod" in p.stdout and "| case |" in p.stdout


def test_a_failing_part_is_reported_and_the_rest_runs(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "device_check.py"),
                        "--tiny", "--parts=versions", "--part_timeout=1",
                        f"--json={tmp_path / 'c.json'}"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0
    assert "timed out after 1 s" in json.loads((tmp_path / "c.json").read_text())["versions"][0][
        "error"]
