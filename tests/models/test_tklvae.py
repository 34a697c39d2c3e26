"""T-KLVAE: identity at init, temporal mixing, sharding, dtype, and input validation.

Compilation dominates on CPU, so the model is two levels deep and every jitted function is
compiled once per shape and reused across tests.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from sharded_init import init_sharded

from nuwa_xl_jax import parallel
from nuwa_xl_jax.configuration import ConfigError
from nuwa_xl_jax.configuration.presets import vae as vae_config
from nuwa_xl_jax.models.tklvae import TKLVAE, is_temporal_param
from nuwa_xl_jax.weights.vae import identity_temporal_params

VIDEO_SHAPE = (2, 3, 16, 16, 3)


def small_config(temporal=True):
    cfg = vae_config("tiny")
    cfg.block_out_channels = (8, 16)  # downsampling x2
    cfg.norm_num_groups = 4
    cfg.temporal = temporal
    return cfg


def _flat(tree):
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(nn.meta.unbox(tree)).items()}


def _unflat(flat):
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def _random_like(shapes, seed, select):
    """Random values for the selected leaves: kernels ~ fan-in scaled, norm scales ~ 1, biases ~
    0.1."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, s in sorted(shapes.items()):
        if not select(path):
            continue
        if path.endswith("kernel"):
            fan_in = int(np.prod(s.shape[:-1]))
            out[path] = rng.normal(0, 1 / np.sqrt(fan_in), s.shape).astype(np.float32)
        elif path.endswith("scale"):
            out[path] = (1 + 0.2 * rng.normal(size=s.shape)).astype(np.float32)
        else:
            out[path] = (0.1 * rng.normal(size=s.shape)).astype(np.float32)
    return out


def _shapes(module):
    return _flat(
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1, 4, 4, 3)))["params"]
    )


@functools.lru_cache(maxsize=None)
def _jitted(module):
    """(encode, decode, round trip) of ``module``, jitted once."""
    encode = jax.jit(lambda v, x: module.apply(v, x, method="encode"))
    decode = jax.jit(lambda v, z: module.apply(v, z, method="decode"))
    round_trip = jax.jit(lambda v, x: module.apply(v, x))  # (decode(mean), mean, logvar)
    return encode, decode, round_trip


@pytest.fixture(scope="module")
def model():
    """Random spatial params (norms and biases too); temporal layers at their identity init."""
    module = TKLVAE.from_config(small_config())
    params = _random_like(_shapes(module), 1, lambda k: not is_temporal_param(k))
    params.update(identity_temporal_params(module))
    return module, {"params": _unflat(params)}


@pytest.fixture(scope="module")
def video():
    return jax.random.uniform(jax.random.key(2), VIDEO_SHAPE, minval=-1, maxval=1)


def test_identity_at_init_equals_image_vae_frame_by_frame(model, video):
    module, variables = model
    image_module = TKLVAE.from_config(small_config(temporal=False))
    flat = _flat(variables["params"])
    spatial = {k: v for k, v in flat.items() if not is_temporal_param(k)}
    assert len(spatial) < len(flat)
    assert sorted(_shapes(image_module)) == sorted(spatial), (
        "image names = T-KLVAE names - temporal"
    )
    image_vars = {"params": _unflat(spatial)}
    enc, dec, _ = _jitted(module)

    mean, logvar = enc(variables, video)
    decoded = dec(variables, mean)
    b, f = video.shape[:2]
    per_frame = video.reshape(b * f, 1, *video.shape[2:])  # every frame its own 1-frame clip
    ref_decoded, ref_mean, ref_logvar = _jitted(image_module)[2](image_vars, per_frame)
    np.testing.assert_allclose(mean, ref_mean.reshape(mean.shape), atol=1e-5)
    np.testing.assert_allclose(logvar, ref_logvar.reshape(logvar.shape), atol=1e-5)
    np.testing.assert_allclose(decoded, ref_decoded.reshape(decoded.shape), atol=1e-5)
    assert decoded.shape == video.shape and float(jnp.abs(decoded).max()) > 1e-2


def _frame_change(fn, variables, x, changed_frame=0):
    """Per-frame max |change| of fn's output when only ``changed_frame`` of the input changes."""
    x2 = x.at[:, changed_frame].add(jax.random.normal(jax.random.key(3), x[:, changed_frame].shape))
    return np.abs(np.asarray(fn(variables, x2) - fn(variables, x))).max(axis=(0, 2, 3, 4))


def test_temporal_layers_mix_frames_only_once_trained(model, video):
    module, variables = model
    enc, dec, _ = _jitted(module)
    enc_mean = lambda v, x: enc(v, x)[0]
    latents = enc_mean(variables, video)
    for fn, x in ((enc_mean, video), (dec, latents)):
        d = _frame_change(fn, variables, x)
        assert d[0] > 1e-3, "the changed frame itself must change"
        assert d[1] == 0 and d[2] == 0, f"identity temporal layers must not mix frames: {d}"
    flat = _flat(variables["params"])
    noise = _random_like({k: v for k, v in flat.items()}, 4, is_temporal_param)
    trained = {"params": _unflat({k: v + noise.get(k, 0) for k, v in flat.items()})}
    for fn, x in ((enc_mean, video), (dec, latents)):
        d = _frame_change(fn, trained, x)
        assert d[1] > 1e-4 and d[2] > 1e-4, f"trained temporal layers must mix frames: {d}"


