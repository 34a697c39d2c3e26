"""MTD UNet: identity at init, condition injection, ablation switches, sharding, bad input.

Tiny model (widths 32/64, one layer per block, 8x8 latents, 3 frames). Inits use the fast
``unsafe_rbg`` PRNG to keep compile times low; values do not matter, only structure.
"""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from sharded_init import init_sharded

from nuwa_xl_jax import parallel
from nuwa_xl_jax.configuration import ConfigError, MTDConfig, mtd_block
from nuwa_xl_jax.models.mtd import MTDUNet

B, F, S, C, T, D = 2, 3, 8, 4, 5, 16


def small_cfg(**over):
    c = mtd_block()
    c.block_out_channels = (32, 64)
    c.layers_per_block = 1
    c.down_block_types = ("CrossAttnDownBlock2D", "DownBlock2D")
    c.up_block_types = ("UpBlock2D", "CrossAttnUpBlock2D")
    c.attention_head_dim = 4
    c.cross_attention_dim = D
    c.norm_num_groups = 8
    c.update(over)
    return c


def key(seed=0):
    return jax.random.key(seed, impl="unsafe_rbg")


def inputs(seed=0, batch=B):
    rs = np.random.RandomState(seed)
    x = rs.randn(batch, F, S, S, C).astype(np.float32)
    t = rs.randint(0, 1000, (batch,)).astype(np.float32)
    text = rs.randn(batch, F, T, D).astype(np.float32)
    cond = rs.randn(batch, F, S, S, C).astype(np.float32)
    mask = (rs.rand(batch, F) > 0.5).astype(np.float32)
    return x, t, text, cond, mask


def flat(params):
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}


def perturb(variables, pattern, scale=0.3, seed=1):
    """Adds noise to every parameter whose path matches ``pattern`` (regex)."""
    rs = np.random.RandomState(seed)
    f = flat(variables["params"])
    hits = [k for k in f if re.search(pattern, k)]
    assert hits, pattern
    out = {k: (np.asarray(v) + scale * rs.randn(*v.shape).astype(np.float32)) if k in hits else v
           for k, v in f.items()}
    return {
        "params": traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in out.items()})
    }


@pytest.fixture(scope="module")
def model():
    m = MTDUNet.from_config(small_cfg())
    variables = nn.meta.unbox(jax.jit(m.init)(key(), *inputs()))
    return m, variables, jax.jit(m.apply)


def frame_diff(a, b):
    """Max |a - b| per frame: ``[F]``."""
    return np.abs(np.asarray(a) - np.asarray(b)).max(axis=(0, 2, 3, 4))


def test_output_shape_and_dtype(model):
    m, v, apply = model
    y = apply(v, *inputs())
    assert y.shape == (B, F, S, S, C) and y.dtype == jnp.float32
    assert np.isfinite(np.asarray(y)).all()


@pytest.mark.parametrize("what", ["text", "x_t"])
def test_frames_independent_at_init_and_coupled_after_temporal_training(model, what):
    m, v, apply = model
    args = list(inputs())
    idx = {"x_t": 0, "text": 2}[what]
    changed = [a.copy() for a in args]
    changed[idx][:, 1] = np.random.RandomState(7).randn(*changed[idx][:, 1].shape)
    d = frame_diff(apply(v, *args), apply(v, *changed))
    assert d[1] > 1e-3, d
    np.testing.assert_array_equal(d[[0, 2]], 0.0)  # identity temporal layers: nothing leaks

    vt = perturb(v, r"_temporal/")
    d = frame_diff(apply(vt, *args), apply(vt, *changed))
    assert d[1] > 1e-3 and (d[[0, 2]] > 1e-4).all(), d


