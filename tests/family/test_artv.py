"""ART•V's runtime (family/artv.py, models/artv.py) on the tiny synthetic config with random
weights: identity at init, the mask blends as specified, and generation conditions every frame on
the anchor (dod/artv.py)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_family import random_like

from nuwa_xl_jax import configuration
from nuwa_xl_jax.diffusion import schedules
from nuwa_xl_jax.dod import artv as artv_gen
from nuwa_xl_jax.dod import level_models as lm
from nuwa_xl_jax.family.artv import NEW, ARTVModels
from nuwa_xl_jax.family.runtime import MTDModels
from nuwa_xl_jax.models.artv import blend_prediction


def make_artv(prediction_type="epsilon"):
    config = configuration.load("configs/synthetic.py:tiny")
    config.diffusion.prediction_type = prediction_type
    vae_params = {}  # never used: nothing here decodes
    return ARTVModels(MTDModels(config, None, vae_params=vae_params))


@pytest.fixture(scope="module")
def artv():
    return make_artv()


@pytest.fixture(scope="module")
def params(artv):
    """Small random MTD / text weights from shapes alone (no compiled init of the UNet: minutes on
    a busy CPU) and the mask head's real init, which decides identity at init."""
    shapes = jax.eval_shape(artv.init, jax.random.key(0))
    params = nn.meta.unbox(random_like({k: v for k, v in shapes.items() if k != "mask"}, 0))
    z = jnp.zeros((1, *artv.latent_shape))
    params["mask"] = nn.meta.unbox(artv.head.init(jax.random.key(1), z, z, jnp.zeros((1,))))
    return params


def window(artv, seed=0, batch=2):
    rs = np.random.RandomState(seed)
    shape = (batch, 3, *artv.latent_shape)
    x = jnp.asarray(rs.standard_normal(shape), jnp.float32)
    given = jnp.asarray(rs.standard_normal(shape), jnp.float32).at[:, NEW].set(0)
    mask = jnp.asarray([[1.0, 1.0, 0.0]] * batch)
    ref = jnp.asarray(rs.standard_normal((batch, *artv.latent_shape)), jnp.float32)
    given_t = jnp.asarray([[0, 40, 0]] * batch, jnp.int32)
    ids = jnp.asarray(artv.tokenizer(["fred walks left in the cave"] * 3))[None].repeat(batch, 0)
    t = jnp.asarray([700, 30][:batch], jnp.int32)
    return x, t, ids, given, mask, ref, given_t


def with_head(params, gate, bias):
    """params with the mask head's gate and its last conv set (weights zero, bias ``bias``)."""
    head = jax.tree.map(lambda a: a, params["mask"])
    head["params"]["gate"] = jnp.float32(gate)
    conv = head["params"]["conv_out"]
    conv["kernel"] = jnp.zeros_like(conv["kernel"])
    conv["bias"] = jnp.full_like(conv["bias"], bias)
    return {**params, "mask": head}


def test_identity_at_init(artv, params):
    """A fresh ART•V predicts exactly what its MTD UNet predicts (the mask's gate starts at 0),
    with the given frames told their own timesteps."""
    x, t, ids, given, mask, ref, given_t = window(artv)
    out = artv.denoise(params, x, t, ids, given, mask, ref, given_t)
    t_frames = jnp.where(mask > 0, given_t, t[:, None])
    plain = artv.models.denoise(params, x, t_frames, ids, given, mask)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain))
    assert float(params["mask"]["params"]["gate"]) == 0.0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_blend_is_convex_in_x0(prediction_type):
    """blend_prediction moves the output's x0 to w * ref + (1 - w) * x0 at the same x_t."""
    rs = np.random.RandomState(1)
    x_t, out, ref = (jnp.asarray(rs.standard_normal((2, 4, 4, 3)), jnp.float32) for _ in range(3))
    w = jnp.asarray(rs.uniform(size=(2, 4, 4, 1)), jnp.float32)
    a = jnp.asarray([0.9, 0.3]).reshape(-1, 1, 1, 1)
    s = jnp.sqrt(1 - a ** 2)
    x0, _ = schedules.split_prediction(prediction_type, x_t, out, a, s)
    blended = blend_prediction(prediction_type, out, x0, ref, w, a, s)
    x0_new, _ = schedules.split_prediction(prediction_type, x_t, blended, a, s)
    np.testing.assert_allclose(np.asarray(x0_new), np.asarray(w * ref + (1 - w) * x0), atol=1e-5)


