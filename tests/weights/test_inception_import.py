"""FID Inception: parity with an INDEPENDENT PyTorch reference written in this test (always, with
the interop extra's torch), optionally also with the PUBLIC definition (pytorch-fid 0.3.0's
``InceptionV3``), on shared random weights, through our ``.pth`` importer; and the importer's
refusals.

The reference below is our own functional PyTorch forward pass written from the published
architecture (Szegedy et al. 2016, "Rethinking the Inception Architecture", Fig. 5-7 and Table 1,
in torchvision's module layout) with the four changes FID's TF graph makes and pytorch-fid
documents (average pools in the A, C and first E blocks leave the padding out of the average; the
last E block max-pools), reading a state dict in the key layout of pytorch-fid's
``pt_inception-2015-12-05`` file (``Mixed_6b.branch7x7_2.conv.weight``, ``...bn.running_var``,
``fc.weight`` with 1008 classes). The shapes come from the table here, not from our Flax module.

pytorch-fid needs torchvision, whose PyPI wheel breaks beside the CPU torch of the interop extra, so
that comparison runs only where both are installed by hand (``pip install pytorch-fid==0.3.0
torchvision==0.28.0``, then run this file alone); it loads the same random state dict strictly,
which also checks the table below against torchvision's keys. pytorch-fid would download its
weights when its model is built; the test hands it the random state dict instead (its
``load_state_dict_from_url`` is patched), so nothing is downloaded.
"""
import sys
import types

import numpy as np
import pytest
from torch_state import random_state_dict as _random_state

from nuwa_xl_jax.weights.common import WeightsError