def test_condition_inert_at_init_and_active_after_perturbing_zero_convs(model):
    m, v, apply = model
    x, t, text, cond, mask = inputs()
    cond2 = np.random.RandomState(3).randn(*cond.shape).astype(np.float32)
    y = apply(v, x, t, text, cond, mask)
    np.testing.assert_array_equal(y, apply(v, x, t, text, cond2, mask))
    np.testing.assert_array_equal(y, apply(v, x, t, text, cond, 1.0 - mask))

    vc = perturb(v, r"injections_\d+/")
    y = apply(vc, x, t, text, cond, mask)
    assert frame_diff(y, apply(vc, x, t, text, cond2, mask)).min() > 1e-3
    flipped = frame_diff(y, apply(vc, x, t, text, cond, 1.0 - mask))
    assert flipped.min() > 1e-3, flipped


def _loss_of(module, x, t, text, cond, mask):
    return lambda p: jnp.mean(module.apply({"params": p}, x, t, text, cond, mask) ** 2)


@pytest.mark.slow  # two gradient compiles of the UNet; jax.checkpoint's own contract
def test_remat_keeps_the_gradients(model):
    m, v, _ = model
    remat = MTDUNet.from_config(small_cfg(remat="dots_saveable"))
    g_none = jax.jit(jax.grad(_loss_of(m, *inputs())))(v["params"])
    g_remat = jax.jit(jax.grad(_loss_of(remat, *inputs())))(v["params"])
    for a, b in zip(jax.tree.leaves(g_none), jax.tree.leaves(g_remat)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("policy,marker", [
    ("none", None), ("full", "policy=None"),
    ("dots_saveable", "DotsSaveable(only_if_no_batch_dims=True)")])
def test_remat_policy_reaches_the_backward_pass(model, policy, marker):
    _, v, _ = model
    module = MTDUNet.from_config(small_cfg(remat=policy))
    jaxpr = str(jax.make_jaxpr(jax.grad(_loss_of(module, *inputs())))(v["params"]))
    if marker is None:
        assert "remat" not in jaxpr and "checkpoint" not in jaxpr
    else:
        assert "checkpoint" in jaxpr or "remat" in jaxpr
        assert marker in jaxpr, policy


def test_remat_booleans_of_older_configs_still_load():
    older = dict(small_cfg().to_dict(), remat=True)  # a config.json exported before the policies
    assert MTDUNet.from_config(older).remat == "full"  # read once as the policy it names
    with pytest.raises(ConfigError, match="remat"):
        MTDUNet.from_config(small_cfg(remat="sometimes"))


def test_bfloat16_compute_and_remat_keep_fp32_params(model):
    m, v, apply = model
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))
    m16 = MTDUNet.from_config(small_cfg(dtype="bfloat16", remat="full"))
    args = inputs()
    y32 = np.asarray(apply(v, *args))
    y16 = np.asarray(jax.jit(m16.apply)(v, *args))
    assert y16.dtype == np.float32
    err = np.abs(y16 - y32).max() / np.abs(y32).max()
    assert 0 < err < 0.05, err  # really computed in bf16, and still the same function


def param_paths(cfg):
    m = MTDUNet.from_config(cfg)
    args = inputs()
    level = jnp.zeros((B,), jnp.int32) if cfg.num_levels else None
    boxed = jax.eval_shape(m.init, key(), *args, level)
    return set(flat(boxed["params"])), boxed


def groups(paths, pattern):
    return {m.group(1) for p in paths if (m := re.search(pattern, p))}


