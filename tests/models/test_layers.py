"""Shared layers: temporal layers are identity at init and mix frames once trained."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax.models import layers

F = 5


@pytest.fixture
def x():
    return jax.random.normal(jax.random.key(0), (2 * F, 4, 6, 8))


def _perturb(tree, key):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )


@pytest.mark.parametrize("module", [layers.TemporalConv(), layers.TemporalAttention(heads=2)])
def test_temporal_layers_identity_at_init_and_mixing_after(module, x):
    v = module.init(jax.random.key(1), x, F)
    np.testing.assert_array_equal(np.asarray(module.apply(v, x, F)), np.asarray(x))
    v2 = _perturb(v, jax.random.key(2))
    x2 = x.at[2].add(jax.random.normal(jax.random.key(3), x.shape[1:]))  # change frame 2 of video 0
    d = np.abs(np.asarray(module.apply(v2, x2, F) - module.apply(v2, x, F))).sum(axis=(1, 2, 3))
    assert d[1] > 1e-4 and d[3] > 1e-4, "frames next to the changed one must change"
    assert np.all(d[F:] == 0), "the other video must not change"


def test_temporal_conv_single_frame_and_dirac():
    k = layers.dirac_init(None, (3, 4, 4))
    assert k[1].tolist() == np.eye(4).tolist() and not np.asarray(k[0]).any()
    x1 = jnp.ones((2, 3, 3, 4))
    m = layers.TemporalConv()
    v = m.init(jax.random.key(0), x1, 1)
    np.testing.assert_array_equal(np.asarray(m.apply(v, x1, 1)), np.asarray(x1))


def test_fold_unfold_roundtrip(x):
    y = layers.fold_frames(x, F)
    assert y.shape == (2 * 4 * 6, F, 8)
    np.testing.assert_array_equal(np.asarray(layers.unfold_frames(y, F, 4, 6)), np.asarray(x))
    # position (b=1, h=2, w=3) over frames is exactly that pixel of each frame
    np.testing.assert_array_equal(np.asarray(y[1 * 24 + 2 * 6 + 3]), np.asarray(x[F:, 2, 3]))


def test_sinusoidal_matches_diffusers_formula():
    t = np.array([0.0, 1.0, 500.0])
    e = np.asarray(layers.sinusoidal_embedding(t, 8))
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    ref = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], -1)
    np.testing.assert_allclose(e, ref, atol=1e-5)


def test_downsample_and_upsample_shapes(x):
    d = layers.Downsample(8, asymmetric_pad=True)
    y = d.apply(d.init(jax.random.key(0), x, F), x, F)
    assert y.shape == (2 * F, 2, 3, 8)
    u = layers.Upsample(8)
    z = u.apply(u.init(jax.random.key(0), y, F), y, F)
    assert z.shape == x.shape