def test_sharded_params_and_batch_equal_single_device(model):
    module = model[0]
    mesh = parallel.make_mesh((2, 4), ("data", "fsdp"))
    key = jax.random.key(5, impl="rbg")  # rbg: same quality, much faster to compile on CPU
    variables = init_sharded(module.init, mesh, key, jnp.zeros((1, 1, 4, 4, 3)))
    kernel = variables["params"]["encoder"]["down_blocks_1"]["resnets_0"]["conv1"]["kernel"]
    assert kernel.sharding.spec[-1] == "fsdp", "conv output channels must be sharded over fsdp"
    video = jax.random.uniform(jax.random.key(6), (8, 2, 16, 16, 3), minval=-1, maxval=1)
    round_trip = _jitted(module)[2]
    decoded, mean, logvar = round_trip(
        variables, jax.device_put(video, parallel.batch_sharding(mesh, 5))
    )
    assert decoded.sharding.num_devices == 8
    one = jax.devices()[0]
    ref = round_trip(jax.device_put(jax.device_get(variables), one), jax.device_put(video, one))
    for got, want in zip((decoded, mean, logvar), ref):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_bf16_compute_keeps_fp32_params_and_stays_close(model, video):
    module, variables = model
    module16 = TKLVAE.from_config(small_config(), dtype=jnp.bfloat16)
    shapes = jax.eval_shape(module16.init, jax.random.key(0), jnp.zeros((1, 1, 4, 4, 3)))
    assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    mean16, _ = _jitted(module16)[0](variables, video)
    mean32, _ = _jitted(module)[0](variables, video)
    assert mean16.dtype == jnp.float32
    err = float(jnp.abs(mean16 - mean32).max() / jnp.abs(mean32).max())
    assert 0 < err < 0.05, err


def test_the_config_sets_compute_dtype_and_remat():
    cfg = small_config()
    cfg.dtype, cfg.remat = "bfloat16", "full"
    module = TKLVAE.from_config(cfg)
    assert module.dtype == jnp.bfloat16 and module.remat == "full"
    assert module.to_config() == TKLVAE.from_config(module.to_config()).to_config()
    assert module.to_config().dtype == "bfloat16"
    assert TKLVAE.from_config(cfg, dtype=jnp.float32).dtype == jnp.float32  # the override wins


@pytest.mark.parametrize("policy,marker", [
    ("none", None), ("full", "policy=None"),
    ("dots_saveable", "DotsSaveable(only_if_no_batch_dims=True)")])
def test_remat_policy_reaches_the_backward_pass_and_keeps_the_names(model, video, policy, marker):
    _, variables = model
    cfg = small_config()
    cfg.remat = policy
    module = TKLVAE.from_config(cfg)
    assert sorted(_shapes(module)) == sorted(_flat(variables["params"])), "remat renames nothing"
    loss = lambda p: jnp.mean(module.apply({"params": p}, video)[0] ** 2)
    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(variables["params"]))
    if marker is None:
        assert "remat" not in jaxpr and "checkpoint" not in jaxpr
    else:
        assert ("checkpoint" in jaxpr or "remat" in jaxpr) and marker in jaxpr, policy


@pytest.mark.parametrize("method,shape,match", [
    ("encode", (3, 16, 16, 3), r"video must be a 5-D array \[batch, frames, height, width, 3\], "
                               r"got shape \(3, 16, 16, 3\)"),
    ("encode", (1, 2, 16, 16, 4), r"video must have 3 channels"),
    ("encode", (1, 2, 17, 16, 3), r"video height and width must be divisible by the VAE's "
                                  r"downsampling factor 2, got 17x16"),
    ("encode", (1, 2, 16, 15, 3), r"divisible by the VAE's downsampling factor 2, got 16x15"),
    ("encode", (1, 0, 16, 16, 3), r"video has an empty axis"),
    ("decode", (1, 2, 4, 4, 3), r"latents must have 4 channels"),
    ("decode", (2, 4, 4, 4), r"latents must be a 5-D array"),
])
def test_bad_input_is_a_clear_error(model, method, shape, match):
    module, variables = model
    with pytest.raises(ValueError, match=match):
        module.apply(variables, jnp.zeros(shape), method=method)


def test_bad_config_is_a_clear_error():
    cfg = small_config()
    cfg.unknown_width = 3
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) model.vae.unknown_width"):
        TKLVAE.from_config(cfg)
    cfg = small_config()
    cfg.block_out_channels = (16, -32)
    with pytest.raises(
        ConfigError, match=r"model.vae.block_out_channels\[1\] must be a positive integer"
    ):
        TKLVAE.from_config(cfg)


def test_config_round_trip():
    module = TKLVAE.from_config(vae_config("tiny"))
    assert module.to_config().to_dict() == vae_config("tiny").to_dict()
    assert TKLVAE.from_config(module.to_config()) == module
    assert module.downsampling_factor() == 4
