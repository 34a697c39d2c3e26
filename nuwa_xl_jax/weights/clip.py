"""Import a Hugging Face CLIPTextModel folder (config.json + *.safetensors) into
:class:`nuwa_xl_jax.models.text.CLIPTextModel`, reading tensors with numpy (no torch).

Keys may carry the ``text_model.`` prefix (transformers v4 files, Stable Diffusion's
``text_encoder/``) or not (transformers v5 ``save_pretrained``). The ``position_ids`` buffer that
older files store is ignored on purpose (positions are always 0..T-1); any other key the model does
not have, any missing key and any shape mismatch is a :class:`WeightsError` listing them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax import configuration
from nuwa_xl_jax.models.text import CLIPTextModel
from nuwa_xl_jax.weights.common import WeightsError, assemble, flatten, read_json, read_safetensors

IGNORED_SUFFIXES = ("embeddings.position_ids",)
_CONFIG_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps")


def text_config_from_hf(hf: dict, source: str = "config.json"):
    """The typed ``model.text`` block (TextConfig) from an HF CLIPTextConfig dict."""
    if hf.get("model_type") == "clip" and "text_config" in hf:
        raise WeightsError(f"{source} describes a full CLIPModel; point at a CLIPTextModel folder "
                           "(e.g. Stable Diffusion's text_encoder/)")
    missing = [f for f in _CONFIG_FIELDS if f not in hf]
    if missing:
        raise WeightsError(f"{source} lacks CLIP text config field(s): {', '.join(missing)}")
    try:
        return configuration.TextConfig.from_dict({f: hf[f] for f in _CONFIG_FIELDS}, path=source)
    except configuration.ConfigError as e:
        raise WeightsError(str(e)) from e


def hf_key_to_flax(key: str, expected_ndim: dict) -> tuple[str, str]:
    """``encoder.layers.3.self_attn.q_proj.weight`` -> (``text_model/encoder/layers_3/self_attn/
    q_proj``, leaf name); the leaf follows the tensor kind (embedding / kernel / scale / bias)."""
    key = key[len("text_model."):] if key.startswith("text_model.") else key
    parts = key.split(".")
    module, leaf = parts[:-1], parts[-1]
    if len(module) >= 3 and module[0] == "encoder" and module[1] == "layers":
        module = ["encoder", f"layers_{module[2]}"] + module[3:]
    path = "/".join(["text_model"] + module)
    if leaf == "bias":
        return path, "bias"
    if leaf != "weight":
        return path, leaf
    if module[-1] in ("token_embedding", "position_embedding"):
        return path, "embedding"
    if f"{path}/scale" in expected_ndim:
        return path, "scale"
    return path, "kernel"


def load_hf_clip_text(path: str, dtype=jnp.float32):
    """``(module, variables)`` from a CLIPTextModel folder; variables are ``{"params": ...}``."""
    cfg = text_config_from_hf(read_json(path), source=f"{path}/config.json")
    module = CLIPTextModel.from_config(cfg, dtype=dtype)
    abstract = jax.eval_shape(lambda: module.init_variables(jax.random.key(0)))
    expected = flatten(abstract["params"])
    ndim = {k: len(v.shape) for k, v in expected.items()}
    provided = {}
    for key, w in read_safetensors(path).items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        p, leaf = hf_key_to_flax(key, ndim)
        if leaf == "kernel" and w.ndim == 2:
            w = w.T  # torch Linear [out, in] -> flax [in, out]
        provided[f"{p}/{leaf}"] = np.asarray(w, np.float32)
    params = assemble(expected, provided, source=path)
    return module, {"params": jax.tree.map(jnp.asarray, params)}
