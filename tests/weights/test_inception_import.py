"""FID Inception: parity with the PUBLIC definition (pytorch-fid 0.3.0's ``InceptionV3``, the
FIDInceptionA/C/E_1/E_2 blocks on torchvision's Inception-v3) on shared random weights, through our
``.pth`` importer; and the importer's refusals.

The random state dict has exactly the layout of pytorch-fid's ``pt_inception-2015-12-05`` file
(torchvision ``inception_v3(num_classes=1008, aux_logits=False)`` keys). pytorch-fid would download
that file when its model is built; the test hands it our random state dict instead (its
``load_state_dict_from_url`` is patched), so nothing is downloaded.
"""
import sys
import types

import numpy as np
import pytest

from nuwa_xl_jax.weights.common import WeightsError


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
        pytest.skip("torchvision is not installed (interop extra)")
    except RuntimeError:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType(
            "torchvision._meta_registrations")
        import torchvision
        return torchvision


def _random_state_dict(seed=0):
    torch = pytest.importorskip("torch")
    torchvision = _import_torchvision()
    torch.manual_seed(seed)
    model = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                            init_weights=False)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
        elif key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn_like(value)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand_like(value)
        elif ".bn." in key and key.endswith("weight"):
            state[key] = 1.0 + 0.1 * torch.randn_like(value)
        elif key.endswith("bias"):
            state[key] = 0.1 * torch.randn_like(value)
        else:  # conv / fc weights, He-scaled so activations keep their size through 94 convs
            fan_in = value[0].numel()
            state[key] = torch.randn_like(value) * (2.0 / fan_in) ** 0.5
    return state


@pytest.fixture(scope="module")
def fid_pth(tmp_path_factory):
    torch = pytest.importorskip("torch")
    state = _random_state_dict()
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(state, str(path))
    return str(path), state


@pytest.mark.interop
def test_parity_with_pytorch_fid(fid_pth, monkeypatch):
    torch = pytest.importorskip("torch")
    _import_torchvision()
    pfid = pytest.importorskip("pytorch_fid.inception")
    path, state = fid_pth
    monkeypatch.setattr(pfid, "load_state_dict_from_url", lambda *a, **k: state)
    ref_model = pfid.InceptionV3([pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    from nuwa_xl_jax.weights.inception import load_fid_inception
    module, variables = load_fid_inception(path)
    assert module.num_classes == 1008
    # Two images at a size that is not 299, so the resize is part of the comparison.
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 80, 3)).astype(np.float32)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(images).permute(0, 3, 1, 2))[0][:, :, 0, 0].numpy()
        ref_logits = ref @ state["fc.weight"].numpy().T + state["fc.bias"].numpy()
    out = module.apply(variables, images)
    pool, logits = np.asarray(out["pool"]), np.asarray(out["logits"])
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    err = np.abs(pool - ref).max() / np.abs(ref).max()
    err_logits = np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()
    print(f"FID Inception parity: pool rel err {err:.2e}, logits rel err {err_logits:.2e}")
    assert err < 1e-4 and err_logits < 1e-4
    # The two images give different features (the test would notice a constant network).
    assert np.abs(ref[0] - ref[1]).max() > 100 * np.abs(pool - ref).max()


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
