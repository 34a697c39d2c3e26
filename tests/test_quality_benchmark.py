"""benchmarks/quality.py end to end on a tiny family (random weights: plumbing, not quality)."""
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax import configuration
from nuwa_xl_jax.models.tklvae import TKLVAE
from nuwa_xl_jax.train import stage_runner, stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STORY = os.path.join(ROOT, "configs", "storyboards")


def load():
    spec = importlib.util.spec_from_file_location(
        "quality", os.path.join(ROOT, "benchmarks", "quality.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_like(tree, seed):
    """Small random weights of ``tree``'s shapes: no compiled init (minutes on a busy 2-core
    CPU)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(s.dtype), tree)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A workdir as training leaves it (as in test_generate_cli), plus an mtd_ar export."""
    workdir = str(tmp_path_factory.mktemp("family"))
    config = configuration.load("configs/synthetic.py:tiny")
    config.data.ar_prefix = 2  # < L=4, so the AR baseline can run
    stage_runner.save_config(config, workdir)
    vae = TKLVAE.from_config(config.model.vae)
    vae_params = jax.eval_shape(vae.init, jax.random.key(0), jnp.zeros((1, 1, 32, 32, 3)))
    stages.write_export(stages.export_dir(workdir, "vae"), {"vae": random_like(vae_params, 0)}, {})
    models = stages.MTDModels(config, workdir)
    shapes = jax.eval_shape(lambda k: models.init(k, 4), jax.random.key(0))
    for i, name in enumerate(("mtd_global", "mtd_local1", "mtd_ar")):
        stages.write_export(stages.export_dir(workdir, name), random_like(shapes, i + 1), {})
    return workdir


def test_quality_benchmark_runs_every_mode_and_writes_results(family, tmp_path, capsys):
    out = tmp_path / "q.json"
    story = tmp_path / "two.txt"  # two prompts over 10 frames: consecutive frames share prompts
    story.write_text("fred walks left in the cave\nwilma jumps with fred in the desert\n")
    result = load().main([f"--workdir={family}", "--seeds=0,1", f"--out={out}", "--steps=2",
                          f"--storyboards={story}", "--vae_episodes=1", "--vae_frames=12"])
    printed = capsys.readouterr().out
    # tiny: demo length == full length == 10 frames, so one length; dod and ar; 2 seeds each.
    assert result["lengths"] == {"demo": 10} and result["modes"] == ["dod", "ar"]
    assert len(result["runs"]) == 2 * 2 and len(result["means"]) == 2
    for r in result["runs"]:
        assert r["frames"] == 10 and 0 <= r["both"] <= r["scene"] <= 1
        assert os.path.getsize(r["video"]) > 0 and os.path.getsize(r["contact_sheet"]) > 0
        assert r["flicker"] is not None and r["flicker"] >= 0
    dod = [r for r in result["runs"] if r["mode"] == "dod"]
    assert all(r["keyframes"]["scene"] is not None for r in dod)  # the global level's frames
    mean = result["means"][0]
    assert mean["seeds"] == [0, 1]
    assert mean["scene"] == pytest.approx(
        (result["runs"][0]["scene"] + result["runs"][1]["scene"]) / 2
    )
    vae = result["vae_ceiling"]
    assert vae["episodes"] == 1 and vae["frames"] == 12
    assert vae["real"]["both"] >= 0.95  # real frames: the probe's own ceiling
    assert 0 <= vae["reconstructed"]["both"] <= 1
    assert json.loads(out.read_text())["means"] == result["means"]
    assert (
        "Mean over seeds:" in printed
        and "VAE ceiling" in printed
        and "| two | ar | 10 |" in printed
    )


def test_bad_flags_are_clear(tmp_path):
    mod = load()
    with pytest.raises(SystemExit):
        mod.parse(["--workdir=x", "--modes=dod,gan"])
    with pytest.raises(SystemExit):
        mod.parse(["--workdir=x", f"--storyboards={tmp_path}/none.txt"])
    config = configuration.load("configs/synthetic.py")
    assert mod.lengths(config, ["demo", "full", "100"]) == {"demo": 226, "100": 100}
    with pytest.raises(ValueError, match="not demo, full or a number"):
        mod.lengths(config, ["long"])


def test_guidance_flag_reaches_the_pipeline():
    """--guidance overrides the generate block's scale for every video; without it the block's
    (here: none, so the diffusion block's) is used."""
    import types
    mod = load()
    calls = []

    class Pipe:
        config = configuration.validate(configuration.load("configs/synthetic.py:tiny"))

        def write(self, video, prompts, **kw):
            calls.append(kw)
            return types.SimpleNamespace(agreement={"scene": 1.0}, path=video, contact_sheet="",
                                         seconds=0.0, sequential_calls=1)

    mod.run_one(Pipe(), ["a"], "v.mp4", "dod", 0)
    mod.run_one(Pipe(), ["a"], "v.mp4", "dod", 0, guidance=3.0)
    assert calls[0]["guidance"] is None and calls[1]["guidance"] == 3.0
    assert mod.parse(["--workdir=x", "--guidance=3"]).guidance == 3.0
