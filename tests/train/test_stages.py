"""The real stages on the tiny synthetic config: the T-KLVAE (with and without its GAN phase)
and the global MTD lower their loss clearly; the stage runner exports and skips finished stages."""
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from tiny_family import write_random_family

from nuwa_xl_jax import configuration, parallel
from nuwa_xl_jax.train import checkpoint, loop, stage_runner, stages


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    c = configuration.load("configs/synthetic.py:tiny")
    c.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    return c


@pytest.fixture(scope="module")
def mesh():
    """One device: these tests are about what the stages learn and export. Sharded training is
    tested where it is the point (tests/train/test_loop.py, test_multihost.py, test_checkpoint.py);
    here a (4, 2) mesh of fake CPU devices would double the compile and step time."""
    return parallel.make_mesh((1, 1), devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("run"))


def test_a_finished_stage_is_skipped_and_another_architectures_is_refused(config, tmp_path):
    """A stage whose export carries the done marker is not trained again (its step is returned);
    a marker of another architecture is an error that overwrites nothing."""
    workdir = write_random_family(str(tmp_path), stages=())  # config.json + the vae export
    stage = stages.build(configuration.validate(config), "vae", workdir)
    marker = os.path.join(stages.export_dir(workdir, "vae"), stage_runner.DONE)
    with open(marker, "w") as f:
        json.dump({"step": 30, "fingerprint": checkpoint.fingerprint(stage.model_config)}, f)
    assert stage_runner.run(config, workdir, None, ["vae"], progress=False) == {"vae": 30}
    with open(marker, "w") as f:
        json.dump({"step": 30, "fingerprint": "another"}, f)
    with pytest.raises(ValueError, match="another architecture. Nothing was overwritten"):
        stage_runner.run(config, workdir, None, ["vae"], progress=False)
    assert json.load(open(marker))["fingerprint"] == "another"


@pytest.mark.slow  # 30 VAE steps and a second run: ~90 s on 2 CPU cores; the skip is tested above
def test_vae_stage_learns_and_exports(config, mesh, workdir):
    """Measured on this config: the VAE loss falls to ~0.4x of the first logged value in 30 steps;
    the test asks for less than half. The export records LDM's latent scale; a finished stage is
    skipped when run again."""
    done = stage_runner.run(config, workdir, mesh, ["vae"], progress=False)
    assert done == {"vae": 30}
    _assert_learned_and_exported(workdir, "vae")
    _, meta = stages.read_export(stages.export_dir(workdir, "vae"))
    assert meta["latent_scale"] > 0
    again = stage_runner.run(config, workdir, mesh, ["vae"], progress=False)  # finished: skipped
    assert again == {"vae": 30}


@pytest.mark.slow  # the MTD step's compile and a sampled sheet: minutes on a 2-core CPU
def test_global_mtd_learns_and_samples(config, mesh, workdir):
    """Measured on this config: the MTD loss (unit-variance latents) falls to ~0.4x of the first
    logged value in 45 steps; the test asks for less than half. The stage samples a sheet and
    uses the VAE export's latent scale."""
    config.train.steps = 45
    config.train.sample_every = 45  # one sample sheet, at the end
    done = stage_runner.run(config, workdir, mesh, ["vae", "mtd_global"], progress=False)
    assert done == {"vae": 30, "mtd_global": 45}
    assert os.path.getsize(os.path.join(workdir, "mtd_global", "samples", "step_45.png")) > 0
    _assert_learned_and_exported(workdir, "mtd_global")
    _, meta = stages.read_export(stages.export_dir(workdir, "vae"))
    models = stages.MTDModels(config, workdir)
    assert models.scale == meta["latent_scale"] > 0 and models.vae.scaling_factor == models.scale


def _assert_learned_and_exported(workdir, name):
    with open(os.path.join(workdir, name, "metrics.jsonl")) as f:
        losses = [json.loads(line)["loss"] for line in f]
    assert losses[-1] < 0.5 * losses[0], (name, losses)
    assert os.path.exists(os.path.join(stages.export_dir(workdir, name), stage_runner.DONE))


def test_local_stage_starts_from_the_global_export(config, tmp_path):
    """local_train.init_from='mtd_global': the local stage's init is the global model's exported
    weights (every leaf), not a fresh draw; without it, a fresh draw. (Exports with random weights:
    what is copied does not depend on training.)"""
    workdir = write_random_family(str(tmp_path), stages=("mtd_global",))
    start, _ = stages.read_export(stages.export_dir(workdir, "mtd_global"))
    c = configuration.load("configs/synthetic.py:tiny")
    c.data.data_dir = config.data.data_dir
    c.local_train = c.train.copy_and_resolve_references()
    c.local_train.init_from = "mtd_global"
    configuration.validate(c)
    key = jax.random.key(1)
    warm = stages.build(c, "mtd_local1", workdir).init(key)
    cold = stages.build(config, "mtd_local1", workdir).init(key)
    flat = lambda t: jax.tree_util.tree_leaves(jax.device_get(nn.meta.unbox(t)))
    assert len(flat(warm)) == len(flat(start))
    for a, b in zip(flat(warm), flat(start)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(flat(cold), flat(start))
    )
    # the global stage itself keeps its block (train): no init_from there
    assert stages.train_block_for(c, "mtd_global") == configuration.TrainConfig.from_dict(c.train)
    assert stages.train_block_for(c, "mtd_local1").init_from == "mtd_global"


