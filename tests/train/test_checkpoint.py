"""Checkpoints: exact round trip, restore onto another device count, architecture mismatch."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from cpu_flags import xla_flags

from nuwa_xl_jax.train import checkpoint
from nuwa_xl_jax.train import state as train_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Builds a small sharded TrainState on an (n/2, 2) or (1, 1) mesh; saves it, or restores it and
# prints a checksum of every leaf. Run in a subprocess per device count.
SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from nuwa_xl_jax import parallel
    from nuwa_xl_jax.models import layers
    from nuwa_xl_jax.train import checkpoint, state as train_state
    mode, directory = sys.argv[1], sys.argv[2]
    n = jax.device_count()
    mesh = parallel.make_mesh((-1, 2) if n > 1 else (1, 1))
    block = layers.ResnetBlock(32, norm_groups=8)
    x = jnp.ones((2, 4, 4, 16))
    tx = train_state.make_optimizer(1e-3, 2, 10)
    def init(key):
        return train_state.create(block.init(key, x, 2), tx, jax.random.key(7))
    abstract = jax.eval_shape(init, jax.random.key(0))
    shard = parallel.tree_shardings(abstract, mesh)
    st = jax.jit(lambda k: jax.tree.map(lambda a: a, __import__('flax').linen.meta.unbox(init(k))),
                 out_shardings=shard)(jax.random.key(0))
    ckpt = checkpoint.Checkpointer(directory)
    if mode == "save":
        grads = jax.tree.map(jnp.ones_like, st.params)
        st = train_state.apply_gradients(st, grads, tx, 0.9)  # non-trivial opt state and EMA
        ckpt.save(1, st, {"stage": "test", "fingerprint": "abc"})
        ckpt.close()
    target = checkpoint.abstract_like(st)
    restored, meta = checkpoint.Checkpointer(directory).restore(target)
    assert meta["fingerprint"] == "abc"
    spec = restored.params["params"]["conv1"]["kernel"].sharding.spec
    sums = [float(np.asarray(l, np.float64).sum()) for l in jax.tree.leaves(restored)]
    print(json.dumps({"devices": n, "sums": sums, "spec": str(spec), "step": int(restored.step)}))
""")


def _run(mode, directory, devices):
    env = dict(os.environ, XLA_FLAGS=xla_flags(devices),
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(directory)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_restore_on_other_device_counts(tmp_path):
    """Written FSDP-sharded on 4 devices; restored on fewer (1) and on more (8)."""
    saved = _run("save", tmp_path / "a", 4)
    assert saved["step"] == 1 and "fsdp" in saved["spec"]
    for devices in (1, 8):
        got = _run("restore", tmp_path / "a", devices)
        assert got["devices"] == devices
        np.testing.assert_array_equal(got["sums"], saved["sums"])


def test_mismatched_architecture_is_refused(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(
        3, {"w": np.zeros(3)}, {"stage": "vae", "fingerprint": checkpoint.fingerprint({"a": 1})}
    )
    ckpt.wait()
    ckpt.check_compatible({"stage": "vae", "fingerprint": checkpoint.fingerprint({"a": 1})})
    with pytest.raises(
        checkpoint.CheckpointMismatchError, match="another architecture.*Nothing was overwritten"
    ):
        ckpt.check_compatible({"stage": "vae", "fingerprint": checkpoint.fingerprint({"a": 2})})
    with pytest.raises(checkpoint.CheckpointMismatchError, match="another stage"):
        ckpt.check_compatible({"stage": "mtd_global"})
    assert ckpt.all_steps() == [3]


def test_optimizer_warmup_and_ema():
    tx = train_state.make_optimizer(1.0, warmup_steps=4, total_steps=10, clip_norm=None)
    params = {"w": jax.numpy.zeros(2)}
    st = train_state.create(params, tx, jax.random.key(0))
    st1 = train_state.apply_gradients(st, {"w": jax.numpy.ones(2)}, tx, ema_decay=0.5)
    assert int(st1.step) == 1
    np.testing.assert_array_equal(np.asarray(st1.params["w"]), 0.0)  # lr is 0 at step 0 of warmup
    st2 = train_state.apply_gradients(st1, {"w": jax.numpy.ones(2)}, tx, ema_decay=0.5)
    assert (np.asarray(st2.params["w"]) < 0).all()
    # warm-up: at step 1 the decay is min(0.5, 2/11)
    np.testing.assert_allclose(
        np.asarray(st2.ema_params["w"]), (9 / 11) * np.asarray(st2.params["w"]), rtol=1e-6
    )
    assert float(train_state.ema_decay_at(10_000, 0.999)) == pytest.approx(0.999)


def test_accumulation_keeps_the_schedule_length():
    """With k-step accumulation the learning rate still decays to its end value by the last step."""
    params = {"w": jax.numpy.zeros(1)}
    for k in (1, 2, 4):
        tx = train_state.make_optimizer(1.0, warmup_steps=0, total_steps=8, clip_norm=None,
                                        accumulate_steps=k, b1=0.0, b2=0.0)
        st = train_state.create(params, tx, jax.random.key(0))
        moved = []
        for _ in range(8):
            before = float(st.params["w"][0])
            st = train_state.apply_gradients(st, {"w": jax.numpy.ones(1)}, tx, ema_decay=0.0)
            moved.append(before - float(st.params["w"][0]))
        updates = [m for m in moved if m != 0]
        assert len(updates) == 8 // k
        assert updates[-1] <= 0.5 * updates[0] + 1e-6, (
            k,
            updates,
        )  # the cosine reached its 2nd half
