"""load_hf_clip_text: parity with transformers' CLIPTextModel on random weights, and strict keys."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from nuwa_xl_jax.weights.clip import load_hf_clip_text
from nuwa_xl_jax.weights.common import WeightsError

SMALL = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=16)


def _save_torch_clip(folder, hidden_act="quick_gelu"):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(**SMALL, hidden_act=hidden_act, bos_token_id=0,
                                         eos_token_id=2, pad_token_id=1)
    model = transformers.CLIPTextModel(config).eval()
    with torch.no_grad():  # layer norms away from (1, 0) so a swapped scale/bias would show
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    return model


@pytest.mark.interop
@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_parity_with_transformers(tmp_path, hidden_act):
    torch = pytest.importorskip("torch")
    model = _save_torch_clip(str(tmp_path), hidden_act)
    ids = np.random.default_rng(0).integers(0, SMALL["vocab_size"], (3, 16)).astype(np.int32)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids).long()).last_hidden_state.numpy()
    module, variables = load_hf_clip_text(str(tmp_path))
    assert module.hidden_act == hidden_act
    out = np.asarray(module.apply(variables, ids))
    err = float(np.abs(out - ref).max())
    print(f"CLIP parity ({hidden_act}) max abs error {err:.2e}")
    assert out.shape == (3, 16, 32) and err < 1e-4
    # Shorter sequences (fewer than max_position_embeddings) match too: causal, positions 0..T-1.
    with torch.no_grad():
        ref8 = model(input_ids=torch.from_numpy(ids[:, :8]).long()).last_hidden_state.numpy()
    assert np.abs(np.asarray(module.apply(variables, ids[:, :8])) - ref8).max() < 1e-4


def _fake_folder(tmp_path, tensors, config=None):
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config or dict(SMALL, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                                 model_type="clip_text_model"), f)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return str(tmp_path)


def _hf_tensors(prefix="text_model."):
    """A complete, correctly shaped HF state dict (random values), with the v4 prefix."""
    rng = np.random.default_rng(0)
    d, m = SMALL["hidden_size"], SMALL["intermediate_size"]
    t = {"embeddings.token_embedding.weight": (SMALL["vocab_size"], d),
         "embeddings.position_embedding.weight": (SMALL["max_position_embeddings"], d),
         "final_layer_norm.weight": (d,), "final_layer_norm.bias": (d,)}
    for i in range(SMALL["num_hidden_layers"]):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[f"encoder.layers.{i}.self_attn.{p}.weight"] = (d, d)
            t[f"encoder.layers.{i}.self_attn.{p}.bias"] = (d,)
        t[f"encoder.layers.{i}.mlp.fc1.weight"], t[f"encoder.layers.{i}.mlp.fc1.bias"] = (
            (m, d),
            (m,),
        )
        t[f"encoder.layers.{i}.mlp.fc2.weight"], t[f"encoder.layers.{i}.mlp.fc2.bias"] = (
            (d, m),
            (d,),
        )
        for n in ("layer_norm1", "layer_norm2"):
            t[f"encoder.layers.{i}.{n}.weight"], t[f"encoder.layers.{i}.{n}.bias"] = (d,), (d,)
    return {prefix + k: rng.standard_normal(s).astype(np.float32) for k, s in t.items()}


def test_v4_prefix_and_position_ids_buffer_load(tmp_path):
    tensors = _hf_tensors()
    tensors["text_model.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]
    module, variables = load_hf_clip_text(_fake_folder(tmp_path, tensors))
    p = variables["params"]["text_model"]
    np.testing.assert_array_equal(p["encoder"]["layers_1"]["self_attn"]["q_proj"]["kernel"],
                                  tensors["text_model.encoder.layers.1.self_attn.q_proj.weight"].T)
    np.testing.assert_array_equal(p["embeddings"]["token_embedding"]["embedding"],
                                  tensors["text_model.embeddings.token_embedding.weight"])
    np.testing.assert_array_equal(p["final_layer_norm"]["scale"],
                                  tensors["text_model.final_layer_norm.weight"])


def test_missing_unexpected_and_misshaped_keys(tmp_path):
    tensors = _hf_tensors()
    del tensors["text_model.encoder.layers.0.mlp.fc1.bias"]
    tensors["text_projection.weight"] = np.zeros((8, 32), np.float32)
    tensors["text_model.final_layer_norm.bias"] = np.zeros((31,), np.float32)
    with pytest.raises(WeightsError) as e:
        load_hf_clip_text(_fake_folder(tmp_path, tensors))
    msg = str(e.value)
    assert "missing" in msg and "layers_0/mlp/fc1/bias" in msg
    assert "unexpected" in msg and "text_projection" in msg
    assert "final_layer_norm/bias" in msg and "(31,)" in msg


def test_bad_folder_and_config(tmp_path):
    with pytest.raises(WeightsError, match="config.json.*not found"):
        load_hf_clip_text(str(tmp_path / "nowhere"))
    bad = dict(SMALL, hidden_act="relu", layer_norm_eps=1e-5)
    with pytest.raises(WeightsError, match="hidden_act"):
        load_hf_clip_text(_fake_folder(tmp_path, _hf_tensors(), bad))
    full = {"model_type": "clip", "text_config": {}, "vision_config": {}}
    with pytest.raises(WeightsError, match="full CLIPModel"):
        load_hf_clip_text(_fake_folder(tmp_path, _hf_tensors(), full))
