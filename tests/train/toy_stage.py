"""A small regression stage for testing the generic training loop (in-process and multi-process).

Data: a fixed global order of examples (seeded shuffle, repeated) cut into global batches of 8;
process p of n reads rows [p*8/n, (p+1)*8/n) of each global batch, so the global batches, and the
losses, are the same for any number of processes.
"""
import os
import signal

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.models import layers
from nuwa_xl_jax.train import loop

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 8)).astype(np.float32)
W = RNG.normal(size=(8, 4)).astype(np.float32)
Y = X @ W


class Model(nn.Module):
    width: int = 4

    @nn.compact
    def __call__(self, x):
        return layers.dense(self.width, name="proj")(x)


def make_stage(width=4, poison_at=None, sigterm_at=None):
    model = Model(width)

    def init(key):
        return model.init(key, jnp.zeros((1, 8)))

    def loss(params, batch, key, step):
        pred = model.apply(params, batch["x"])
        noise = 0.01 * jax.random.normal(
            key, pred.shape
        )  # uses the per-step key: resume must restore it
        err = jnp.mean((pred + noise - batch["y"][:, :width]) ** 2)
        return err * batch["scale"].mean(), {"mse": err}

    def data(pidx, nproc):
        def example(i):
            scale = np.float32(np.nan if poison_at is not None and i == poison_at else 1.0)
            return {"x": X[i], "y": Y[i], "scale": scale, "index": np.int32(i)}

        local = 8 // nproc
        order = (
            grain.MapDataset.range(len(X)).shuffle(seed=1).repeat().batch(8, drop_remainder=True)
        )
        ds = order.map(lambda idx: [example(int(i)) for i in idx[pidx * local:(pidx + 1) * local]])
        ds = ds.map(lambda rows: {k: np.stack([r[k] for r in rows]) for k in rows[0]})
        return iter(ds.to_iter_dataset())

    def sample(params, step, directory):  # the hook runs on the host after the step: "preempt" here
        if step == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)

    return loop.Stage("toy", init, loss, data, model_config={"width": width}, sample=sample)


