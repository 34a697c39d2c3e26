"""Mesh construction and logical-axis sharding (8 fake CPU devices, see conftest.py)."""
import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from sharded_init import init_sharded

from nuwa_xl_jax import parallel
from nuwa_xl_jax.models import layers


def test_make_mesh_fills_minus_one():
    mesh = parallel.make_mesh((-1, 2))
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}


@pytest.mark.parametrize("shape,match", [((3, -1), "does not divide"), ((2, 2), "needs 4 devices"),
                                         ((-1, -1), "at most one"), ((8,), "differ in length")])
def test_make_mesh_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        parallel.make_mesh(shape)


def test_indivisible_dims_are_replicated():
    mesh = parallel.make_mesh((2, 4))
    s = parallel.logical_to_sharding(P(None, None, "conv_in", "conv_out"), (3, 3, 16, 3), mesh)
    assert s.spec == P(None, None, None, None)  # 3 output channels do not split 4 ways
    s = parallel.logical_to_sharding(P(None, None, "conv_in", "conv_out"), (3, 3, 16, 32), mesh)
    assert s.spec == P(None, None, None, "fsdp")
    s = parallel.logical_to_sharding(P("batch", None), (8, 5), mesh)
    assert s.spec == P(("data", "fsdp"), None)


def test_init_sharded_matches_plain_init():
    mesh = parallel.make_mesh((2, 4))
    x = jax.random.normal(jax.random.key(0), (8 * 3, 8, 8, 16))  # 8 videos x 3 frames
    block = layers.ResnetBlock(32, norm_groups=8)
    init = lambda k: block.init(k, x, 3)
    sharded = init_sharded(init, mesh, jax.random.key(1))
    plain = nn.meta.unbox(init(jax.random.key(1)))
    assert sharded["params"]["conv1"]["kernel"].sharding.spec == P(None, None, None, "fsdp")
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), sharded, plain
    )
    xs = jax.device_put(x, parallel.batch_sharding(mesh, 4))
    y_sharded = jax.jit(block.apply, static_argnums=2)(sharded, xs, 3)
    np.testing.assert_allclose(
        np.asarray(y_sharded), np.asarray(block.apply(plain, x, 3)), atol=1e-5
    )


def test_batch_devices():
    assert parallel.batch_devices(parallel.make_mesh((2, 4))) == 8
    assert parallel.batch_devices(parallel.make_mesh((2, 4)), "data") == 2


def test_one_process_needs_no_barrier_or_ahead_of_time_compile():
    f = jax.jit(lambda x: x + 1)
    assert parallel.compile_together(f, "f") is f
    parallel.sync_processes("nothing to wait for")  # one process: returns at once


def test_make_mesh_lays_devices_out_by_topology(monkeypatch):
    """jax.make_mesh (physical topology on TPU pods and multi-host GPUs), Auto axes."""
    calls = []
    real = jax.make_mesh
    monkeypatch.setattr(jax, "make_mesh", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    mesh = parallel.make_mesh((-1, 2))
    assert calls and calls[0][0] == ((4, 2), ("data", "fsdp"))
    assert set(mesh.axis_types) == {jax.sharding.AxisType.Auto}
