"""Diffusion targets are the latents generation decodes: every frame encoded among its true
consecutive neighbours, in calls as long as the VAE's training clips, times the VAE export's
latent scale (issue: train/inference mismatches 2, 3 and 4)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax import configuration
from nuwa_xl_jax.data import latent_cache, sources, synthetic
from nuwa_xl_jax.models.tklvae import TKLVAE
from nuwa_xl_jax.train import stage_runner, stages

F, C = 4, 1  # the tiny config's vae_frames / vae_context


@pytest.fixture(scope="module")
def temporal_vae():
    """A tiny T-KLVAE whose temporal layers really mix frames (random, not identity)."""
    config = configuration.load("configs/synthetic.py:tiny")
    assert (config.vae_frames, config.vae_context) == (F, C)
    vae = TKLVAE.from_config(config.model.vae)
    variables = jax.jit(vae.init)(jax.random.key(0), jnp.zeros((1, F, 32, 32, 3)))
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    variables = jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape) * (x.std() + 0.05)
                                          for x, k in zip(leaves, keys)])
    encode = jax.jit(lambda x: vae.apply(variables, x, method="encode")[0])
    return config, vae, variables, encode


class Reader:
    """One rendered episode behind the EpisodeReader interface."""

    def __init__(self, n=30):
        self.frames, self.captions, _ = synthetic.episode(0, 0, n, (32, 32))
        self.table = [{"name": "ep0", "frames": n}]

    def __len__(self):
        return 1

    def length(self, e):
        return len(self.frames)

    def read(self, e, idx):
        idx = np.asarray(idx)
        return self.frames[idx], [self.captions[i] for i in idx]


def test_cache_encodes_every_frame_among_its_neighbours_in_training_length_calls(
    temporal_vae, tmp_path
):
    config, vae, variables, encode = temporal_vae
    calls = []

    def recording(video):
        calls.append(video.shape[1])
        return np.asarray(encode(video)) * 2.0

    reader = Reader()
    latent_cache.encode_split(reader, recording, synthetic.tokenizer(16), str(tmp_path), "train",
                              F, C, latent_scale=2.0)
    assert set(calls) == {F}  # every call is exactly one training clip long
    cache = latent_cache.LatentReader(str(tmp_path), "train")
    video = reader.frames.astype(np.float32) / 127.5 - 1
    for t in range(C, len(video) - C):
        got = cache.read_latents(0, [t])[0][0]
        # frame t sits at a kept position (C .. F-C-1) of a call over consecutive frames
        candidates = [np.asarray(encode(video[s:s + F][None]))[0, t - s] * 2.0
                      for s in range(max(0, t - F + C + 1), min(t - C, len(video) - F) + 1)]
        assert min(np.abs(got - c).max() for c in candidates) < 1e-4, t
    # What the old on-the-fly path did: the level's frames (stride 5 here) encoded jointly, as if
    # neighbours. With temporal layers that mix frames these are other latents.
    # several episodes per call (the cache batches equal lengths): the same latents
    two = latent_cache.encode_video(recording, np.stack([reader.frames, reader.frames[::-1]]), F, C)
    np.testing.assert_allclose(two[0], cache.read_latents(0, np.arange(len(video)))[0], atol=1e-5)
    np.testing.assert_allclose(
        two[1], latent_cache.encode_video(recording, reader.frames[::-1], F, C), atol=1e-5
    )
    strided = [5, 10, 15, 20]
    joint = np.asarray(encode(video[strided][None]))[0] * 2.0
    cached = cache.read_latents(0, strided)[0]
    assert np.abs(joint - cached).max() > 1e-2


def test_one_latent_scale_from_the_vae_export(temporal_vae, tmp_path):
    config, vae, variables, encode = temporal_vae
    config = config.copy_and_resolve_references()
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.episodes = 1
    workdir = str(tmp_path / "run")
    stage_runner.save_config(config, workdir)
    scale = 2.5  # not the config's scaling_factor (0.18215): the export's 1/std is what counts
    stages.write_export(
        stages.export_dir(workdir, "vae"), {"vae": variables}, {"latent_scale": scale}
    )
    out = stages.ensure_latent_cache(config, workdir, progress=False)
    index = latent_cache.read_index(out, "train")
    assert index["latent_scale"] == scale and (index["vae_frames"], index["vae_context"]) == (F, C)
    frames = synthetic.episode(0, 0, F, (32, 32))[0]  # episodes of the tiny config start alike
    reader = sources.episode_reader(config.data, "train")
    frames = reader.read(0, np.arange(F))[0]
    mean = np.asarray(encode(frames[None].astype(np.float32) / 127.5 - 1))[0]
    cached = latent_cache.LatentReader(out, "train").read_latents(0, [0])[0][0]
    np.testing.assert_allclose(cached, mean[0] * scale, rtol=1e-4, atol=1e-4)
    models = stages.MTDModels(config, workdir)
    assert models.scale == scale and models.vae.scaling_factor == scale
    stages.build(config, "mtd_global", workdir)  # same scale: accepted
    # A cache made with another scale (another VAE) is refused, naming the fix.
    stages.write_export(
        stages.export_dir(workdir, "vae"), {"vae": variables}, {"latent_scale": 1.0}
    )
    with pytest.raises(ValueError, match="latent_scale=2.5.*latent_scale is 1.0.*rebuild"):
        stages.build(config, "mtd_global", workdir)


def test_vae_trains_on_the_clips_every_encode_and_decode_uses(tmp_path):
    from nuwa_xl_jax.dod import decode
    from nuwa_xl_jax.models import windows

    config = configuration.load("configs/synthetic.py")
    config.data.data_dir = str(tmp_path)
    config.stages = tuple(s for s in config.stages if s != "vae_image")
    stage = stages.vae_stage(config, str(tmp_path))
    window, context = decode.config_windows(config)
    assert stage.frames_per_example == config.vae_frames == window + 2 * context
    assert context >= 1  # every kept frame has true neighbours on both sides inside its call
    with pytest.raises(ValueError, match="vae_context=8 must be in 0..7"):
        windows.vae_windows(16, 8)
    bad = configuration.load("configs/synthetic.py")
    bad.vae_context = 9
    with pytest.raises(configuration.ConfigError, match="vae_context"):
        configuration.validate(bad)


def test_mtd_loss_refuses_frames():
    with pytest.raises(ValueError, match="cached latents"):
        stages.mtd_loss(None, None, {"frames": np.zeros((1, 4, 32, 32, 3), np.uint8)},
                        jax.random.key(0), 0.1)