def test_init_from_must_name_an_earlier_mtd_stage(config):
    c = configuration.load("configs/synthetic.py:tiny")
    c.local_train = c.train.copy_and_resolve_references()
    c.local_train.init_from = "mtd_local1"
    with pytest.raises(
        configuration.ConfigError,
        match="local_train.init_from='mtd_local1' must name a stage trained before",
    ):
        configuration.validate(c)
    c.local_train.init_from = "vae"
    with pytest.raises(
        configuration.ConfigError, match="local_train.init_from must be '' or an MTD stage"
    ):
        configuration.validate(c)
    c.local_train.init_from = ""
    c.train.init_from = "mtd_global"  # the global stage cannot start from itself
    with pytest.raises(
        configuration.ConfigError,
        match="train.init_from='mtd_global' must name a stage trained before 'mtd_global'",
    ):
        configuration.validate(c)


@pytest.mark.slow  # a minute and a half; the GAN terms and a jitted GAN step: test_vae_loss.py
def test_vae_gan_phase_runs_and_trains_the_discriminator(config, mesh, tmp_path):
    c = configuration.load("configs/synthetic.py:tiny")
    c.data.data_dir = config.data.data_dir
    c.vae_loss.disc_start = 2
    c.vae_loss.disc_channels = 8
    c.vae_train.steps = 4
    c.vae_train.log_every = 1
    st = stages.build(c, "vae", str(tmp_path))
    r = loop.train(st, c.vae_train, str(tmp_path), mesh, progress=False)
    assert r.step == 4 and "disc" in r.state.params
    with open(tmp_path / "vae" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert rows[0]["disc_factor"] == 0 and rows[-1]["disc_factor"] == 1
    assert rows[-1]["d_weight"] > 0 and np.isfinite(rows[-1]["d_loss"])


def test_mtd_stage_needs_the_vae_export(config, tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported weights.*run the stage"):
        stages.build(config, "mtd_global", str(tmp_path))


def test_bad_stage_names(config, tmp_path):
    with pytest.raises(ValueError, match="local depth 5 is not in 1..1"):
        stages.build(config, "mtd_local5", str(tmp_path))
    with pytest.raises(ValueError, match="unknown stage"):
        stages.build(config, "gan", str(tmp_path))


@pytest.mark.slow  # the VAE stage (if not trained by the test above) and 60 ART•V steps
def test_artv_stage_learns_and_its_mask_opens(config, mesh, workdir):
    """The mtd_artv stage on [anchor, previous, new] windows of the tiny world: its loss falls to
    under half of the first logged value in 60 steps, and the masked-diffusion gate (0 at init)
    has moved to take part of the reference (neighbouring frames are nearly equal here)."""
    config.train.steps = 60
    done = stage_runner.run(config, workdir, mesh, ["vae", "mtd_artv"], progress=False)
    assert done["mtd_artv"] == 60
    with open(os.path.join(workdir, "mtd_artv", "metrics.jsonl")) as f:
        losses = [json.loads(line)["loss"] for line in f]
    assert losses[-1] < 0.5 * losses[0], losses
    params, _ = stages.read_export(stages.export_dir(workdir, "mtd_artv"))
    assert float(np.asarray(params["mask"]["params"]["gate"])) > 0.05


def test_vae_stage_computes_in_its_dtype_with_remat_and_resumes_either_way(config, tmp_path):
    """model.vae.dtype and .remat reach the vae stage's gradient (traced only); they are how it
    computes, not what it learns, so the fingerprint that guards a workdir is unchanged."""
    fast = config.copy_and_resolve_references()
    fast.model.vae.dtype, fast.model.vae.remat = "bfloat16", "full"
    stage = stages.vae_stage(fast, str(tmp_path))
    assert stage.model_config == stages.vae_stage(config, str(tmp_path)).model_config
    params = nn.meta.unbox(jax.eval_shape(stage.init, jax.random.key(0)))
    h, w = config.data.resolution
    frames = jax.ShapeDtypeStruct((1, stage.frames_per_example, h, w, 3), np.uint8)
    grads = lambda p, f: stage.grads(p, {"frames": f}, jax.random.key(1), 0)
    jaxpr = str(jax.make_jaxpr(grads)(params, frames))
    assert "bf16" in jaxpr and ("checkpoint" in jaxpr or "remat" in jaxpr)
