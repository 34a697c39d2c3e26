"""model.text.trainable: a frozen text encoder is not optimised (no optimizer state, unchanged
weights, checkpointed and exported with the rest), its prompt states are a table computed once
per distinct prompt of the latent cache, and the train step gathers rows of it instead of running
the encoder (checked on the traced step by Flax module names, as tests/dod/test_loop_body.py
checks the sampler loop). The trainable path keeps the encoder in the step."""
import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore
from tiny_family import write_random_family
from toy_stage import make_stage

from nuwa_xl_jax import configuration, parallel
from nuwa_xl_jax.configuration import ConfigError, text_trainable
from nuwa_xl_jax.configuration import train as train_config
from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.train import loop, prompt_table, stages
from nuwa_xl_jax.train import state as train_state

EPISODES, FRAMES = 2, 40


def _write_cache(config, directory: str, scale: float) -> np.ndarray:
    """A random latent cache of the tiny config (2 episodes of 40 frames) whose captions are the
    synthetic world's, a handful of distinct ones; returns every frame's prompt ids."""
    rng = np.random.default_rng(0)
    dest = os.path.join(directory, config.data.split)
    os.makedirs(dest)
    tok = synthetic.tokenizer(config.data.max_length)
    captions = ["fred walks left in the desert", "wilma jumps with dino in the cave",
                "barney stands in the snow", "betty grows in the beach"]
    f = 2 ** (len(config.model.vae.block_out_channels) - 1)
    shape = [32 // f, 32 // f, config.model.vae.latent_channels]
    episodes, all_ids = [], []
    for e in range(EPISODES):
        ids = np.asarray(tok([captions[(i // 7 + e) % len(captions)] for i in range(FRAMES)]),
                         np.int32)
        np.save(os.path.join(dest, f"ep{e}.latents.npy"),
                rng.standard_normal((FRAMES, *shape)).astype(np.float32))
        np.save(os.path.join(dest, f"ep{e}.prompt_ids.npy"), ids)
        episodes.append({"name": f"ep{e}", "frames": FRAMES})
        all_ids.append(ids)
    with open(os.path.join(dest, "index.json"), "w") as fh:
        json.dump({"episodes": episodes, "latent_shape": shape, "latent_scale": scale,
                   "vae_frames": config.vae_frames, "vae_context": config.vae_context}, fh)
    return np.concatenate(all_ids)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(config with a frozen text encoder, workdir with a VAE export, every frame's prompt ids)."""
    tmp = tmp_path_factory.mktemp("frozen_text")
    workdir = write_random_family(str(tmp / "run"), stages=())
    config = configuration.load("configs/synthetic.py:tiny")
    config.model.text.trainable = "false"
    config.train.update(batch_size=2, steps=4, checkpoint_every=2, log_every=1, sample_every=0)
    scale = stages.MTDModels(config, workdir).scale
    config.data.latent_dir = str(tmp / "latents")
    ids = _write_cache(config, config.data.latent_dir, scale)
    configuration.validate(config)
    return config, workdir, ids


def test_trainable_field_values_and_errors():
    c = configuration.text_block()
    assert text_trainable(c)  # the built-in from-scratch encoder trains with the MTD
    c.init_from = "/some/converted/clip"
    assert not text_trainable(c)  # public CLIP weights: frozen
    for value, want in (("true", True), ("False", False), (True, True), (False, False)):
        with c.ignore_type():
            c.trainable = value
        assert text_trainable(c) is want
    for bad in ("yes", "frozen", 1):
        with c.ignore_type():
            c.trainable = bad
        with pytest.raises(ConfigError, match=r"model\.text\.trainable=.*use 'auto'"):
            text_trainable(c)
    config = configuration.load("configs/synthetic.py:tiny")
    config.model.text.trainable = "sometimes"
    with pytest.raises(ConfigError, match=r"model\.text\.trainable='sometimes'"):
        configuration.validate(config)


def test_table_is_each_distinct_prompt_encoded(setup):
    config, workdir, ids = setup
    models = stages.MTDModels(config, workdir)
    table = prompt_table.PromptTable.of(ids, models.null_ids)
    assert len(table.ids) == len(np.unique(ids, axis=0)) + 1  # + the null prompt, last
    np.testing.assert_array_equal(table.ids[table.null_row], models.null_ids)
    # encode_prompts reads params["text"] only: the encoder alone, no MTD init to compile
    params = {"text": jax.jit(lambda k: models.text.init(k, jnp.asarray(table.ids[:1])))(
        jax.random.key(0))}
    states = table.states(models, params)
    assert states.dtype == jnp.dtype(config.model.mtd.dtype)
    encode = jax.jit(models.encode_prompts)
    direct = jnp.stack([encode(params, jnp.asarray(r)[None])[0] for r in table.ids])
    np.testing.assert_allclose(states, direct, rtol=1e-5, atol=1e-6)
    batch = {"prompt_ids": ids[:8].reshape(2, 4, -1)}
    index = table.add_index(batch)["prompt_index"]
    np.testing.assert_allclose(states[index], encode(params, jnp.asarray(batch["prompt_ids"])),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not in the frozen text encoder's prompt table"):
        table.index(np.full((1, ids.shape[-1]), 7, np.int32))


def _name_stacks(jaxpr) -> set:
    out = set()

    def walk(j):
        for eqn in j.eqns:
            out.add(str(eqn.source_info.name_stack))
            for value in eqn.params.values():
                for v in value if isinstance(value, (list, tuple)) else [value]:
                    if isinstance(v, jcore.ClosedJaxpr):
                        walk(v.jaxpr)
                    elif isinstance(v, jcore.Jaxpr):
                        walk(v)

    walk(jaxpr)
    return out


def _step_jaxpr(stage, config, batch_ids):
    """The traced train step (loop._make_step) on abstract state, batch and prepared inputs."""
    tx = train_state.make_optimizer(1e-3, 0, 4)
    state = jax.eval_shape(lambda k: nn.meta.unbox(train_state.create(stage.init(k), tx, k,
                                                                      stage.frozen)),
                           jax.random.key(0))
    models = stages.MTDModels(config, None, vae_params={})
    B, L = batch_ids.shape[:2]
    s = jax.ShapeDtypeStruct
    batch = {
        "latents": s((B, L, *models.latent_shape), jnp.float32),
        "mask": s((B, L), jnp.float32),
        "prompt_ids": s(batch_ids.shape, jnp.int32),
        "level": s((B,), jnp.int32),
        "prompt_index": s((B, L), jnp.int32),
    }
    inputs = () if stage.prepare is None else (jax.eval_shape(stage.prepare, state.params),)
    return jax.make_jaxpr(loop._make_step(stage, tx, 0.9))(state, batch, *inputs).jaxpr, state


def test_frozen_step_runs_no_text_encoder_and_keeps_no_moments(setup):
    config, workdir, ids = setup
    frozen = stages.build(config, "mtd_global", workdir)
    assert frozen.frozen == ("text",) and frozen.prepare is not None
    jaxpr, state = _step_jaxpr(frozen, config, ids[:8].reshape(2, 4, -1))
    names = _name_stacks(jaxpr)
    found = lambda module: any(module in n.split("/") for n in names)
    assert found("down_blocks_0")  # the UNet runs
    assert not found("text_model"), "the frozen text encoder runs in the train step"
    # no optimizer state for the text encoder: only the MTD's moments
    paths = [
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.opt_state)
    ]
    assert paths and not any("text" in p for p in paths)
    assert any("mtd" in p for p in paths)
    # The inspection sees the encoder when it is in the step: the trainable (default) stage.
    c = configuration.load("configs/synthetic.py:tiny")
    c.data.latent_dir = config.data.latent_dir
    trained = stages.build(c, "mtd_global", workdir)
    assert trained.frozen == () and trained.prepare is None
    # the fingerprint: unchanged for a trained encoder (older workdirs resume), distinct if frozen
    assert "trainable" not in trained.model_config["text"]
    assert frozen.model_config == {**trained.model_config, "text_frozen": True}
    jaxpr, state = _step_jaxpr(trained, c, ids[:8].reshape(2, 4, -1))
    assert any("text_model" in n.split("/") for n in _name_stacks(jaxpr))
    assert any("text" in jax.tree_util.keystr(p)
               for p, _ in jax.tree_util.tree_leaves_with_path(state.opt_state))


def _toy_frozen_stage():
    """The toy regression stage (toy_stage.py) with a frozen random "encoder" group whose features
    the loss reads from the prepared input, as the MTD stage reads its prompt-state table."""
    base = make_stage()

    def init(key):
        k1, k2 = jax.random.split(key)
        return {**base.init(k1), "enc": {"w": jax.random.normal(k2, (8, 8))}}

    def prepare(params):
        return {"w": params["enc"]["w"] * 0.5}

    def loss(params, batch, key, step, inputs):
        batch = dict(batch, x=jnp.tanh(batch["x"] @ inputs["w"]))
        return base.loss({"params": params["params"]}, batch, key, step)

    return dataclasses.replace(base, name="toy_frozen", init=init, loss=loss, frozen=("enc",),
                               prepare=prepare, sample=None)


def test_frozen_group_is_unchanged_has_no_moments_and_resumes_bitwise(tmp_path):
    """The loop's frozen groups (cheap, on the toy stage): the frozen weights and their EMA never
    move, the optimizer state has no entry for them, and 12 steps in one run equal 6 steps, a
    checkpoint, and 6 more resumed (the prepared input recomputed from the restored weights)."""
    def cfg():
        c = train_config.train_block()
        c.update(steps=12, batch_size=8, learning_rate=0.05, warmup_steps=0, log_every=1,
                 checkpoint_every=6, async_checkpoints=False, ema_decay=0.9)
        return c

    mesh = parallel.make_mesh((-1, 2))
    stage = _toy_frozen_stage()
    init = jax.device_get(stage.init(jax.random.split(jax.random.key(0))[0]))
    full = loop.train(stage, cfg(), str(tmp_path / "a"), mesh, progress=False)
    loop.train(stage, cfg(), str(tmp_path / "b"), mesh, progress=False, stop_after=6)
    rest = loop.train(stage, cfg(), str(tmp_path / "b"), mesh, progress=False)
    a, b = jax.device_get(full.state), jax.device_get(rest.state)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    for tree in (a.params, a.ema_params):
        np.testing.assert_array_equal(tree["enc"]["w"], init["enc"]["w"])
    assert not np.array_equal(a.params["params"]["proj"]["kernel"],
                              init["params"]["proj"]["kernel"])
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(a.opt_state)]
    assert any("proj" in p for p in paths) and not any("enc" in p for p in paths)
    assert full.losses[-1] < full.losses[0]


@pytest.mark.slow  # ~6 min of CPU on the shared 2-core machine: three compiles of the MTD step
def test_frozen_encoder_is_unchanged_and_resumes_exactly(setup, tmp_path):
    """4 steps in one run equal 2 steps, a checkpoint, and 2 more resumed from it (the table
    recomputed from the restored weights); the text weights (and their EMA) never move."""
    config, workdir, _ = setup
    mesh = parallel.make_mesh(devices=jax.devices()[:1])
    stage = stages.build(config, "mtd_global", workdir)
    init = jax.device_get(
        nn.meta.unbox(jax.jit(stage.init)(jax.random.split(jax.random.key(0))[0]))
    )
    full = loop.train(stage, config.train, str(tmp_path / "full"), mesh, progress=False)
    loop.train(stage, config.train, str(tmp_path / "split"), mesh, progress=False, stop_after=2)
    resumed = loop.train(stage, config.train, str(tmp_path / "split"), mesh, progress=False)
    assert full.step == resumed.step == 4
    a, b = jax.device_get(full.state), jax.device_get(resumed.state)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    for tree in (a.params, a.ema_params):
        for x, y in zip(jax.tree.leaves(tree["text"]), jax.tree.leaves(init["text"])):
            np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(a.params["mtd"]), jax.tree.leaves(init["mtd"])))
    # the export (what the pipeline writes: the EMA weights) holds the frozen encoder
    stages.write_export(str(tmp_path / "export"), a.ema_params, stage.model_config)
    exported, _ = stages.read_export(str(tmp_path / "export"))
    for x, y in zip(jax.tree.leaves(exported["text"]), jax.tree.leaves(init["text"])):
        np.testing.assert_array_equal(x, y)