@pytest.mark.parametrize("over,injected,temporal", [
    ({}, {"down_blocks_0", "down_blocks_1", "up_blocks_0", "up_blocks_1"}, True),
    ({"condition_injection": "highest"}, {"down_blocks_0", "up_blocks_1"}, True),
    ({"condition_injection": "none"}, set(), True),
    ({"condition_symmetric": False}, {"up_blocks_0", "up_blocks_1"}, True),
    ({"temporal": False}, {"down_blocks_0", "down_blocks_1", "up_blocks_0", "up_blocks_1"}, False),
])
def test_ablation_parameter_sets(over, injected, temporal):
    paths, boxed = param_paths(small_cfg(**over))
    assert groups(paths, r"^(\w+_blocks_\d+)/injections_") == injected
    levels = {"multiscale": {"0", "1"}, "highest": {"0"}, "none": set()}[
        over.get("condition_injection", "multiscale")
    ]
    if over.get("condition_symmetric") is False:
        levels = {"0", "1"}
    assert groups(paths, r"^cond_encoder/conv_(\d+)/") == levels
    assert groups(paths, r"^mask_encoder/conv_(\d+)/") == levels
    has_temporal = any("_temporal/" in p for p in paths)
    assert has_temporal == temporal
    if temporal:  # one temporal attention per spatial attention, mid block included
        spatial = {
            p.split("/transformer_blocks_0")[0] for p in paths if "/transformer_blocks_0/" in p
        }
        temporal_attn = {
            p.split("_temporal/")[0] for p in paths if re.search(r"attentions_\d+_temporal/", p)
        }
        assert spatial == temporal_attn and "mid_block/attentions_0" in spatial
    # the spatial (diffusers) part never changes with the switches
    base, _ = param_paths(small_cfg())
    spatial_only = lambda ps: {
        p for p in ps if not re.search(r"_temporal/|injections_|_encoder/", p)
    }
    assert spatial_only(paths) == spatial_only(base)
    # every parameter carries logical axis names, one per dimension
    for p, leaf in flat(boxed["params"]).items():
        assert isinstance(leaf, nn.Partitioned), p
        assert len(leaf.names) == leaf.value.ndim, p


@pytest.mark.parametrize("over", [{"condition_injection": "highest"},
                                  {"condition_injection": "none"},
                                  {"condition_symmetric": False}, {"temporal": False}])
def test_ablation_variants_run_and_equal_full_model_at_init(model, over):
    """Each variant runs; with the full model's (identity-at-init) new layers it computes the same
    function, because every layer a switch removes is identity at init."""
    m, v, apply = model
    paths, _ = param_paths(small_cfg(**over))
    full = flat(v["params"])
    params = traverse_util.unflatten_dict({tuple(p.split("/")): full[p] for p in paths})
    args = inputs()
    y = jax.jit(MTDUNet.from_config(small_cfg(**over)).apply)({"params": params}, *args)
    np.testing.assert_allclose(np.asarray(y), np.asarray(apply(v, *args)), atol=1e-5, rtol=1e-5)


def test_level_embedding_is_added_per_video_and_required(model):
    _, v, apply = model
    cfg = small_cfg(num_levels=3)
    paths, boxed = param_paths(cfg)
    assert flat(boxed["params"])["level_embedding/embedding"].value.shape == (3, 128)
    m = MTDUNet.from_config(cfg)
    with pytest.raises(ValueError, match="level"):
        jax.eval_shape(m.init, key(), *inputs())
    # zero at init: the same function as without levels; once learned, level k shifts video b only
    table = np.random.RandomState(5).randn(3, 128).astype(np.float32)
    args = inputs()
    lv = {"params": dict(v["params"], level_embedding={"embedding": np.zeros_like(table)})}
    run = jax.jit(m.apply)
    np.testing.assert_allclose(
        run(lv, *args, np.array([0, 2])), apply(v, *args), atol=1e-5, rtol=1e-5
    )
    lv["params"]["level_embedding"] = {"embedding": table}
    y = np.asarray(run(lv, *args, np.array([0, 2])))
    y2 = np.asarray(run(lv, *args, np.array([1, 2])))
    per_video = np.abs(y - y2).max(axis=(1, 2, 3, 4))
    assert per_video[0] > 1e-3 and per_video[1] == 0, per_video


