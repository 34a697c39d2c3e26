"""train/state.py: the EMA keeps a parameter equal to its average bit for bit (a layer held
fixed while others train, as the image layers of a model started from a pretrained base), and
moves any other one toward the parameter by (1 - decay) of the gap."""
import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.train import state as train_state


def test_a_parameter_equal_to_its_average_keeps_it_bit_for_bit():
    x = jax.random.normal(jax.random.key(0), (4096,), jnp.float32)
    for decay in (0.9, 0.995, 0.999, 0.3):
        for step in (jax.jit(train_state.ema_update), train_state.ema_update):
            out = step({"w": x}, {"w": x}, jnp.float32(decay))["w"]
            np.testing.assert_array_equal(out, x, err_msg=f"decay {decay}")


def test_an_average_moves_by_one_minus_decay_of_the_gap():
    ema, params = jnp.zeros(3), jnp.array([1.0, -2.0, 4.0])
    out = train_state.ema_update(ema, params, 0.75)
    np.testing.assert_allclose(out, [0.25, -0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(train_state.ema_decay_at(jnp.array(0), 0.999), 0.1)