def test_mask_blends_reference_and_prediction(artv, params):
    """Mask ~1: the new frame's x0 is the reference; mask ~0 (or no previous frame given): the
    network's own; gate g with logit 0: exactly g/2 of each; only the new frame changes."""
    x, t, ids, given, mask, ref, given_t = window(artv)
    t_frames = jnp.where(mask > 0, given_t, t[:, None])
    net = artv.models.denoise(params, x, t_frames, ids, given, mask)
    a, s = (artv.schedule.table(n)[t].reshape(-1, 1, 1, 1)
            for n in ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"))
    x0 = lambda out: schedules.split_prediction("epsilon", x[:, NEW], out[:, NEW], a, s)[0]

    full = artv.denoise(with_head(params, 1.0, 30.0), x, t, ids, given, mask, ref, given_t)
    np.testing.assert_allclose(np.asarray(x0(full)), np.asarray(ref), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(full[:, :NEW]), np.asarray(net[:, :NEW]))

    half = artv.denoise(with_head(params, 0.6, 0.0), x, t, ids, given, mask, ref, given_t)
    np.testing.assert_allclose(np.asarray(x0(half)), np.asarray(0.3 * ref + 0.7 * x0(net)),
                               atol=1e-4)

    none = artv.denoise(with_head(params, 1.0, -30.0), x, t, ids, given, mask, ref, given_t)
    np.testing.assert_allclose(np.asarray(none), np.asarray(net), atol=1e-4)

    # No previous frame given (the first call): no reference, so no blend whatever the mask.
    first = jnp.zeros_like(mask)
    net0 = artv.models.denoise(params, x, jnp.broadcast_to(t[:, None], mask.shape), ids,
                               given * 0, first)
    off = artv.denoise(with_head(params, 1.0, 30.0), x, t, ids, given * 0, first, ref, given_t)
    np.testing.assert_array_equal(np.asarray(off), np.asarray(net0))

    # The gate is used clipped to [0, 1]: past 1 it blends no more than at 1.
    over = artv.denoise(with_head(params, 3.0, 30.0), x, t, ids, given, mask, ref, given_t)
    np.testing.assert_allclose(np.asarray(over), np.asarray(full), atol=1e-5)


class AnchorEcho(ARTVModels):
    """A stand-in denoiser whose x0 is always twice the window's anchor slot (eps-prediction), so
    every generated frame shows what that slot held while it was made."""

    def encode_prompts(self, params, ids):
        return jnp.zeros((*ids.shape, 1))

    def condition(self, params, given, mask, ref, given_t):
        return {"anchor": given[:, 0], "mask": mask}

    def unet(self, params, x, t, states, features, level=None):
        a, s = (self.schedule.table(n)[t].reshape(*t.shape, 1, 1, 1)
                for n in ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"))
        x0 = 2.0 * features["anchor"][:, None]
        return (x - a * x0) / s  # eps whose x0 is 2 * anchor


def test_anchor_conditions_every_frame(artv):
    """Frame n >= 1 is 2 * anchor for every n: the anchor slot holds the video's first frame at
    every call (feeding the previous frame there instead would double it each frame)."""
    echo = AnchorEcho(artv.models)
    rs = np.random.RandomState(3)
    anchor = jnp.asarray(rs.standard_normal(artv.latent_shape), jnp.float32)
    ids = np.asarray(artv.tokenizer(["fred stands in the cave"] * 7))
    r = artv_gen.generate(lm.LevelModel(echo, {}), ids, np.asarray(artv.null_ids),
                          sampler="ddim", steps=3, anchor=anchor, chunk=4)
    lat = np.asarray(r.latents)
    assert lat.shape == (7, *artv.latent_shape) and r.sequential_calls == 6
    np.testing.assert_array_equal(lat[0], np.asarray(anchor))  # given anchor kept bit-exact
    for n in range(1, 7):
        np.testing.assert_allclose(lat[n], 2 * np.asarray(anchor), atol=1e-4, err_msg=f"frame {n}")


@pytest.mark.slow  # two compiles of the frame program (~50 s on a busy 2-core CPU)
def test_generation_is_independent_of_chunking_and_draws_its_anchor(artv, params):
    """Random-weight ART•V: the same video in chunks of 2 or 16 frames (per-frame keys); without a
    given anchor, frame 0 is drawn first (one more sequential call)."""
    ids = np.asarray(artv.tokenizer(["fred walks left in the cave"] * 5))
    model = lm.LevelModel(artv, params)
    a = artv_gen.generate(model, ids, np.asarray(artv.null_ids), steps=2, chunk=2)
    b = artv_gen.generate(model, ids, np.asarray(artv.null_ids), steps=2, chunk=16)
    assert a.sequential_calls == b.sequential_calls == 5
    np.testing.assert_allclose(np.asarray(a.latents), np.asarray(b.latents), atol=1e-5)
    assert np.all(np.isfinite(np.asarray(a.latents)))
    with pytest.raises(ValueError, match="anchor must be"):
        artv_gen.generate(model, ids, np.asarray(artv.null_ids), steps=2, anchor=np.zeros((2, 2)))
