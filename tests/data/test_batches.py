"""The grain pipeline: deterministic, resumable, sharded per process, global jax.Array batches;
the data config block; the latent cache."""
import jax
import numpy as np
import pytest

from nuwa_xl_jax import cache_latents, parallel
from nuwa_xl_jax.configuration import ConfigError
from nuwa_xl_jax.configuration.data import DataConfig, data_block
from nuwa_xl_jax.data import batches, latent_cache, sources, synthetic


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
    b = next(batches.make_iterator(config))
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
    a = take(batches.make_iterator(config), 3)
    assert same(a, take(batches.make_iterator(config), 3))
    other = config.copy_and_resolve_references()
    other.shuffle_seed = 1
    assert not same(a, take(batches.make_iterator(other), 3))


def test_restored_iterator_continues_exactly(config):
    it = batches.make_iterator(config)
    take(it, 2)
    state = it.get_state()
    expected = take(it, 5)  # crosses an epoch boundary (24 examples / 4 = 6 batches per epoch)
    restored = batches.make_iterator(config)
    restored.set_state(state)
    assert same(expected, take(restored, 5))
    host = batches.make_iterator(config, process_index=1, process_count=2)
    take(host, 4)
    state = host.get_state()
    expected = take(host, 4)  # crosses the epoch boundary
    restored = batches.make_iterator(config, process_index=1, process_count=2)
    restored.set_state(state)
    assert same(expected, take(restored, 4))
    one = batches.make_iterator(config)
    assert all(
        np.array_equal(e["example"], b["example"][2:]) for e, b in zip(expected, take(one, 8)[4:])
    )
    restored = batches.make_iterator(config, process_index=1, process_count=2)
    restored.set_state(state)  # a 2-host state resumes a 1-host run at the same global step
    one.set_state(state)
    assert all(
        np.array_equal(a["frames"], b["frames"][2:])
        for a, b in zip(take(restored, 2), take(one, 2))
    )