def test_sharded_equals_unsharded(model):
    m, _, apply = model
    mesh = parallel.make_mesh((2, 4), ("data", "fsdp"))
    args = inputs()
    init = lambda k, *a: m.init(k, *a)
    sharded = init_sharded(init, mesh, key(), *args)
    kernel = sharded["params"]["down_blocks_1"]["resnets_0"]["conv1"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, None, "fsdp")
    # non-identity new layers, so the temporal and condition paths are exercised too
    host = perturb(jax.device_get(sharded), r"_temporal/|injections_", scale=0.2)
    sharded = jax.device_put(host, jax.tree.map(lambda a: a.sharding, sharded))
    batch = parallel.batch_sharding(mesh, 5, "data")
    on_mesh = [jax.device_put(a, parallel.batch_sharding(mesh, a.ndim, "data")) for a in args]
    y = jax.jit(m.apply)(sharded, *on_mesh)
    assert on_mesh[0].sharding.spec == batch.spec
    np.testing.assert_allclose(np.asarray(y), np.asarray(apply(host, *args)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,index,shape,match", [
    ("text", 2, (B, F + 1, T, D), r"text has 4 frames but x_t has 3"),
    ("cond", 3, (B, F - 1, S, S, C), r"cond has 2 frames but x_t has 3"),
    ("mask", 4, (B, F + 2), r"mask has 5 frames but x_t has 3"),
    ("text", 2, (B, T, D), r"text must be \[B, F, T, D\]"),
    ("x_t", 0, (B, F, 7, 7, C), r"x_t spatial size 7x7 is not divisible by 2"),
    ("t", 1, (B, F, 1), r"t must be \[B\]"),
    ("text", 2, (B, F, T, D + 1), r"cross_attention_dim=16"),
])
def test_bad_inputs_are_named(model, name, index, shape, match):
    m, v, _ = model
    args = list(inputs())
    args[index] = np.zeros(shape, np.float32)
    if name == "x_t":  # keep cond consistent so the size check is the one that fires
        args[3] = args[0]
    with pytest.raises(ValueError, match=match):
        m.apply(v, *args)


def test_level_without_level_embedding_is_an_error(model):
    m, v, _ = model
    with pytest.raises(ValueError, match="num_levels=0"):
        m.apply(v, *inputs(), level=np.zeros((B,), np.int32))


@pytest.mark.parametrize("over,match", [
    ({"down_block_types": ("CrossAttnDownBlock2D", "FancyDownBlock")},
     r"model\.mtd\.down_block_types\[1\]='FancyDownBlock' is not a known block type"),
    ({"up_block_types": ("UpBlock2D",)}, r"model\.mtd\.up_block_types has 1 entries"),
    ({"block_out_channels": (32, 60)}, r"block_out_channels\[1\]=60 is not divisible by "
                                       r"model\.mtd\.norm_num_groups"),
    ({"attention_head_dim": 3}, r"block_out_channels\[0\]=32 is not divisible by its number of "
                                r"attention heads"),
    ({"condition_injection": "everywhere"}, r"model\.mtd\.condition_injection='everywhere'"),
    ({"dtype": "float16"}, r"model\.mtd\.dtype"),
])
def test_bad_config_is_named(over, match):
    cfg = small_cfg()
    with cfg.ignore_type():
        cfg.update(over)
    with pytest.raises(ConfigError, match=match):
        MTDConfig.from_dict(cfg)
    with pytest.raises(ConfigError, match=match):
        MTDUNet.from_config(cfg)


def test_config_round_trip():
    cfg = small_cfg(dtype="bfloat16", remat="full", condition_injection="highest", num_levels=2)
    m = MTDUNet.from_config(cfg)
    assert m.dtype == jnp.bfloat16 and m.remat == "full" and m.block_out_channels == (32, 64)
    assert m.to_config().to_dict() == cfg.to_dict()
    assert MTDUNet.from_config(m.to_config()).to_config().to_dict() == cfg.to_dict()
    as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items()}
    assert MTDUNet.from_config(as_json).to_config().to_dict() == cfg.to_dict()
