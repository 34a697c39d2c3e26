"""benchmarks/dod_vs_ar.py without running models: the paper-anchor call counts and the report."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load():
    spec = importlib.util.spec_from_file_location(
        "dod_vs_ar", os.path.join(ROOT, "benchmarks", "dod_vs_ar.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_anchor_sequential_calls():
    rows = {r["method"]: r["calls"] for r in load().anchor_table(prefixes=(1, 8))}
    # 1024 frames, L=16: depth 3; segments 1 + 5 + 69 (those wholly past frame 1023 are dropped).
    assert rows["DoD batched (depth 3)"] == 3
    assert rows["DoD one call per segment"] == 75
    assert rows["AR, prefix P=1 (15 new frames/call)"] == 1 + 68
    assert rows["AR, prefix P=8 (8 new frames/call)"] == 1 + 126


def test_report_formats_a_result():
    mod = load()
    a = mod.parse(["--frames=10", "--repeats=2"])
    assert a.frames == 10 and a.repeats == 2 and a.max_segments is None
    method = dict(wall_s=1.0, frames_per_s=10.0, calls=2, model_evals_sequential=20,
                  frame_evals=160, first_s=3.0, level_wall_s=[0.4, 0.6])
    r = dict(machine="m", config="c", weights="w", frames=10, L=4, depth=2,
             segments_per_level=[1, 3], prefix=2, sampler="ddim", steps=10, guidance=1.0,
             max_segments=None, latent_shape=[8, 8, 4], repeats=2,
             methods={m: dict(method, calls=2 if m == "dod" else 4) for m in mod.METHODS},
             ratios=dict(ar_over_dod=1.5, per_segment_over_dod=2.0),
             dod_vs_per_segment_max_abs_diff=1e-5, anchor=mod.anchor_table())
    text = mod.report(r)
    assert "AR / DoD batched: 1.50x wall time, 2.0x sequential calls" in text
    assert "| DoD batched (depth 3) | 3 | 1.0x |" in text


def stubbed_run(monkeypatch, *argv):
    """run() with every model call stubbed: records the DoD plan and the AR call's arguments."""
    import numpy as np

    from nuwa_xl_jax.dod import baselines, engine, level_models
    from nuwa_xl_jax.dod.result import Sampled
    from nuwa_xl_jax.family import MTDModels

    mod = load()
    seen = {}

    def dod(plan, models, ids, null, schedule, shape, **kw):
        seen["plan"], seen["models"] = plan, models
        return Sampled(np.zeros((plan.frames, *shape), np.float32))

    def per_segment(plan, models, ids, null, schedule, shape, **kw):
        return Sampled(np.zeros((plan.frames, *shape), np.float32), 1, 0.0)

    def ar(model, ids, null, schedule, shape, **kw):
        seen["ar"] = kw
        return Sampled(np.zeros((len(ids), *shape), np.float32), 1, 0.0)

    monkeypatch.setattr(engine, "run", dod)
    monkeypatch.setattr(baselines, "dod_per_segment", per_segment)
    monkeypatch.setattr(baselines, "autoregressive", ar)
    monkeypatch.setattr(MTDModels, "init", lambda self, key, frames: "random weights")
    monkeypatch.setattr(level_models, "place_models", lambda models, mesh: tuple(models))
    mod.run(mod.parse(list(argv)))
    return seen


def test_ar_starts_with_nothing_given_like_the_generate_command(monkeypatch):
    """Not from the global model's keyframes (stride L-1 apart, not consecutive frames)."""
    seen = stubbed_run(monkeypatch, "--config=configs/synthetic.py:tiny", "--steps=1")
    assert seen["ar"].get("first") is None and seen["ar"].get("prefix_latents") is None
    assert seen["ar"]["prefix"] == 2  # L // 2: the tiny config's data.ar_prefix=8 does not fit L=4


def test_dod_runs_the_family_depth_cut_at_n(monkeypatch):
    """The tiny config (L=4, depth 2) asked for 4 frames: its depth-2 plan (strides 3, 1), not a
    depth-1 plan at stride 1."""
    seen = stubbed_run(monkeypatch, "--config=configs/synthetic.py:tiny", "--frames=4", "--steps=1")
    assert [lv.stride for lv in seen["plan"].levels] == [3, 1] and seen["plan"].frames == 4
    # random weights past the config's length: a family of the depth that covers them
    seen = stubbed_run(
        monkeypatch, "--config=configs/synthetic.py:tiny", "--frames=11", "--steps=1"
    )
    assert [lv.stride for lv in seen["plan"].levels] == [9, 3, 1]


def test_trained_family_past_its_length_needs_extend(tmp_path):
    import pytest

    from nuwa_xl_jax import configuration
    from nuwa_xl_jax.train import stage_runner

    stage_runner.save_config(configuration.load("configs/synthetic.py:tiny"), str(tmp_path))
    mod = load()
    with pytest.raises(SystemExit, match="trained for 10 .*--extend"):
        mod.run(mod.parse([f"--workdir={tmp_path}", "--frames=11"]))
    with pytest.raises(SystemExit, match="--depth=3 differs from the trained"):
        mod.run(mod.parse([f"--workdir={tmp_path}", "--depth=3"]))
