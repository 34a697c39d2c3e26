"""benchmarks/paper_tables.py: its plan of arms and budgets and its report (default run, no
models), and the whole tool on tiny settings end to end (slow: it trains every arm's stages)."""
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load():
    spec = importlib.util.spec_from_file_location(
        "paper_tables", os.path.join(ROOT, "benchmarks", "paper_tables.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper_tables"] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_plans_every_arm_with_the_same_budget(tmp_path):
    """Every table's arms, validated configs, and the budget rule: each arm's MTD stages add up to
    the same number of steps (DoD splits it over its depth; AR and ART•V get it whole)."""
    pt = load()
    plan = pt.main([f"--root={tmp_path}", "--settings=tiny", "--steps=6", "--dry_run"])["plan"]
    by_name = {name: (table, stages, budget) for table, name, stages, budget in plan}
    assert [t for t, *_ in plan] == ["1", "2a", "2a", "2a", "2b", "2b", "2b", "2c", "2c", "2c"]
    table, stages, budget = by_name["dod vs ar vs artv"]
    assert {"mtd_global", "mtd_local1", "mtd_ar", "mtd_artv"} <= set(stages)
    assert budget["mtd_global"] + budget["mtd_local1"] == budget["mtd_ar"] == budget["mtd_artv"] == 6
    assert by_name["depth 1"][2] == {"mtd_global": 6}
    assert sum(by_name["depth 3"][2].values()) == 6 and len(by_name["depth 3"][2]) == 3
    assert all(not s.startswith("mtd_") for s in by_name["vae random"][1])
    config = pt.arm_config(pt.Arm("2b", "x", (("model.mtd.condition_injection", "highest"),)),
                           "tiny", str(tmp_path))
    assert config.model.mtd.condition_injection == "highest"
    assert pt.arm_config(pt.Arm("2a", "n", vae_init="none"), "tiny", "").model.vae.temporal is False
    with pytest.raises(SystemExit):
        pt.main([f"--root={tmp_path}", "--tables=9", "--dry_run"])


def test_report_has_every_table_and_the_provenance():
    pt = load()
    gen = {"table": "1", "arm": "a", "mode": "dod", "length": "full", "frames": 10,
           "scene": (0.5, 0.1), "both": (0.2, 0.0), "thirds_both": [0.1, 0.2, 0.3]}
    rows = [gen, {**gen, "table": "2b"}, {**gen, "table": "2c", "note": "cannot reach",
                                         "thirds_both": None},
            {"table": "2a", "arm": "vae none", "recon_mse": (0.01, 0.001)}]
    text = pt.render({"args": {"settings": "tiny", "steps": 3, "sample_steps": 2, "seeds": [0],
                               "storyboards": ["/x/heldout.txt"]},
                      "summary": rows, "command": "python benchmarks/paper_tables.py --x",
                      "machine": "m", "time": "t", "wall_s": 1.0})
    for needle in ("Table 1", "Table 2a", "Table 2b", "Table 2c", "0.500 ± 0.100",
                   "0.10 / 0.20 / 0.30", "cannot reach", "--x", "Smoke-test settings",
                   "heldout.txt", "B-FVD-16"):
        assert needle in text, needle


def test_random_temporal_kernels_leave_the_rest():
    """Table 2a's random arm: temporal kernels drawn with std 1/sqrt(fan-in), all else as built."""
    import jax
    import numpy as np
    pt = load()
    params = {"params": {"conv_in": {"kernel": np.ones((3, 3, 4, 8), np.float32)},
                         "resnets_0": {"conv1_temporal": {"kernel": np.ones((3, 64, 64), np.float32),
                                                          "bias": np.zeros(64, np.float32)}}}}
    out = pt.randomize_temporal_kernels(params, jax.random.key(0))["params"]
    np.testing.assert_array_equal(out["conv_in"]["kernel"], params["params"]["conv_in"]["kernel"])
    np.testing.assert_array_equal(out["resnets_0"]["conv1_temporal"]["bias"], np.zeros(64))
    k = np.asarray(out["resnets_0"]["conv1_temporal"]["kernel"])
    assert abs(k.mean()) < 0.01 and abs(k.std() - 1 / np.sqrt(3 * 64)) < 0.01


@pytest.mark.slow  # trains a tiny family with five stages and generates with three schemes
def test_tiny_table_1_end_to_end(tmp_path):
    pt = load()
    out = tmp_path / "results.md"
    result = pt.main([f"--root={tmp_path}", "--settings=tiny", "--tables=1", "--steps=2",
                      "--sample_steps=2", "--seeds=0", f"--out={out}"])
    modes = {r["mode"] for r in result["rows"]}
    assert modes == {"dod", "ar", "artv"}
    calls = {r["mode"]: r["sequential_calls"] for r in result["rows"]}
    assert calls["dod"] == 2 and calls["artv"] == 10  # 10 frames: one loop per frame
    assert "Table 1" in out.read_text() and (tmp_path / "results.json").exists()