# Each conv of torchvision's Inception-v3:
# (name, in, out, kernel (kh, kw), stride, padding (ph, pw)).
_STEM = [
    ("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)),
    ("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0)),
    ("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1)),
    ("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0)),
    ("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0)),
]


def _block_a(cin, pool):
    return [("branch1x1", cin, 64, (1, 1), 1, (0, 0)),
            ("branch5x5_1", cin, 48, (1, 1), 1, (0, 0)),
            ("branch5x5_2", 48, 64, (5, 5), 1, (2, 2)),
            ("branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
            ("branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
            ("branch3x3dbl_3", 96, 96, (3, 3), 1, (1, 1)),
            ("branch_pool", cin, pool, (1, 1), 1, (0, 0))]


def _block_b(cin):
    return [("branch3x3", cin, 384, (3, 3), 2, (0, 0)),
            ("branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
            ("branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
            ("branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0))]


def _block_c(cin, c7):
    return [("branch1x1", cin, 192, (1, 1), 1, (0, 0)),
            ("branch7x7_1", cin, c7, (1, 1), 1, (0, 0)),
            ("branch7x7_2", c7, c7, (1, 7), 1, (0, 3)),
            ("branch7x7_3", c7, 192, (7, 1), 1, (3, 0)),
            ("branch7x7dbl_1", cin, c7, (1, 1), 1, (0, 0)),
            ("branch7x7dbl_2", c7, c7, (7, 1), 1, (3, 0)),
            ("branch7x7dbl_3", c7, c7, (1, 7), 1, (0, 3)),
            ("branch7x7dbl_4", c7, c7, (7, 1), 1, (3, 0)),
            ("branch7x7dbl_5", c7, 192, (1, 7), 1, (0, 3)),
            ("branch_pool", cin, 192, (1, 1), 1, (0, 0))]


def _block_d(cin):
    return [("branch3x3_1", cin, 192, (1, 1), 1, (0, 0)),
            ("branch3x3_2", 192, 320, (3, 3), 2, (0, 0)),
            ("branch7x7x3_1", cin, 192, (1, 1), 1, (0, 0)),
            ("branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
            ("branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
            ("branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0))]


def _block_e(cin):
    return [("branch1x1", cin, 320, (1, 1), 1, (0, 0)),
            ("branch3x3_1", cin, 384, (1, 1), 1, (0, 0)),
            ("branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
            ("branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
            ("branch3x3dbl_1", cin, 448, (1, 1), 1, (0, 0)),
            ("branch3x3dbl_2", 448, 384, (3, 3), 1, (1, 1)),
            ("branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)),
            ("branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
            ("branch_pool", cin, 192, (1, 1), 1, (0, 0))]


# (block name, kind, its convs); the input channels follow from the previous block's outputs.
_BLOCKS = [
    ("Mixed_5b", "A", _block_a(192, 32)), ("Mixed_5c", "A", _block_a(256, 64)),
    ("Mixed_5d", "A", _block_a(288, 64)), ("Mixed_6a", "B", _block_b(288)),
    ("Mixed_6b", "C", _block_c(768, 128)), ("Mixed_6c", "C", _block_c(768, 160)),
    ("Mixed_6d", "C", _block_c(768, 160)), ("Mixed_6e", "C", _block_c(768, 192)),
    ("Mixed_7a", "D", _block_d(768)), ("Mixed_7b", "E1", _block_e(1280)),
    ("Mixed_7c", "E2", _block_e(2048)),
]
_CONVS = {name: (k, s, p) for name, _, _, k, s, p in _STEM}
for _block, _, _convs in _BLOCKS:
    _CONVS.update({f"{_block}.{name}": (k, s, p) for name, _, _, k, s, p in _convs})


def _state_shapes(num_classes=1008):
    shapes = {}
    convs = [(n, i, o, k) for n, i, o, k, _, _ in _STEM]
    convs += [(f"{b}.{n}", i, o, k) for b, _, cs in _BLOCKS for n, i, o, k, _, _ in cs]
    for name, cin, cout, k in convs:
        shapes[f"{name}.conv.weight"] = (cout, cin, *k)
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{leaf}"] = (cout,)
        shapes[f"{name}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"], shapes["fc.bias"] = (num_classes, 2048), (num_classes,)
    return shapes


def random_state_dict(seed=0):
    return _random_state(_state_shapes(), seed)


def reference_forward(state, images):
    """images: torch [B, 3, H, W] in [0, 1] -> (pool [B, 2048], logits [B, 1008])."""
    import torch
    import torch.nn.functional as F

    def conv(name, x):
        k, s, p = _CONVS[name]
        x = F.conv2d(x, state[f"{name}.conv.weight"], stride=s, padding=p)
        x = F.batch_norm(x, state[f"{name}.bn.running_mean"], state[f"{name}.bn.running_var"],
                         state[f"{name}.bn.weight"], state[f"{name}.bn.bias"], False, 0.0, 1e-3)
        return F.relu(x)

    def chain(block, names, x):
        for n in names:
            x = conv(f"{block}.{n}", x)
        return x

    def avg_no_pad(x):  # TF's pool: the padding is not counted in the average
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    def block_a(b, x):
        return torch.cat([chain(b, ["branch1x1"], x),
                          chain(b, ["branch5x5_1", "branch5x5_2"], x),
                          chain(b, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], x),
                          conv(f"{b}.branch_pool", avg_no_pad(x))], 1)

    def block_b(b, x):
        return torch.cat([chain(b, ["branch3x3"], x),
                          chain(b, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], x),
                          F.max_pool2d(x, 3, stride=2)], 1)

    def block_c(b, x):
        return torch.cat([chain(b, ["branch1x1"], x),
                          chain(b, ["branch7x7_1", "branch7x7_2", "branch7x7_3"], x),
                          chain(b, [f"branch7x7dbl_{i}" for i in range(1, 6)], x),
                          conv(f"{b}.branch_pool", avg_no_pad(x))], 1)

    def block_d(b, x):
        return torch.cat([chain(b, ["branch3x3_1", "branch3x3_2"], x),
                          chain(b, [f"branch7x7x3_{i}" for i in range(1, 5)], x),
                          F.max_pool2d(x, 3, stride=2)], 1)

    def block_e(b, x, last):
        b3 = conv(f"{b}.branch3x3_1", x)
        bd = chain(b, ["branch3x3dbl_1", "branch3x3dbl_2"], x)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if last else avg_no_pad(x)
        return torch.cat([conv(f"{b}.branch1x1", x),
                          conv(f"{b}.branch3x3_2a", b3), conv(f"{b}.branch3x3_2b", b3),
                          conv(f"{b}.branch3x3dbl_3a", bd), conv(f"{b}.branch3x3dbl_3b", bd),
                          conv(f"{b}.branch_pool", pooled)], 1)

    x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
        x = conv(name, x)
    x = F.max_pool2d(x, 3, stride=2)
    x = conv("Conv2d_4a_3x3", conv("Conv2d_3b_1x1", x))
    x = F.max_pool2d(x, 3, stride=2)
    for name, kind, _ in _BLOCKS:
        if kind == "A":
            x = block_a(name, x)
        elif kind == "B":
            x = block_b(name, x)
        elif kind == "C":
            x = block_c(name, x)
        elif kind == "D":
            x = block_d(name, x)
        else:
            x = block_e(name, x, last=kind == "E2")
    pool = x.mean(dim=(2, 3))
    return pool, pool @ state["fc.weight"].T + state["fc.bias"]


def _import_torchvision():
    """torchvision, importable even where its compiled ops cannot load.

    PyPI's torchvision wheel is built against CUDA torch; beside the CPU torch of the interop extra
    its ``_C`` library fails to load (``libc10_cuda.so``) and ``import torchvision`` then fails
    while registering meta kernels for those ops. The Inception model is pure Python and needs none
    of them, so on that failure the meta-registration module is stubbed and the import retried.
    """
    pytest.importorskip("torch")
    try:
        import torchvision
        return torchvision
    except ModuleNotFoundError:
        pytest.skip("torchvision is not installed (optional check, see the module doc)")
    except RuntimeError:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType(
            "torchvision._meta_registrations")
        import torchvision
        return torchvision


@pytest.fixture(scope="module")
def fid_pth(tmp_path_factory):
    torch = pytest.importorskip("torch")
    state = random_state_dict()
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(state, str(path))
    return str(path), state


@pytest.fixture(scope="module")
def ours(fid_pth):
    """Our network through the importer, and its outputs on two 64x80 images (the resize is part
    of every comparison)."""
    from nuwa_xl_jax.weights.inception import load_fid_inception
    module, variables = load_fid_inception(fid_pth[0])
    assert module.num_classes == 1008
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 80, 3)).astype(np.float32)
    out = module.apply(variables, images)
    pool, logits = np.asarray(out["pool"]), np.asarray(out["logits"])
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    return images, pool, logits


def _check(name, ours, ref_pool, ref_logits):
    _, pool, logits = ours
    err = np.abs(pool - ref_pool).max() / np.abs(ref_pool).max()
    err_logits = np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()
    print(f"FID Inception vs {name}: pool rel err {err:.2e}, logits rel err {err_logits:.2e}")
    assert err < 1e-4 and err_logits < 1e-4
    # The two images give different features (the test would notice a constant network).
    assert np.abs(ref_pool[0] - ref_pool[1]).max() > 100 * np.abs(pool - ref_pool).max()


@pytest.mark.interop
def test_parity_with_reference(fid_pth, ours):
    torch = pytest.importorskip("torch")
    _, state = fid_pth
    with torch.no_grad():
        pool, logits = reference_forward(state, torch.from_numpy(ours[0]).permute(0, 3, 1, 2))
    _check("the reference in this test", ours, pool.numpy(), logits.numpy())


@pytest.mark.interop
def test_parity_with_pytorch_fid(fid_pth, ours, monkeypatch):
    """Optional: needs pytorch-fid and torchvision installed by hand (see the module doc)."""
    torch = pytest.importorskip("torch")
    _import_torchvision()
    pfid = pytest.importorskip("pytorch_fid.inception")
    _, state = fid_pth
    monkeypatch.setattr(pfid, "load_state_dict_from_url", lambda *a, **k: state)
    ref_model = pfid.InceptionV3([pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ours[0]).permute(0, 3, 1, 2))[0][:, :, 0, 0].numpy()
    _check("pytorch-fid", ours, ref, ref @ state["fc.weight"].numpy().T + state["fc.bias"].numpy())


@pytest.mark.interop
def test_refusals(fid_pth, tmp_path):
    torch = pytest.importorskip("torch")
    from nuwa_xl_jax.weights.inception import load_fid_inception
    path, state = fid_pth
    with pytest.raises(WeightsError, match="does not exist"):
        load_fid_inception(str(tmp_path / "nope.pth"))
    bad = dict(state)
    del bad["Mixed_6b.branch7x7_2.conv.weight"]
    bad["Mixed_5b.branch1x1.conv.weight"] = torch.zeros(64, 192, 3, 3)
    bad["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    torch.save(bad, str(tmp_path / "bad.pth"))
    with pytest.raises(WeightsError) as e:
        load_fid_inception(str(tmp_path / "bad.pth"))
    msg = str(e.value)
    assert "Mixed_6b/branch7x7_2/conv/kernel" in msg and "AuxLogits/fc/kernel" in msg
    assert "Mixed_5b/branch1x1/conv/kernel" in msg and "shape" in msg
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="cannot read"):
        load_fid_inception(str(tmp_path / "junk.pth"))
