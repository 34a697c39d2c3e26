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
