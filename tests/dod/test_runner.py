"""Generation runs the plan of the depth the family was trained at (strides as trained), cut at N;
more frames than trained is a clear error unless extended; a shared local model never reads its
level embedding past num_levels; the probe is told which frames are keyframes."""
import jax
import numpy as np
import pytest
from test_engine import LATENT, NULL, SCHEDULE, mesh_of, prompts, toy_denoise, toy_params

from nuwa_xl_jax import configuration
from nuwa_xl_jax.dod import decode, engine, runner
from nuwa_xl_jax.dod.result import Sampled
from nuwa_xl_jax.family import MTDModels
from nuwa_xl_jax.metrics import storyboard_probe
from nuwa_xl_jax.pipeline import NuwaXLPipeline


def tiny_config(shared: bool = False):
    c = configuration.load("configs/synthetic.py:tiny")  # L=4, depth 2: 10 frames
    if shared:
        c.local_models = "shared"
        c.stages = ("vae", "mtd_global", "mtd_local")  # a valid shared config (MTDModels checks it)
        c.model.mtd.num_levels = c.data.depth
    return c


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """generate() on a tiny family with the sampler and the VAE stubbed out: records the plan and
    level models it runs and what the probe is given."""
    seen = {}

    def run(plan, models, ids, *a, **k):
        seen["plan"], seen["models"] = plan, models
        return Sampled(np.zeros((plan.frames, *LATENT), np.float32))

    def agreement(frames, prompts, keyframes=None):
        seen["keyframes"] = keyframes
        return {"frames": len(frames), "scene": 0.0, "characters": 0.0, "both": 0.0}

    monkeypatch.setattr(engine, "run", run)
    monkeypatch.setattr(decode, "sized_decode_fn", lambda *a, **k: (
        lambda z: np.zeros((*z.shape[:2], 32, 32, 3), np.uint8), 1))
    monkeypatch.setattr(storyboard_probe, "agreement", agreement)

    def generate(frames, shared=False, **kw):
        config = tiny_config(shared)
        family = runner.Family(config, MTDModels(config, None, vae_params={}), "global",
                            ["local"])
        out = tmp_path / f"v{len(list(tmp_path.iterdir()))}/"
        NuwaXLPipeline(family).write(str(out), ["fred walks left in the cave"] * frames,
                                     sheet=False, progress=False, **kw)
        return seen

    return generate


def test_a_short_video_runs_the_trained_plan_cut_at_n(captured):
    """A depth-2, L=4 family asked for 4 frames: the global model still runs at its trained
    stride 3 (not stride 1 over a depth-1 plan), and the local level fills in up to frame 3."""
    seen = captured(4)
    plan = seen["plan"]
    assert plan.depth == 2 and [lv.stride for lv in plan.levels] == [3, 1]
    assert plan.frames == 4 and [lv.num_segments for lv in plan.levels] == [1, 1]
    assert [m.params for m in seen["models"]] == ["global", "local"]
    # keyframes for the probe: frames written by levels above the last (0 and 3 of 0..3)
    assert seen["keyframes"].tolist() == [True, False, False, True]


def test_trained_length_plan_and_keyframes(captured):
    seen = captured(10)
    assert [lv.stride for lv in seen["plan"].levels] == [3, 1]
    assert np.flatnonzero(seen["keyframes"]).tolist() == [0, 3, 6, 9]


def test_more_frames_than_trained_is_a_clear_error(captured):
    with pytest.raises(ValueError, match=r"11 frames requested but this family was trained for "
                                         r"10 .*data.depth=2.*--frames=10.*--extend"):
        captured(11)


def test_extend_deepens_the_plan_reusing_the_deepest_local_model(captured):
    seen = captured(11, extend=True)
    plan = seen["plan"]
    assert plan.depth == 3 and [lv.stride for lv in plan.levels] == [9, 3, 1]
    assert [m.params for m in seen["models"]] == ["global", "local", "local"]
    assert [m.level for m in seen["models"]] == [None, None, None]  # separate models: plan level


def test_extended_shared_model_gets_its_deepest_trained_level(captured):
    seen = captured(11, shared=True, extend=True)
    assert [m.params for m in seen["models"]] == ["global", "local", "local"]
    assert [m.level for m in seen["models"]] == [None, None, 1]


def test_extend_needs_a_trained_local_model():
    c = tiny_config()
    c.data.depth = 1
    with pytest.raises(ValueError, match="trained only the global model"):
        runner.plan_for(c, 5, extend=True)


def test_shared_local_model_never_receives_a_level_past_num_levels():
    """The engine on an extended plan (depth 3 for a depth-2 shared family, num_levels=2): every
    level value the denoiser is called with indexes a row of the level embedding."""
    config = tiny_config(shared=True)
    levels = set()

    def denoise(params, x, t, ids, cond, mask, level):
        jax.debug.callback(lambda lv: levels.update(np.asarray(lv).ravel().tolist()), level)
        return toy_denoise(params, x, t, ids, cond, mask, level)

    plan = runner.plan_for(config, 11, extend=True)
    models = runner.level_models_for(config, denoise, toy_params(0), [toy_params(1)], plan.depth)
    out = engine.run(plan, models, prompts(11), NULL, SCHEDULE, LATENT, sampler="ddim", steps=1,
                     mesh=mesh_of(1))
    assert np.all(np.isfinite(np.asarray(out.latents)))
    assert levels == {0, 1} and max(levels) < config.model.mtd.num_levels


def test_generation_decodes_in_calls_of_the_vae_training_clip(monkeypatch, tmp_path):
    """Every decoder call is exactly one VAE training clip long (config.vae_frames), keeping the
    middle with vae_context frames of context, as the latent cache encoded the targets."""
    lengths = []

    def run(plan, models, ids, *a, **k):
        return Sampled(np.zeros((plan.frames, *LATENT), np.float32))

    def decode_fn(*a, **k):
        def fn(z):
            lengths.append(z.shape[1])
            return np.zeros((*z.shape[:2], 32, 32, 3), np.uint8)
        return fn, 2  # two windows' calls per device call

    monkeypatch.setattr(engine, "run", run)
    monkeypatch.setattr(decode, "sized_decode_fn", decode_fn)
    config = tiny_config()
    family = runner.Family(config, MTDModels(config, None, vae_params={}), "global", ["local"])
    NuwaXLPipeline(family).write(str(tmp_path / "v.mp4"), ["fred walks left in the cave"] * 10,
                                 sheet=False, progress=False, score=False)
    assert lengths and set(lengths) == {config.vae_frames}
    window, context = decode.config_windows(config)
    assert (window, context) == (config.vae_frames - 2 * config.vae_context, config.vae_context)
