"""The generic training loop on a small regression stage: learns, resumes bitwise, handles
SIGTERM, stops on a non-finite loss, refuses bad batch sizes and foreign checkpoints."""
import os

import jax
import numpy as np
import pytest
from toy_stage import make_stage  # pytest puts this test's folder on sys.path

from nuwa_xl_jax import configuration, parallel
from nuwa_xl_jax.configuration import train as train_config
from nuwa_xl_jax.train import checkpoint as ckpt_lib
from nuwa_xl_jax.train import loop


def cfg(**kw):
    c = train_config.train_block()
    c.update(dict(steps=12, batch_size=8, learning_rate=0.05, warmup_steps=0, log_every=1,
                  checkpoint_every=4, async_checkpoints=False, ema_decay=0.9), **kw)
    return c


MESH = None


def mesh():
    global MESH
    MESH = MESH or parallel.make_mesh((-1, 2))
    return MESH


def params_of(result):
    return jax.tree.map(np.asarray, jax.device_get(result.state.params))


def test_learns(tmp_path):
    r = loop.train(
        make_stage(),
        cfg(steps=40, learning_rate=0.3, clip_norm=None),
        str(tmp_path),
        mesh(),
        progress=False,
    )
    assert r.losses[-1] < 0.2 * r.losses[0], r.losses
    assert os.path.exists(tmp_path / "toy" / "metrics.jsonl")
    assert os.listdir(tmp_path / "toy" / "tensorboard")


def test_resume_is_bitwise_exact(tmp_path):
    full = loop.train(make_stage(), cfg(), str(tmp_path / "a"), mesh(), progress=False)
    part = loop.train(
        make_stage(), cfg(), str(tmp_path / "b"), mesh(), progress=False, stop_after=6
    )
    assert part.step == 6  # "killed" after step 6; the last checkpoint is step 4
    rest = loop.train(make_stage(), cfg(), str(tmp_path / "b"), mesh(), progress=False)
    assert rest.step == 12
    jax.tree.map(np.testing.assert_array_equal, params_of(full), params_of(rest))
    jax.tree.map(np.testing.assert_array_equal,
                 jax.device_get(full.state.opt_state), jax.device_get(rest.state.opt_state))


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    r = loop.train(
        make_stage(sigterm_at=5), cfg(sample_every=1), str(tmp_path), mesh(), progress=False
    )
    assert r.preempted and r.step == 5
    assert ckpt_lib.Checkpointer(str(tmp_path / "toy" / "checkpoints")).latest_step() == 5
    again = loop.train(make_stage(), cfg(), str(tmp_path), mesh(), progress=False)
    assert again.step == 12 and not again.preempted


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    with pytest.raises(
        loop.NonFiniteLossError,
        match=r"non-finite loss at step \d+.*last good checkpoint \(step 4\)",
    ):
        # example 0 poisons its batch; with 8 batches per epoch it appears between steps 5 and 8
        loop.train(make_stage(poison_at=int(_first_batch_after(4))), cfg(), str(tmp_path), mesh(),
                   progress=False)
    assert ckpt_lib.Checkpointer(str(tmp_path / "toy" / "checkpoints")).all_steps() == [4]


def _first_batch_after(step):
    """An example index drawn in batch `step + 2` (1-based) of the toy stage's data order."""
    it = make_stage().data(0, 1)
    for _ in range(step + 1):
        next(it)
    return next(it)["index"][0]


def test_bad_batch_size_and_foreign_checkpoint(tmp_path):
    with pytest.raises(
        configuration.ConfigError, match="train.batch_size=6 is not divisible by the 8"
    ):
        loop.train(make_stage(), cfg(batch_size=6), str(tmp_path), mesh(), progress=False)
    loop.train(make_stage(width=4), cfg(steps=4), str(tmp_path), mesh(), progress=False)
    before = sorted(os.listdir(tmp_path / "toy" / "checkpoints"))
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match="another architecture"):
        loop.train(make_stage(width=3), cfg(steps=8), str(tmp_path), mesh(), progress=False)
    assert sorted(os.listdir(tmp_path / "toy" / "checkpoints")) == before
    with pytest.raises(configuration.ConfigError, match="unknown config field.*train.stpes"):
        c = cfg()
        c.stpes = 3
        loop.train(make_stage(), c, str(tmp_path / "x"), mesh(), progress=False)


def test_the_step_is_traced_under_its_mesh_so_splash_runs_on_a_tpu_pod(tmp_path, monkeypatch):
    """'auto' takes the TPU splash kernel on several chips only inside a context mesh: the loop
    traces its step under the mesh it runs on (kernel stubbed, TPU simulated)."""
    import fake_accelerators as fake
    import jax.numpy as jnp

    from nuwa_xl_jax.models import layers

    toy = make_stage()
    taken = []
    fake.fake_tpu(monkeypatch)
    monkeypatch.setattr(layers, "splash_attention",
                        lambda q, k, v: taken.append(layers.splash_shard_axes(q.shape[0])) or q)

    def loss(params, batch, key, step):
        pred = toy.loss(params, batch, key, step)[0]
        q = jnp.broadcast_to(batch["x"][:, None, None, :], (8, 128, 1, 8))  # 128 tokens
        return pred + jnp.mean(layers.attend(q, q, q, implementation="auto")), {}

    stage = loop.Stage("attn", toy.init, loss, toy.data, model_config={})
    loop.train(stage, cfg(steps=1), str(tmp_path), mesh(), progress=False)
    assert taken == [("data", "fsdp")]
