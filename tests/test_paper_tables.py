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
    assert [t for t, *_ in plan] == ["1", "1", "2a", "2a", "2a", "2b", "2b", "2b", "2c", "2c",
                                     "2c"]
    table, stages, budget = by_name["dod vs ar vs artv"]
    assert {"mtd_global", "mtd_local1", "mtd_ar", "mtd_artv"} <= set(stages)
    assert (
        budget["mtd_global"] + budget["mtd_local1"] == budget["mtd_ar"] == budget["mtd_artv"] == 6
    )
    _, stages, budget = by_name["dod vs ar vs artv, depth 3"]  # the long setting
    assert {"mtd_global", "mtd_local1", "mtd_local2", "mtd_ar", "mtd_artv"} <= set(stages)
    assert (budget["mtd_global"] + budget["mtd_local1"] + budget["mtd_local2"] == budget["mtd_ar"]
            == budget["mtd_artv"] == 6)
    assert by_name["depth 1"][2] == {"mtd_global": 6}
    assert sum(by_name["depth 3"][2].values()) == 6 and len(by_name["depth 3"][2]) == 3
    assert all(not s.startswith("mtd_") for s in by_name["vae random"][1])
    config = pt.arm_config(pt.Arm("2b", "x", (("model.mtd.condition_injection", "highest"),)),
                           "tiny", str(tmp_path))
    assert config.model.mtd.condition_injection == "highest"
    assert pt.arm_config(pt.Arm("2a", "n", vae_init="none"), "tiny", "").model.vae.temporal is False
    with pytest.raises(SystemExit):
        pt.main([f"--root={tmp_path}", "--tables=9", "--dry_run"])


def test_the_long_families_can_run_at_a_smaller_L(tmp_path):
    """--long_frames_per_call sets L of the families compared at the depth-3 length only (Table
    2c's and Table 1's depth-3 family: the depth-3 length shrinks from (16-1)^3+1 = 3376 to
    (8-1)^3+1 = 344, AR's prefix to half the window); other arms keep the settings' L."""
    pt = load()
    depth3 = pt.Arm("2c", "depth 3", (("data.depth", 3),), family="depth3")
    c = pt.arm_config(depth3, "default", str(tmp_path), 8)
    assert c.data.frames_per_call == 8 and c.data.depth == 3
    assert c.data.episode_length >= 344
    assert pt.arm_config(depth3, "default", str(tmp_path)).data.frames_per_call == 16
    long1, = [arm for arm in pt.arms(["1"]) if arm.family == "table1_depth3"]
    c = pt.arm_config(long1, "default", str(tmp_path), 8)
    assert (c.data.frames_per_call, c.data.depth, c.data.ar_prefix) == (8, 3, 4)
    assert {"mtd_local2", "mtd_ar", "mtd_artv"} <= set(c.stages)
    for other in (pt.Arm("2b", "x", (("model.mtd.condition_injection", "highest"),)),
                  pt.arms(["1"])[0]):
        c = pt.arm_config(other, "default", str(tmp_path), 8)
        assert (c.data.frames_per_call, c.data.ar_prefix) == (16, 8)
    with pytest.raises(SystemExit):
        pt.main([f"--root={tmp_path}", "--tables=2c", "--long_frames_per_call=2", "--dry_run"])


def test_arms_flag_runs_a_subset_and_names_the_choices(tmp_path, capsys):
    pt = load()
    plan = pt.main([f"--root={tmp_path}", "--settings=tiny", "--tables=1,2c",
                    "--arms=table1_depth3,depth2", "--dry_run"])["plan"]
    assert [name for _, name, *_ in plan] == ["dod vs ar vs artv, depth 3", "depth 2"]
    with pytest.raises(SystemExit):
        pt.main([f"--root={tmp_path}", "--tables=2c", "--arms=table1", "--dry_run"])
    assert "depth1,depth2,depth3" in capsys.readouterr().err


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


def _png_video(folder, frames):
    from PIL import Image
    os.makedirs(folder)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(folder, f"frame_{i:05d}.png"))
    return str(folder)


