"""The evaluate command on the tiny model family (random weights; plumbing does not depend on
training): DoD and AR videos generated through the pipeline, Avg-FID, B-FVD-16 and the probe
against the synthetic world acting out the same storyboard, the JSON and the table; and every bad
input is one clear error before any model or feature network runs.

The feature networks are random here (the flag that allows it is passed explicitly) and run at
off-protocol sizes (Inception at 75 px, I3D at 193 px, the smallest they take) to keep CI fast.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cpu_flags import xla_flags
from tiny_family import STAGES, write_random_family

from nuwa_xl_jax import evaluation
from nuwa_xl_jax import io as nio
from nuwa_xl_jax.metrics import features
from nuwa_xl_jax.metrics.statistics import EvaluationError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, XLA_FLAGS=xla_flags(2), JAX_PLATFORMS="cpu",
           PYTHONPATH=ROOT)
STORY = os.path.join(ROOT, "configs", "storyboards", "cartoon.txt")
SMALL = ["--random_feature_weights", "--fid_size=75", "--fvd_size=193", "--fid_batch=16",
         "--fvd_batch=1", "--steps=2"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return write_random_family(str(tmp_path_factory.mktemp("family")))


def evaluate(*args):
    cmd = [sys.executable, "-m", "nuwa_xl_jax.evaluate", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)


# Minutes on 2 CPU cores (two modes x two seeds generated, then Inception and I3D compiled): the
# default run keeps the evaluate command's error paths below and test_artv_videos_are_scored (the
# same library generating through the pipeline and scoring).
@pytest.mark.slow
def test_dod_and_ar_on_the_tiny_family(family, tmp_path):
    out = tmp_path / "eval"
    r = evaluate(f"--workdir={family}", f"--storyboards={STORY}", "--modes=dod,ar", "--seeds=0,1",
                 "--frames=16", "--extend", f"--out={out}", *SMALL)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "RANDOM-WEIGHT FEATURE NETWORKS" in r.stderr  # said loudly
    report = json.loads((out / "metrics.json").read_text())
    assert report["warning"] == features.RANDOM_WARNING
    assert report["feature_networks"]["random"] is True
    assert "FID images at 75 px" in report["feature_networks"]["off_protocol"]
    assert report["reference"]["videos"] == 2 and report["reference"]["resolution"] == [32, 32]
    assert os.path.isfile(report["reference"]["cache"])  # cached for the next run
    for mode in ("dod", "ar"):
        res = report["results"][mode]
        assert res["videos"] == 2 and res["frames"] == 16
        # Random-weight generators against real frames: far from zero; one 16-frame block.
        assert res["avg_fid"] > 1 and res["b_fvd16"] > 1 and len(res["b_fvd16_per_block"]) == 1
        assert {"scene", "characters", "both", "flicker"} <= set(res["probe"])
    # The probe reads the real frames as following the storyboard (its honest top end).
    assert report["reference"]["probe"]["scene"] == 1.0
    assert report["reference"]["probe"]["both"] > 0.9
    assert len(report["runs"]) == 4 and {r["mode"] for r in report["runs"]} == {"dod", "ar"}
    table = (out / "metrics.md").read_text()
    assert table.startswith("**RANDOM-WEIGHT") and "| dod | 2 | 16 |" in table
    assert "| ar | 2 | 16 |" in table and "| reference (real) |" in table
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["dod"]["avg_fid"] == pytest.approx(report["results"]["dod"]["avg_fid"])


def test_missing_weights_is_one_clear_line(family, tmp_path):
    r = evaluate(f"--workdir={family}", f"--storyboards={STORY}", "--frames=16", "--extend",
                 f"--fid_weights={tmp_path / 'nope'}", f"--fvd_weights={tmp_path / 'nope2'}",
                 f"--out={tmp_path / 'eval'}")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "--fid_weights" in r.stderr and "convert --kind=inception" in r.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists()


def opts(tmp_path, family, **kw):
    base = dict(out=str(tmp_path / "eval"), workdir=family, storyboards=[STORY], frames=16,
                extend=True, modes=["dod"], progress=False)
    base.update(kw)
    return evaluation.Options(**base)


def write_video(path, frames):
    with nio.VideoWriter(str(path), 8, frames.shape[1:3]) as w:
        w.write(frames)
    return str(path)


def test_bad_inputs_fail_before_any_work(family, tmp_path):
    with pytest.raises(features.FeatureWeightsError, match="--random_feature_weights"):
        evaluation.evaluate(opts(tmp_path, family))  # no weights and no explicit random flag
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model_config.json").write_text(json.dumps({"kind": "i3d"}))
    with pytest.raises(features.FeatureWeightsError, match="holds converted 'i3d' weights"):
        evaluation.evaluate(opts(tmp_path, family, fid_weights=str(wrong), fvd_weights=str(wrong)))
    with pytest.raises(EvaluationError, match="B-FVD-16 needs videos of at least 16"):
        evaluation.evaluate(
            opts(tmp_path, family, frames=10, extend=False, random_feature_weights=True)
        )
    with pytest.raises(EvaluationError, match="has no trained AR baseline"):
        no_ar = write_random_family(str(tmp_path / "no_ar"), stages=("mtd_global", "mtd_local1"))
        evaluation.evaluate(opts(tmp_path, no_ar, modes=["dod", "ar"], random_feature_weights=True))
    with pytest.raises(EvaluationError, match="unknown \\['fvd'\\]"):
        evaluation.evaluate(opts(tmp_path, family, metrics=["fvd"], random_feature_weights=True))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text("{}")
    with pytest.raises(EvaluationError, match="pass --overwrite"):
        evaluation.evaluate(opts(tmp_path, family, random_feature_weights=True))
    assert (tmp_path / "eval" / "metrics.json").read_text() == "{}"  # nothing lost


def test_bad_videos_fail_before_any_feature_network_runs(family, tmp_path):
    rng = np.random.default_rng(0)
    a = write_video(tmp_path / "a.gif", rng.integers(0, 255, (17, 32, 32, 3), np.uint8))
    b = write_video(tmp_path / "b.gif", rng.integers(0, 255, (17, 32, 32, 3), np.uint8))
    small = write_video(tmp_path / "small.gif", rng.integers(0, 255, (17, 24, 24, 3), np.uint8))
    short = write_video(tmp_path / "short.gif", rng.integers(0, 255, (8, 32, 32, 3), np.uint8))
    # No weights and no random flag: each error must come before the networks would be loaded.
    base = dict(workdir=None, storyboards=[], frames=None, metrics=["avg_fid", "b_fvd16"])
    with pytest.raises(EvaluationError, match="mismatched resolutions: reference video"):
        evaluation.evaluate(opts(tmp_path, family, videos=f"{a},{b}", reference=small, **base))
    with pytest.raises(EvaluationError, match="mismatched resolutions: video"):
        evaluation.evaluate(opts(tmp_path, family, videos=f"{a},{small}", reference=b, **base))
    with pytest.raises(EvaluationError, match="needs --reference"):
        evaluation.evaluate(opts(tmp_path, family, videos=f"{a},{b}", **base))
    with pytest.raises(EvaluationError, match="matches no file"):
        evaluation.evaluate(
            opts(tmp_path, family, videos=str(tmp_path / "*.mp4"), reference=a, **base)
        )
    with pytest.raises(EvaluationError, match="3 videos but 2 storyboards"):
        evaluation.evaluate(opts(tmp_path, family, videos=f"{a},{b},{a}", reference=a,
                          **{**base, "storyboards": [STORY, STORY.replace("cartoon", "village")]}))
    with pytest.raises(EvaluationError, match="has 8 frames; B-FVD-16 needs at least 16"):
        evaluation.evaluate(
            opts(tmp_path, family, videos=f"{a},{b}", reference=f"{a},{short}", **base)
        )
    with pytest.raises(EvaluationError, match="short.gif has 8 frames"):
        evaluation.evaluate(opts(tmp_path, family, videos=f"{short},{a}", reference=a, **base))
    # the same video set is fine up to the networks (which this test never loads)
    with pytest.raises(features.FeatureWeightsError, match="--fid_weights"):
        evaluation.evaluate(opts(tmp_path, family, videos=f"{a},{b}", reference=a, **base))


def test_artv_videos_are_scored(tmp_path):
    """--modes=artv: ART•V videos generated through the pipeline and scored like the others."""
    family = write_random_family(str(tmp_path / "family"), STAGES + ("mtd_artv",))
    story = tmp_path / "story.txt"
    story.write_text("fred walks left in the cave\nwilma jumps in the desert\n")
    report = evaluation.evaluate(evaluation.Options(
        out=str(tmp_path / "eval"), workdir=family, storyboards=[str(story)], frames=4,
        modes=("artv",), seeds=(0,), metrics=("probe",), steps=1, reference_seeds=(0,),
        progress=False))
    res = report["results"]["artv"]
    assert res["videos"] == 1 and res["frames"] == 4
    assert {"scene", "characters", "both"} <= set(res["probe"])
    assert [(r["mode"], r["sequential_calls"]) for r in report["runs"]] == [("artv", 4)]
