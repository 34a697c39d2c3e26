"""The grain pipeline: deterministic, resumable, sharded per process, global jax.Array batches;
the data config block; the latent cache."""
import jax
import numpy as np
import pytest

from nuwa_xl_jax import parallel
from nuwa_xl_jax.configuration import ConfigError
from nuwa_xl_jax.data import latent_cache, pipeline, synthetic
from nuwa_xl_jax.data.config import data_block, validate_data


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    c = data_block()
    c.data_dir = str(tmp_path_factory.mktemp("tfds"))
    c.episodes, c.test_episodes, c.episode_length = 4, 0, 130
    c.resolution, c.chunk_frames = (16, 16), 8
    c.frames_per_call, c.depth, c.level = 4, 3, -1   # window 28
    c.samples_per_episode, c.batch_size = 6, 4
    return c


def take(it, n):
    return [next(it) for _ in range(n)]


def same(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_batch_contents_match_the_episode(config):
    b = next(pipeline.make_iterator(config))
    assert b["frames"].shape == (4, 4, 16, 16, 3) and b["frames"].dtype == np.uint8
    assert b["prompt_ids"].shape == (4, 4, 16) and b["mask"].shape == (4, 4)
    tok = synthetic.tokenizer(16)
    for i in range(4):
        truth = synthetic.simulate(config.world_seed, config.episode_length, int(b["episode"][i]))
        idx = b["indices"][i]
        assert np.array_equal(b["frames"][i], synthetic.render(truth.take(idx), (16, 16)))
        assert np.array_equal(b["prompt_ids"][i], tok([truth.captions[t] for t in idx]))
        assert np.all(np.diff(idx) == b["stride"][i])
        assert b["mask"][i].sum() == (0 if b["level"][i] == 0 else 2)


def test_same_seed_same_batches_other_seed_differs(config):
    a = take(pipeline.make_iterator(config), 3)
    assert same(a, take(pipeline.make_iterator(config), 3))
    other = config.copy_and_resolve_references()
    other.shuffle_seed = 1
    assert not same(a, take(pipeline.make_iterator(other), 3))


def test_restored_iterator_continues_exactly(config):
    it = pipeline.make_iterator(config)
    take(it, 2)
    state = it.get_state()
    expected = take(it, 5)  # crosses an epoch boundary (24 examples / 4 = 6 batches per epoch)
    restored = pipeline.make_iterator(config)
    restored.set_state(state)
    assert same(expected, take(restored, 5))


def test_processes_read_disjoint_shards_covering_the_data(config):
    c = config.copy_and_resolve_references()
    c.num_epochs = 1
    seen = []
    for pi in range(2):
        ex = np.concatenate([b["example"] for b in pipeline.make_dataset(c, pi, 2)])
        assert len(ex) == len(set(ex)) == 12  # 24 examples, 2 per batch per process
        seen.append(set(ex.tolist()))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(24))
    with pytest.raises(ValueError, match="batch_size=4 must be divisible by the 3 processes"):
        pipeline.make_dataset(c, 0, 3)


def test_multiprocess_prefetch_gives_the_same_batches(config):
    c = config.copy_and_resolve_references()
    c.workers = 1
    assert same(take(pipeline.make_iterator(config), 2), take(pipeline.make_iterator(c), 2))


def test_global_batches_are_sharded_over_the_mesh(config):
    c = config.copy_and_resolve_references()
    c.batch_size = 8
    mesh = parallel.make_mesh((-1, 1))
    g = pipeline.to_global(next(pipeline.make_iterator(c)), mesh)
    assert g["frames"].shape == (8, 4, 16, 16, 3)
    assert g["frames"].sharding.is_equivalent_to(parallel.batch_sharding(mesh, 5), 5)
    assert len(g["frames"].addressable_shards) == jax.device_count() == 8
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        pipeline.to_global(next(pipeline.make_iterator(config)), mesh)


def test_data_config_errors_name_the_field(config):
    c = data_block()
    validate_data(c)
    c.episode_length = 3000
    with pytest.raises(ConfigError, match=r"data\.episode_length=3000 is shorter than one window of 3376"):
        validate_data(c)
    c = data_block()
    c.batch_size = 0
    with pytest.raises(ConfigError, match=r"data\.batch_size must be an integer >= 1"):
        validate_data(c)
    c = data_block()
    c.level = 5
    with pytest.raises(ConfigError, match=r"data\.level must be -1"):
        validate_data(c)
    c = data_block()
    c.unknown_field = 1
    with pytest.raises(ConfigError, match=r"unknown config field.*data\.unknown_field"):
        validate_data(c)


def test_latent_cache_round_trip(config, tmp_path):
    from nuwa_xl_jax.data.builders import chunks
    source = pipeline.prepare(config).as_data_source("train")
    reader = chunks.EpisodeReader(source, *chunks.split_table(source, "train"))
    encode = latent_cache.pool_encoder(4)
    latent_cache.encode_split(reader, encode, synthetic.tokenizer(16), str(tmp_path), "train",
                              window=16, batch=3)
    c = config.copy_and_resolve_references()
    c.latent_dir = str(tmp_path)
    b = next(pipeline.make_iterator(c))
    assert "frames" not in b and b["latents"].shape == (4, 4, 4, 4, 3)
    frames, captions = reader.read(int(b["episode"][0]), b["indices"][0])
    want = encode(frames[None].astype(np.float32) / 127.5 - 1)[0]
    np.testing.assert_allclose(b["latents"][0], want, atol=1e-6)
    assert np.array_equal(b["prompt_ids"][0], synthetic.tokenizer(16)(captions))


def test_latent_cache_cli_and_missing_cache(tmp_path, capsys):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "import ml_collections\n"
        "from nuwa_xl_jax.data.config import data_block\n"
        "def get_config():\n"
        "    c = ml_collections.ConfigDict()\n"
        "    c.data = data_block()\n"
        f"    c.data.update(dict(data_dir={str(tmp_path / 'd')!r}, episodes=1,"
        " test_episodes=0, episode_length=20, resolution=(16, 16), frames_per_call=3, depth=2))\n"
        "    return c\n")
    assert latent_cache.main([f"--config={cfg}", f"--out={tmp_path / 'lat'}", "--encoder=pool:2"]) == 0
    assert latent_cache.LatentReader(str(tmp_path / "lat"), "train").read_latents(0, [19])[0].shape == (1, 8, 8, 3)
    assert latent_cache.main([f"--config={cfg}", f"--out={tmp_path / 'x'}", "--encoder=tklvae"]) == 2
    assert "--vae_params" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no latent cache at .*index.json"):
        latent_cache.LatentReader(str(tmp_path / "none"), "train")