def test_frechet_metrics_score_each_group_against_the_world(tmp_path, monkeypatch):
    """Each (arm, mode, length) group's kept videos are one set against the world acting out the
    same storyboard: the world's own renderings score ~0, black videos far worse. Cheap stand-in
    feature networks (mean and spread of each colour); the real ones are tested in tests/eval."""
    import types

    import numpy as np

    from nuwa_xl_jax.data import scripted
    from nuwa_xl_jax.io.storyboards import load_storyboard
    from nuwa_xl_jax.metrics import features
    pt = load()

    def colour_stats(x):
        x = np.asarray(x, np.float32).reshape(len(x), -1, 3)
        return np.concatenate([x.mean(1), x.std(1)], axis=1)

    fake = features.FeatureNetworks(colour_stats, colour_stats, {"random": True, "fake": 1}, True)
    monkeypatch.setattr(features, "load_feature_networks", lambda *a, **k: fake)
    story = os.path.join(ROOT, "configs", "storyboards", "heldout.txt")
    prompts = list(load_storyboard(story, 16))
    rows = []
    for seed in (0, 1):
        world = scripted.render_storyboard(prompts, (32, 32), seed)
        for mode, frames in (("dod", world), ("ar", np.zeros_like(world))):
            rows.append({"table": "1", "arm": "a", "mode": mode, "length": "demo", "frames": 16,
                         "storyboard": "heldout.txt", "seed": seed,
                         "video": _png_video(tmp_path / f"{mode}{seed}", frames)})
    summary = pt.summarize(rows, ("table", "arm", "mode", "length", "frames"))
    a = types.SimpleNamespace(fid_weights=None, fvd_weights=None, random_feature_weights=True,
                              storyboards=[story], reference_seeds=[0, 1], root=str(tmp_path),
                              seeds=[0, 1], out=str(tmp_path / "docs" / "results.md"))
    pt.frechet_metrics(summary, rows, a)
    sheets = pt.side_by_side(rows, a)  # world on top, then dod and ar, per seed
    assert sheets == [
        ("1", str(tmp_path / "docs" / "images" / "results_table1_heldout_16f_seed0.png"))
    ]
    assert sorted(os.listdir(tmp_path / "side_by_side")) == [
        "table1_heldout_16f_seed0.png", "table1_heldout_16f_seed1.png"]
    world_row, black_row = summary
    assert world_row["avg_fid"] < 1e-3 and world_row["b_fvd16"] < 1e-3
    assert black_row["avg_fid"] > 100 and black_row["b_fvd16"] > 100
    assert a.feature_networks["random"]
    text = pt.render({"args": {**vars(a), "settings": "default", "steps": 3, "sample_steps": 2,
                               "seeds": [0, 1]},
                      "summary": summary, "command": "c", "machine": "m", "time": "t",
                      "wall_s": 1.0, "sheets": sheets})
    assert f"{black_row['avg_fid']:.1f}" in text and "randomly initialised" in text
    assert "(images/results_table1_heldout_16f_seed0.png)" in text


def test_a_kept_video_is_not_generated_again(tmp_path):
    pt = load()

    class Pipe:
        calls = 0

        def __call__(self, *a, **k):
            raise AssertionError("generated again")

    out = tmp_path / "videos" / "x.mp4"
    os.makedirs(out.parent)
    open(out, "wb").close()
    import json
    row = {"scene": 0.5, "video": str(out)}
    json.dump({"sample_steps": 4, "row": row}, open(tmp_path / "videos" / "x.json", "w"))
    assert pt.score_video(Pipe(), ["p"], "dod", 0, 4, out=str(out)) == row
    with pytest.raises(AssertionError, match="generated again"):  # other sampler steps: new video
        pt.score_video(Pipe(), ["p"], "dod", 0, 8, out=str(out))


def test_random_temporal_kernels_leave_the_rest():
    """Table 2a's random arm: temporal kernels drawn with std 1/sqrt(fan-in), all else as built."""
    import jax
    import numpy as np
    pt = load()
    params = {
        "params": {
            "conv_in": {"kernel": np.ones((3, 3, 4, 8), np.float32)},
            "resnets_0": {
                "conv1_temporal": {
                    "kernel": np.ones((3, 64, 64), np.float32),
                    "bias": np.zeros(64, np.float32),
                }
            },
        }
    }
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
    rows = {(r["arm"], r["mode"]): r for r in result["rows"]}
    demo, long = "dod vs ar vs artv", "dod vs ar vs artv, depth 3"
    assert set(rows) == {(arm, m) for arm in (demo, long) for m in ("dod", "ar", "artv")}
    # 10 frames: DoD one loop per level, ART•V one per frame
    assert (
        rows[demo, "dod"]["sequential_calls"] == 2 and rows[demo, "artv"]["sequential_calls"] == 10
    )
    # the depth-3 family (L = 4) at its full length, (4-1)^3+1 = 28 frames, in every scheme
    assert {rows[long, m]["frames"] for m in ("dod", "ar", "artv")} == {28}
    assert (
        rows[long, "dod"]["sequential_calls"] == 3 and rows[long, "artv"]["sequential_calls"] == 28
    )
    assert "Table 1" in out.read_text() and (tmp_path / "results.json").exists()
