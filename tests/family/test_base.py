"""The text-to-image base (family/base.py, configs/synthetic_base.py): a tiny base trains and is
written in convert's format with a checked manifest; a video family started from it is the base
frame by frame at step 0, and with train_layers='added' trains only what NUWA-XL adds."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax import configuration
from nuwa_xl_jax.configuration import files
from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.family import base, store
from nuwa_xl_jax.family.runtime import MTDModels
from nuwa_xl_jax.metrics import storyboard_probe
from nuwa_xl_jax.models.tklvae import TKLVAE, is_temporal_param
from nuwa_xl_jax.train import init_from, stage_runner, stages
from nuwa_xl_jax.weights.common import flatten
from nuwa_xl_jax.weights.unet import is_new_layer

STEPS = 2


def _base_config(tmp):
    config = configuration.load("configs/synthetic_base.py:tiny")
    config.data.data_dir = str(tmp / "tfds")
    for block in ("vae_image_train", "vae_train", "train"):
        config[block].update(steps=STEPS, log_every=1, checkpoint_every=STEPS, warmup_steps=1)
    config.vae_loss.disc_start = STEPS  # the decoder fine-tune's GAN loss from its first step
    config.vae_train.batch_size = 16  # other batches than vae_image's: a re-estimated scale differs
    return config


@pytest.fixture(scope="module")
def trained_base(tmp_path_factory):
    """configs/synthetic_base.py:tiny trained for 2 steps a stage, written with write_base."""
    tmp = tmp_path_factory.mktemp("base")
    config = _base_config(tmp)
    done = stage_runner.run(config, str(tmp / "run"), progress=False)
    out = base.write_base(str(tmp / "run"), str(tmp / "base"), quality={"note": "test"},
                          notes="2 steps a stage")
    return config, str(tmp / "run"), out, done


def test_a_tiny_base_trains_and_is_written_in_converts_format(trained_base):
    config, workdir, out, done = trained_base
    assert done == {"vae_image": STEPS, "vae": STEPS, "mtd_image": STEPS}
    manifest = base.read_manifest(out)
    assert manifest["steps"] == {"vae_image": STEPS, "vae": STEPS, "mtd_image": STEPS}
    assert manifest["notes"] == "2 steps a stage"
    assert manifest["quality"] == {"note": "test"} and manifest["config"]["stages"] == [
        "vae_image", "vae", "mtd_image"]
    assert all(s > 0 for s in manifest["train_seconds"].values())
    for folder, (component, kind) in base.COMPONENTS.items():
        meta = store.read_model_config(os.path.join(out, folder))
        assert meta["kind"] == kind and component in meta
        assert any(name.startswith(folder + "/") for name in manifest["files"])
    # the image VAE's latent scale travels with it; the UNet has no NUWA-XL layers
    assert meta_scale(out) == store.read_export(store.export_dir(workdir, "vae"))[1]["latent_scale"]
    unet = flatten(store.read_export(os.path.join(out, "unet"))[0]["mtd"]["params"])
    assert unet and not any(is_new_layer(k) for k in unet)


def test_the_decoder_fine_tune_holds_the_encoder_and_trains_with_the_gan_loss(trained_base):
    """vae (train_layers='decoder', GAN from its first step) continues vae_image: the encoder and
    quant_conv, so the latent space, are vae_image's bit for bit; the decoder moved."""
    _, workdir, _, _ = trained_base
    image = flatten(store.read_export(store.export_dir(workdir, "vae_image"))[0]["vae"]["params"])
    tuned, meta = store.read_export(store.export_dir(workdir, "vae"))
    tuned = flatten(tuned["vae"]["params"])
    assert meta["gan"] and meta["train_layers"] == "decoder"
    assert set(image) == set(tuned)
    held = [k for k in image if not k.startswith(("decoder", "post_quant_conv"))]
    assert held and all(np.array_equal(image[k], tuned[k]) for k in held)
    assert any(not np.array_equal(image[k], tuned[k]) for k in image if k.startswith("decoder"))
    # same latents, same scale (not one re-estimated on other batches)
    assert meta["latent_scale"] == store.read_export(
        store.export_dir(workdir, "vae_image"))[1]["latent_scale"]
    with open(os.path.join(workdir, "vae", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert any(r.get("disc_factor") == 1.0 and "d_loss" in r for r in rows)


def meta_scale(out):
    return store.read_model_config(os.path.join(out, "vae"))["latent_scale"]


def test_the_mtd_image_stage_sees_unrelated_single_frames(trained_base):
    config, workdir, _, _ = trained_base
    batch = {"latents": jnp.arange(2 * 3).reshape(2, 3, 1, 1, 1).astype(jnp.float32),
             "prompt_ids": jnp.arange(2 * 3 * 4).reshape(2, 3, 4), "mask": jnp.zeros((2, 3)),
             "level": jnp.array([5, 7])}
    single = stages.image_batch(batch)
    assert single["latents"].shape == (6, 1, 1, 1, 1) and single["mask"].shape == (6, 1)
    np.testing.assert_array_equal(single["prompt_ids"][4, 0], batch["prompt_ids"][1, 1])
    np.testing.assert_array_equal(single["level"], [5, 5, 5, 7, 7, 7])
    overrides = stages.stage_data_overrides(configuration.validate(config), "mtd_image")
    assert overrides["ar_stride"] == stages.image_stride(config) > 1 and overrides["ar_prefix"] == 0


def _video_config(out, tmp):
    config = configuration.load("configs/synthetic.py:tiny")
    config.data.data_dir = str(tmp / "tfds")
    for block, folder in (("vae", "vae"), ("mtd", "unet"), ("text", "text")):
        config.model[block].init_from = os.path.join(out, folder)
    config.vae_train.update(train_layers="added", steps=STEPS, log_every=1,
                            checkpoint_every=STEPS, warmup_steps=1)
    config.train.update(train_layers="added", steps=STEPS, log_every=1, checkpoint_every=STEPS,
                        warmup_steps=1)
    return config


def assert_family_is_the_base_at_step_0(config, out: str, base_config, workdir: str) -> None:
    """The video family ``config`` starts from the base in ``out``: its T-KLVAE encodes a clip as
    the image VAE does frame by frame, and its fresh MTD denoises every frame as the base UNet
    does, whatever the given frames."""
    config = configuration.validate(config)
    base_config = configuration.validate(base_config)
    stage_runner.save_config(config, workdir)
    # the video family's VAE: the base's image VAE with temporal layers at identity
    vae_stage = stages.build(config, "vae", workdir)
    vae_params = jax.jit(lambda k: nn.meta.unbox(vae_stage.init(k)))(jax.random.key(1))["vae"]
    image_vae, _ = store.read_export(os.path.join(out, "vae"))
    rs = np.random.RandomState(0)
    h, w = config.data.resolution
    clip = jnp.asarray(rs.uniform(-1, 1, (1, 4, h, w, 3)), jnp.float32)
    got = TKLVAE.from_config(config.model.vae).apply(vae_params, clip, method="encode")[0]
    want = TKLVAE.from_config(base_config.model.vae).apply(image_vae["vae"], clip,
                                                         method="encode")[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    store.write_export(store.export_dir(workdir, "vae"), {"vae": jax.device_get(vae_params)},
                       {"latent_scale": meta_scale(out)})
    # the video family's MTD: the base UNet frame by frame, whatever the given frames
    mtd_stage = stages.build(config, "mtd_global", workdir)
    params = jax.jit(lambda k: nn.meta.unbox(mtd_stage.init(k)))(jax.random.key(2))
    unet, _ = store.read_export(os.path.join(out, "unet"))
    models = MTDModels(config, workdir)
    image_models = MTDModels(base_config, None, image_vae["vae"])
    x = jnp.asarray(rs.randn(1, 4, *models.latent_shape), jnp.float32)
    t = jnp.asarray(rs.randint(0, 1000, (1, 4)))
    ids = jnp.asarray(models.tokenizer(["fred jumps in the cave"] * 4))[None]
    cond = jnp.asarray(rs.randn(1, 4, *models.latent_shape), jnp.float32)
    mask = jnp.array([[1.0, 0, 0, 1]])
    got = models.denoise(params, x, t, ids, cond, mask)
    text, _ = store.read_export(os.path.join(out, "text"))
    image_params = {"mtd": unet["mtd"], "text": text["text"]}
    for f in range(4):
        want = image_models.denoise(image_params, x[:, f:f + 1], t[:, f:f + 1], ids[:, f:f + 1],
                                    jnp.zeros_like(x[:, :1]), jnp.zeros((1, 1)))
        np.testing.assert_allclose(got[:, f:f + 1], want, rtol=1e-4, atol=1e-4,
                                   err_msg=f"frame {f}")


def test_a_family_started_from_the_base_is_the_base_frame_by_frame_at_step_0(trained_base,
                                                                              tmp_path):
    base_config, _, out, _ = trained_base
    assert_family_is_the_base_at_step_0(_video_config(out, tmp_path), out, base_config,
                                        str(tmp_path / "run"))


def test_the_default_starts_from_the_shipped_base_at_identity(tmp_path):
    """configs/synthetic.py as shipped: the checked base (checksums of every file), its config the
    one configs/synthetic_base.py gives, and the family the base frame by frame at step 0."""
    for component in base.COMPONENTS:
        base.check(os.path.join(base.SHIPPED, component))
    manifest = base.read_manifest(base.SHIPPED)
    base_config = configuration.load("configs/synthetic_base.py")
    for block in ("model", "diffusion"):  # as JSON holds it: tuples read back as lists
        assert manifest["config"][block] == json.loads(json.dumps(base_config[block].to_dict()))
    config = configuration.load("configs/synthetic.py")
    assert {config.model[b].init_from for b in ("vae", "mtd", "text")} == {
        files.shipped_base(c) for c in ("vae", "unet", "text")}
    config.data.data_dir = str(tmp_path / "tfds")
    assert_family_is_the_base_at_step_0(config, base.SHIPPED, base_config, str(tmp_path / "run"))


def test_train_layers_added_trains_only_the_new_layers(trained_base, tmp_path):
    _, _, out, _ = trained_base
    config = _video_config(out, tmp_path)
    config.stages = ("vae", "mtd_global")
    config.generate.enabled = False
    workdir = str(tmp_path / "run")
    assert stage_runner.run(config, workdir, progress=False) == {"vae": STEPS, "mtd_global": STEPS}
    start = flatten(store.read_export(os.path.join(out, "vae"))[0]["vae"]["params"])
    vae, meta = store.read_export(store.export_dir(workdir, "vae"))
    trained = flatten(vae["vae"]["params"])
    assert meta["latent_scale"] == meta_scale(out)  # the base's, as the UNet learnt it
    for k, v in trained.items():
        if is_temporal_param(k):
            assert k not in start
        else:
            np.testing.assert_array_equal(v, start[k], err_msg=k)
    assert any(not np.allclose(v, np.eye(v.shape[-1]) if v.ndim == 2 else 0)
               for k, v in trained.items() if is_temporal_param(k))
    unet = flatten(store.read_export(os.path.join(out, "unet"))[0]["mtd"]["params"])
    mtd = flatten(store.read_export(store.export_dir(workdir, "mtd_global"))[0]["mtd"]["params"])
    changed = {k for k, v in mtd.items() if k not in unet or not np.array_equal(v, unet[k])}
    assert changed and all(is_new_layer(k) for k in changed)


def test_a_damaged_or_missing_base_is_one_error_naming_the_file(trained_base, tmp_path):
    _, _, out, _ = trained_base
    import shutil

    copy = str(tmp_path / "base")
    shutil.copytree(out, copy)
    base.check(os.path.join(copy, "unet"))  # intact
    manifest = base.read_manifest(copy)
    victim = next(k for k in manifest["files"] if k.startswith("unet/params/"))
    with open(os.path.join(copy, victim), "ab") as f:
        f.write(b"x")
    block = configuration.validate(_video_config(copy, tmp_path)).model.mtd
    with pytest.raises(base.BaseError, match=f"{victim}.*checksum.*restore it"):
        init_from.start_weights(block, "model.mtd", "mtd")
    os.remove(os.path.join(copy, victim))
    with pytest.raises(base.BaseError, match=f"{victim} is missing"):
        base.check(os.path.join(copy, "unet"))
    with pytest.raises(base.BaseError, match="not a component"):
        base.check(os.path.join(copy, "elsewhere"))
    with open(os.path.join(copy, base.MANIFEST), "w") as f:
        f.write("{")
    with pytest.raises(base.BaseError, match="manifest.*cannot be read"):
        base.check(os.path.join(copy, "vae"))
    with pytest.raises(FileExistsError, match="not empty"):
        base.write_base(str(tmp_path / "nowhere"), out)


def test_the_shipped_base_when_missing_names_the_command_that_writes_it(monkeypatch, tmp_path):
    monkeypatch.setattr(base, "SHIPPED", str(tmp_path / "synthetic_base"))
    with pytest.raises(
        base.BaseError, match="shipped synthetic base is missing.*synthetic_base.py"
    ):
        base.check(str(tmp_path / "synthetic_base" / "vae"))
    assert files.shipped_base("unet").endswith(os.path.join("synthetic_base", "unet"))
    with pytest.raises(configuration.ConfigError, match="unknown base component"):
        files.shipped_base("clip")


def test_image_stages_and_added_layers_are_checked_once(tmp_path):
    config = configuration.load("configs/synthetic_base.py:tiny")
    config.model.mtd.temporal = True
    with pytest.raises(configuration.ConfigError, match="mtd_image.*model.mtd.temporal=False"):
        configuration.validate(config)
    config = configuration.load("configs/synthetic.py:tiny")
    config.train.train_layers = "some"
    with pytest.raises(configuration.ConfigError, match="train_layers must be 'all', 'added'"):
        configuration.validate(config)
    config.train.train_layers = "decoder"  # a VAE's switch
    with pytest.raises(configuration.ConfigError, match="train.train_layers='decoder' is for vae"):
        stages._fixed_mtd_layers(configuration.validate(config), configuration.validate(
            config).train, "mtd_global")
    config.train.train_layers = "added"  # a fresh MTD has no image layers to keep
    workdir = str(tmp_path)
    with pytest.raises(configuration.ConfigError, match="train.train_layers='added'.*init_from"):
        stages._fixed_mtd_layers(configuration.validate(config), configuration.validate(
            config).train, "mtd_global")
    config.vae_train.train_layers = "added"
    with pytest.raises(configuration.ConfigError, match="vae_train.train_layers='added'"):
        stages.build(config, "vae", workdir)
    config.vae_train.train_layers = "decoder"  # a fresh VAE has no encoder worth holding
    with pytest.raises(configuration.ConfigError, match="vae_train.train_layers='decoder'.*"
                                                        "starting weights"):
        stages.build(config, "vae", workdir)


def test_caption_patterns_cover_the_grammar():
    patterns = synthetic.caption_patterns()
    assert len(patterns) == len(set(patterns)) == 6 * 6 * 16
    parsed = [storyboard_probe.parse_caption(p) for p in patterns]
    assert {s for s, _ in parsed} == set(range(len(synthetic.SCENES)))
    assert {len(n) for _, n in parsed} == {1, 2, 3}
    assert {p.split()[1] for p in patterns} >= {"stands", "walks", "jumps", "enters", "leaves"}
    # every pattern is a caption the world writes: others in cast order
    video_captions = set(synthetic.episode(0, 0, 1200, (32, 32))[1])
    assert video_captions & set(patterns)


def test_base_quality_benchmark_reads_exports_and_checkpoints(trained_base, tmp_path, capsys):
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        "base_quality", os.path.join(root, "benchmarks", "base_quality.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, workdir, _, _ = trained_base
    out, sheet = tmp_path / "q.json", tmp_path / "sheet.png"
    result = bench.main([f"--workdir={workdir}", f"--unet_step={STEPS}", f"--vae_step={STEPS}",
                         "--steps=2", "--batch=96", "--vae_frames=20", f"--out={out}",
                         f"--sheet={sheet}"])
    assert result["unet"]["images"] == len(synthetic.caption_patterns())
    assert result["vae"]["real"]["both"] == 1.0 and result["vae"]["frames"] == 20
    for part in (result["vae"]["reconstructed"], result["unet"]):
        assert 0 <= part["both"] <= part["scene"] <= 1
    assert json.loads(out.read_text())["unet_step"] == STEPS and sheet.stat().st_size > 0
    assert "UNet, one image per caption pattern" in capsys.readouterr().out


def test_train_time_counts_only_the_steps_the_export_holds(tmp_path):
    """A run continued past the checkpoint it was exported at (a GAN fine-tune exported at a
    measured step) logged steps the base does not hold: they are not its training time."""
    workdir = str(tmp_path)
    os.makedirs(store.export_dir(workdir, "vae"))
    with open(os.path.join(store.export_dir(workdir, "vae"), "done.json"), "w") as f:
        json.dump({"step": 100}, f)
    with open(os.path.join(workdir, "vae", "metrics.jsonl"), "w") as f:
        for step in (50, 100, 150):
            f.write(json.dumps({"step": step, "steps_per_s": 1.0}) + "\n")
    assert base._steps_and_time(workdir, "vae") == (100, 100.0)
