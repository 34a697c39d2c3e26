"""Importing a diffusers AutoencoderKL: parity with PyTorch, legacy names, and clear weight
errors."""
import json
import os

import jax
import numpy as np
import pytest

from nuwa_xl_jax.weights.common import WeightsError
from nuwa_xl_jax.weights.vae import load_diffusers_vae, vae_config_from_diffusers

TINY = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1, norm_num_groups=16)


def save_tiny_diffusers_vae(folder, seed=0):
    """A small AutoencoderKL whose every parameter (norms and biases too) is randomised."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(**TINY).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("weight") and p.ndim == 1:  # norm scales around 1
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
    vae.save_pretrained(str(folder), safe_serialization=True)
    return vae


@pytest.fixture(scope="module")
def diffusers_vae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_vae")
    return save_tiny_diffusers_vae(folder), str(folder)


@pytest.fixture(scope="module")
def imported(diffusers_vae):
    return load_diffusers_vae(diffusers_vae[1], temporal=True)


@pytest.mark.interop
@pytest.mark.parametrize("frames,height,width", [(1, 16, 16), (3, 16, 24)])
def test_parity_with_diffusers_per_frame(diffusers_vae, imported, frames, height, width):
    torch = pytest.importorskip("torch")
    torch_vae, _ = diffusers_vae
    module, variables = imported
    video = (
        np.random.default_rng(frames)
        .uniform(-1, 1, (2, frames, height, width, 3))
        .astype(np.float32)
    )
    decoded, mean, logvar = jax.jit(module.apply)(variables, video)  # decodes the posterior mean

    frames_nchw = torch.from_numpy(video.reshape(-1, height, width, 3).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        dist = torch_vae.encode(frames_nchw).latent_dist
        ref_decoded = torch_vae.decode(dist.mean).sample
    to_video = lambda t: (
        t.numpy().transpose(0, 2, 3, 1).reshape(2, frames, *t.shape[2:], t.shape[1])
    )
    errors = {
        "mean": np.abs(np.asarray(mean) - to_video(dist.mean)).max(),
        "logvar": np.abs(np.asarray(logvar) - to_video(dist.logvar)).max(),
        "decode": np.abs(np.asarray(decoded) - to_video(ref_decoded)).max(),
    }
    print(
        f"parity F={frames} {height}x{width}: "
        + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
    )
    assert np.abs(to_video(dist.mean)).max() > 0.1, "reference output is trivially small"
    assert all(e < 1e-4 for e in errors.values()), errors


@pytest.mark.interop
def test_image_vae_import_has_no_temporal_params_and_same_spatial_params(diffusers_vae, imported):
    module2d, variables2d = load_diffusers_vae(diffusers_vae[1], temporal=False)
    assert not module2d.temporal
    flat2d = jax.tree_util.tree_flatten_with_path(variables2d)[0]
    assert not any("_temporal" in jax.tree_util.keystr(p) for p, _ in flat2d)
    a = variables2d["params"]["encoder"]["mid_block"]["attentions_0"]["to_q"]["kernel"]
    b = imported[1]["params"]["encoder"]["mid_block"]["attentions_0"]["to_q"]["kernel"]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _rewrite(src, dst, edit_tensors=None, edit_config=None):
    from safetensors.numpy import load_file, save_file
    os.makedirs(dst, exist_ok=True)
    tensors = load_file(os.path.join(src, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    if edit_tensors:
        tensors = edit_tensors(dict(tensors))
    if edit_config:
        config = edit_config(dict(config))
    save_file(tensors, os.path.join(dst, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f)
    return str(dst)


@pytest.mark.interop
def test_legacy_attention_names_load_the_same(diffusers_vae, imported, tmp_path):
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def to_legacy(t):
        out = {}
        for k, v in t.items():
            for new, old in legacy.items():
                k = k.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
            out[k] = v
        return out

    folder = _rewrite(diffusers_vae[1], tmp_path / "legacy", edit_tensors=to_legacy)
    _, variables = load_diffusers_vae(folder)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 variables, imported[1])


@pytest.mark.interop
@pytest.mark.parametrize("edit,match", [
    (lambda t: {k: v for k, v in t.items() if k != "decoder.conv_out.bias"},
     r"missing from .*\(1\): decoder/conv_out/bias"),
    (lambda t: {**t, "encoder.extra_layer.weight": np.zeros((3,), np.float32)},
     r"unexpected in .*encoder/extra_layer/scale"),
    (lambda t: {**t, "quant_conv.bias": np.zeros((5,), np.float32)},
     r"shape mismatches: quant_conv/bias: .* has \(5,\), model expects \(8,\)"),
])
def test_weight_errors_list_the_offending_keys(diffusers_vae, tmp_path, edit, match):
    folder = _rewrite(diffusers_vae[1], tmp_path / "bad", edit_tensors=edit)
    with pytest.raises(WeightsError, match=match):
        load_diffusers_vae(folder)


def test_config_errors_name_the_field():
    base = dict(TINY, block_out_channels=[32, 64])
    with pytest.raises(WeightsError, match=r"act_fn='gelu'"):
        vae_config_from_diffusers(dict(base, act_fn="gelu"))
    with pytest.raises(WeightsError, match=r"unknown field\(s\) foo"):
        vae_config_from_diffusers(dict(base, foo=1))
    with pytest.raises(WeightsError, match=r"down_block_types"):
        vae_config_from_diffusers(dict(base, down_block_types=["DownBlock2D"] * 2))
    cfg = vae_config_from_diffusers(dict(base, sample_size=256, _class_name="AutoencoderKL"))
    assert cfg.block_out_channels == (32, 64) and cfg.norm_num_groups == 16 and cfg.temporal


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match=r"config.json' not found"):
        load_diffusers_vae(str(tmp_path))
