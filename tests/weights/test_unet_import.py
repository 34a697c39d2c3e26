"""diffusers UNet2DConditionModel -> MTD UNet: frame-by-frame parity on random weights, and clear
errors for checkpoints that do not fit."""
import json
import os

import jax
import numpy as np
import pytest

from nuwa_xl_jax.weights.common import WeightsError
from nuwa_xl_jax.weights.unet import diffusers_key_to_flax, load_diffusers_unet

B, F, S, C, T, D = 2, 3, 8, 4, 5, 16


def build_unet(folder, linear, seed=0):
    """A tiny SD-layout UNet with every parameter perturbed (no zero-init hides a bug), saved."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=S,
        in_channels=C,
        out_channels=C,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8,
        cross_attention_dim=D,
        attention_head_dim=4,
        use_linear_projection=linear,
    ).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    unet.save_pretrained(folder, safe_serialization=True)
    return unet


def torch_frame_by_frame(unet, x, t, text):
    """The PyTorch UNet on each frame alone, with that frame's prompt and timestep."""
    import torch

    out = np.zeros_like(x)
    with torch.no_grad():
        for b in range(x.shape[0]):
            for f in range(x.shape[1]):
                sample = torch.from_numpy(np.ascontiguousarray(x[b, f].transpose(2, 0, 1)))[None]
                y = unet(
                    sample, torch.tensor([float(t[b, f])]), torch.from_numpy(text[b, f])[None]
                ).sample
                out[b, f] = y[0].numpy().transpose(1, 2, 0)
    return out


@pytest.mark.interop
@pytest.mark.parametrize("linear", [False, True], ids=["conv_proj", "linear_proj"])
def test_parity_with_diffusers_frame_by_frame(tmp_path, linear):
    unet = build_unet(tmp_path / "unet", linear)
    module, variables = load_diffusers_unet(
        str(tmp_path / "unet"), rng=jax.random.key(0, impl="unsafe_rbg")
    )
    rs = np.random.RandomState(1)
    x = rs.randn(B, F, S, S, C).astype(np.float32)
    text = rs.randn(B, F, T, D).astype(np.float32)
    cond = rs.randn(B, F, S, S, C).astype(np.float32)  # any condition: its layers are identity
    mask = (rs.rand(B, F) > 0.5).astype(np.float32)
    # conv projections with per-frame noise levels [B, F]; linear ones with one t per video [B]
    t = (rs.randint(0, 1000, (B,)) if linear else rs.randint(0, 1000, (B, F))).astype(np.float32)
    y = np.asarray(jax.jit(module.apply)(variables, x, t, text, cond, mask))
    t_frames = np.broadcast_to(t[:, None], (B, F)) if t.ndim == 1 else t
    ref = torch_frame_by_frame(unet, x, t_frames, text)
    err = np.abs(y - ref).max()
    print(
        f"parity t{list(t.shape)}, linear={linear}: max |err| {err:.2e} (max |ref| "
        f"{np.abs(ref).max():.2f})"
    )
    assert err < 1e-4


def test_key_renaming():
    assert (
        diffusers_key_to_flax(
            "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0.weight"
        )
        == "down_blocks_0/attentions_1/transformer_blocks_0/attn1/to_out_0"
    )
    assert (
        diffusers_key_to_flax("mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.bias")
        == "mid_block/attentions_0/transformer_blocks_0/ff/net_0/proj"
    )
    assert diffusers_key_to_flax("time_embedding.linear_1.weight") == "time_embedding/linear_1"


@pytest.fixture(scope="module")
def saved_unet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet")
    build_unet(folder, linear=False)
    return folder


def test_missing_unexpected_and_misshaped_keys_are_listed(saved_unet, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(os.path.join(saved_unet, "diffusion_pytorch_model.safetensors"))
    del tensors["down_blocks.0.attentions.0.proj_in.weight"]
    tensors["down_blocks.0.extra_layer.weight"] = np.zeros((3, 3), np.float32)
    tensors["conv_in.bias"] = np.zeros((31,), np.float32)
    save_file(tensors, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with open(saved_unet / "config.json") as f, open(tmp_path / "config.json", "w") as g:
        g.write(f.read())
    with pytest.raises(WeightsError) as e:
        load_diffusers_unet(str(tmp_path))
    msg = str(e.value)
    assert "missing" in msg and "down_blocks_0/attentions_0/proj_in/kernel" in msg
    assert "unexpected" in msg and "down_blocks_0/extra_layer/kernel" in msg
    assert "conv_in/bias" in msg and "(31,)" in msg and "(32,)" in msg


@pytest.mark.parametrize("field,value", [("transformer_layers_per_block", 2),
                                         ("class_embed_type", "timestep"),
                                         ("down_block_types",
                                          ["CrossAttnDownBlock2D", "AttnDownBlock2D"])])
def test_unsupported_config_is_named(saved_unet, tmp_path, field, value):
    with open(saved_unet / "config.json") as f:
        cfg = json.load(f)
    cfg[field] = value
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    with pytest.raises(WeightsError, match=field):
        load_diffusers_unet(str(tmp_path))


def test_unknown_option_and_missing_folder(saved_unet, tmp_path):
    with pytest.raises(WeightsError, match="unknown option.*temporl"):
        load_diffusers_unet(str(saved_unet), temporl=False)
    with pytest.raises(WeightsError, match="config.json"):
        load_diffusers_unet(str(tmp_path / "nowhere"))