@pytest.mark.parametrize("per_episode,batch_size", [(6, 4), (5, 8)])  # 24 / 4; 20 % 8 != 0
def test_global_batches_do_not_depend_on_the_process_count(config, per_episode, batch_size):
    """Hosts' rows, concatenated, are the 1-process batch bitwise, across epoch boundaries."""
    c = config.copy_and_resolve_references()
    c.samples_per_episode, c.batch_size = per_episode, batch_size
    steps = 7  # 24 / 4 = 6 batches per epoch; 20 / 8 = 2.5 (batches straddle epochs)
    one = take(batches.make_iterator(c, process_index=0, process_count=1), steps)
    assert len({int(b["episode"].sum()) for b in one}) > 1  # not trivially constant batches
    for n in (2, 4):
        hosts = [take(batches.make_iterator(c, process_index=p, process_count=n), steps)
                 for p in range(n)]
        for step in range(steps):
            assert all(len(h[step]["example"]) == batch_size // n for h in hosts)
            joined = {k: np.concatenate([h[step][k] for h in hosts]) for k in one[step]}
            assert same([joined], [one[step]]), (n, step)


def test_processes_read_disjoint_rows_covering_the_data(config):
    c = config.copy_and_resolve_references()
    c.num_epochs = 1
    per_host = [[b["example"] for b in batches.make_dataset(c, pi, 2)] for pi in range(2)]
    assert [len(h) for h in per_host] == [6, 6]  # 24 examples / global batch 4: 6 steps each
    for step in range(6):
        assert not set(per_host[0][step]) & set(per_host[1][step])
    seen = [np.concatenate(h) for h in per_host]
    assert len(seen[0]) == len(set(seen[0])) == 12 and len(seen[1]) == len(set(seen[1])) == 12
    assert set(seen[0]) | set(seen[1]) == set(range(24))
    c.num_epochs, c.samples_per_episode, c.batch_size = 1, 5, 8  # 20 examples: 2 full batches
    assert [len(list(batches.make_dataset(c, pi, 4))) for pi in range(4)] == [2] * 4
    with pytest.raises(ValueError, match="batch_size=4 must be divisible by the 3 processes"):
        batches.make_dataset(config, 0, 3)
    c.num_epochs, c.samples_per_episode, c.batch_size = 1, 1, 8
    with pytest.raises(ValueError, match="fewer examples than one global batch of 8"):
        batches.make_dataset(c, 0, 1)


def test_each_process_builds_only_its_own_rows(config, monkeypatch):
    """The other hosts' examples are never read or decoded here."""
    built = []
    make = batches.ExampleMaker.__call__
    monkeypatch.setattr(
        batches.ExampleMaker,
        "__call__",
        lambda self, example, rng: built.append(int(example)) or make(self, example, rng),
    )
    c = config.copy_and_resolve_references()
    c.num_epochs = 1
    mine = np.concatenate([b["example"] for b in batches.make_dataset(c, 1, 2)])
    assert sorted(built) == sorted(mine.tolist()) and len(built) == 12


def test_multiprocess_prefetch_gives_the_same_batches(config):
    """Workers split whole host batches, so any worker count keeps the batches."""
    c = config.copy_and_resolve_references()
    c.workers = 2
    want = take(batches.make_iterator(config, process_index=1, process_count=2), 3)
    it = batches.make_iterator(c, process_index=1, process_count=2)
    assert same(want[:2], take(it, 2))
    state = it.get_state()
    restored = batches.make_iterator(c, process_index=1, process_count=2)
    restored.set_state(state)
    assert same(want[2:], take(restored, 1))


def test_global_batches_are_sharded_over_the_mesh(config):
    c = config.copy_and_resolve_references()
    c.batch_size = 8
    mesh = parallel.make_mesh((-1, 1))
    g = batches.to_global(next(batches.make_iterator(c)), mesh)
    assert g["frames"].shape == (8, 4, 16, 16, 3)
    assert g["frames"].sharding.is_equivalent_to(parallel.batch_sharding(mesh, 5), 5)
    assert len(g["frames"].addressable_shards) == jax.device_count() == 8
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        batches.to_global(next(batches.make_iterator(config)), mesh)


def test_data_config_errors_name_the_field(config):
    c = data_block()
    DataConfig.from_dict(c)
    c.episode_length = 3000
    with pytest.raises(
        ConfigError, match=r"data\.episode_length=3000 is shorter than one window of 3376"
    ):
        DataConfig.from_dict(c)
    c = data_block()
    c.batch_size = 0
    with pytest.raises(ConfigError, match=r"data\.batch_size must be an integer >= 1"):
        DataConfig.from_dict(c)
    c = data_block()
    c.level = 5
    with pytest.raises(ConfigError, match=r"data\.level must be -1"):
        DataConfig.from_dict(c)
    c = data_block()
    c.unknown_field = 1
    with pytest.raises(ConfigError, match=r"unknown config field.*data\.unknown_field"):
        DataConfig.from_dict(c)


def test_latent_cache_round_trip(config, tmp_path):
    reader = sources.episode_reader(config, "train")
    encode = latent_cache.pool_encoder(4)
    latent_cache.encode_split(reader, encode, synthetic.tokenizer(16), str(tmp_path), "train",
                              vae_frames=8, vae_context=2)
    c = config.copy_and_resolve_references()
    c.latent_dir = str(tmp_path)
    b = next(batches.make_iterator(c))
    assert "frames" not in b and b["latents"].shape == (4, 4, 4, 4, 3)
    frames, captions = reader.read(int(b["episode"][0]), b["indices"][0])
    want = encode(frames[None].astype(np.float32) / 127.5 - 1)[0]
    np.testing.assert_allclose(b["latents"][0], want, atol=1e-6)
    assert np.array_equal(b["prompt_ids"][0], synthetic.tokenizer(16)(captions))


def test_latent_cache_cli_and_missing_cache(tmp_path, capsys):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "import ml_collections\n"
        "from nuwa_xl_jax.configuration.data import data_block\n"
        "def get_config():\n"
        "    c = ml_collections.ConfigDict()\n"
        "    c.data = data_block()\n"
        f"    c.data.update(dict(data_dir={str(tmp_path / 'd')!r}, episodes=2,"
        " test_episodes=0, episode_length=20, resolution=(16, 16), frames_per_call=3, depth=2))\n"
        "    return c\n")
    # --config.* overrides reach the config in-process too: one episode, not the file's two
    assert cache_latents.main([f"--config={cfg}", "--config.data.episodes=1",
                               f"--out={tmp_path / 'lat'}", "--encoder=pool:2"]) == 0
    reader = latent_cache.LatentReader(str(tmp_path / "lat"), "train")
    assert len(reader) == 1 and reader.read_latents(0, [19])[0].shape == (1, 8, 8, 3)
    with pytest.raises(SystemExit) as exit_:
        cache_latents.main([f"--config={cfg}", f"--out={tmp_path / 'x'}", "--encoder=tklvae"])
    assert exit_.value.code == 2 and "--vae_workdir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cache_latents.main([f"--config={cfg}", "--encoder=pool:2"])
    assert exit_.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no latent cache at .*index.json"):
        latent_cache.LatentReader(str(tmp_path / "none"), "train")
