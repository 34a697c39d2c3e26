"""CLIP's text transformer in Linen, with Hugging Face's parameter structure, and helpers that
turn per-frame prompts into text states.

The parameter tree mirrors transformers' CLIPTextModel (``text_model/embeddings/token_embedding``,
``text_model/encoder/layers_3/self_attn/q_proj``, ``text_model/final_layer_norm``), so
nuwa_xl_jax/weights/clip.py is a rename and a transpose. ``apply(variables, input_ids)`` returns the
last hidden state ``[B, T, D]`` after the final layer norm (HF's ``last_hidden_state``, which is
what Stable Diffusion's UNet cross-attends to). Attention is causal and ignores padding, as in
Stable Diffusion (no attention mask is passed).

A storyboard of 3376 frames holds few distinct prompts: :func:`encode_prompts` runs the encoder
once per distinct prompt and gathers the states back per frame.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.configuration.model import TextConfig
from nuwa_xl_jax.models.layers import dense, layer_norm

Dtype = Any

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP (SD v1)
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # erf gelu, as torch's default
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
}


def _embed(num, features, axes, name):
    init = nn.with_logical_partitioning(nn.initializers.normal(0.02), axes)
    return nn.Embed(num, features, embedding_init=init, param_dtype=jnp.float32, name=name)


class CLIPAttention(nn.Module):
    """Causal multi-head self-attention with HF's names (q_proj, k_proj, v_proj, out_proj)."""
    hidden_size: int
    num_heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        head_dim = self.hidden_size // self.num_heads
        proj = lambda name: dense(self.hidden_size, axes=("embed", "heads"), dtype=self.dtype,
                                  name=name)(x).reshape(*x.shape[:-1], self.num_heads, head_dim)
        out = jax.nn.dot_product_attention(proj("q_proj"), proj("k_proj"), proj("v_proj"),
                                           is_causal=True)
        out = out.reshape(*x.shape[:-1], self.hidden_size)
        return dense(self.hidden_size, axes=("heads", "embed"), dtype=self.dtype, name="out_proj")(
            out
        )


class CLIPMLP(nn.Module):
    hidden_size: int
    intermediate_size: int
    hidden_act: str = "quick_gelu"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = dense(self.intermediate_size, axes=("embed", "mlp"), dtype=self.dtype, name="fc1")(x)
        h = ACTIVATIONS[self.hidden_act](h)
        return dense(self.hidden_size, axes=("mlp", "embed"), dtype=self.dtype, name="fc2")(h)


class CLIPEncoderLayer(nn.Module):
    """Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x))."""
    hidden_size: int
    intermediate_size: int
    num_heads: int
    hidden_act: str
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = layer_norm(self.eps, name="layer_norm1", dtype=self.dtype)(x)
        x = x + CLIPAttention(self.hidden_size, self.num_heads, self.dtype, name="self_attn")(h)
        h = layer_norm(self.eps, name="layer_norm2", dtype=self.dtype)(x)
        return x + CLIPMLP(self.hidden_size, self.intermediate_size, self.hidden_act, self.dtype,
                           name="mlp")(h)


class CLIPEncoder(nn.Module):
    num_layers: int
    layer: dict

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            x = CLIPEncoderLayer(**self.layer, name=f"layers_{i}")(x)
        return x


class CLIPEmbeddings(nn.Module):
    vocab_size: int
    hidden_size: int
    max_position_embeddings: int

    @nn.compact
    def __call__(self, input_ids):
        tok = _embed(self.vocab_size, self.hidden_size, ("vocab", "embed"), "token_embedding")
        pos = _embed(self.max_position_embeddings, self.hidden_size, (None, "embed"),
                     "position_embedding")
        return tok(input_ids) + pos(jnp.arange(input_ids.shape[-1]))


class CLIPTextTransformer(nn.Module):
    """HF's ``text_model``: embeddings, encoder, final layer norm."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    hidden_act: str
    layer_norm_eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids):
        x = CLIPEmbeddings(self.vocab_size, self.hidden_size, self.max_position_embeddings,
                           name="embeddings")(input_ids).astype(self.dtype)
        layer = dict(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                     num_heads=self.num_attention_heads, hidden_act=self.hidden_act,
                     eps=self.layer_norm_eps, dtype=self.dtype)
        x = CLIPEncoder(self.num_hidden_layers, layer, name="encoder")(x)
        return layer_norm(self.layer_norm_eps, name="final_layer_norm", dtype=self.dtype)(x)


_NETWORK_FIELDS = tuple(f for f in TextConfig().to_dict()
                        if f not in ("tokenizer", "init_from", "trainable"))  # not the network


class CLIPTextModel(nn.Module):
    """``apply(variables, input_ids [B, T] int) -> [B, T, D]`` (HF's last_hidden_state). Fields
    are configuration.model.TextConfig's network fields (build it with :meth:`from_config`)."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    hidden_act: str
    layer_norm_eps: float
    dtype: Dtype = jnp.float32

    @classmethod
    def from_config(cls, c: Any, dtype: Dtype = jnp.float32) -> "CLIPTextModel":
        """The module for a :class:`~nuwa_xl_jax.configuration.model.TextConfig`; a ConfigDict or
        plain dict block is first validated into one (``TextConfig.from_dict``). ``tokenizer``
        and ``init_from`` are not fields of the network."""
        c = TextConfig.from_dict(c)
        return cls(**{f: getattr(c, f) for f in _NETWORK_FIELDS}, dtype=dtype)

    @nn.compact
    def __call__(self, input_ids):
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, tokens], got shape {input_ids.shape}")
        if input_ids.shape[-1] > self.max_position_embeddings:
            raise ValueError(f"{input_ids.shape[-1]} tokens exceed max_position_embeddings="
                             f"{self.max_position_embeddings}; tokenize with max_length <= "
                             f"{self.max_position_embeddings}")
        return CLIPTextTransformer(
            self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers,
            self.num_attention_heads, self.max_position_embeddings, self.hidden_act,
            self.layer_norm_eps, self.dtype, name="text_model")(input_ids)

    def init_variables(self, key, max_length: int | None = None):
        """Unboxed variables for ids of length ``max_length`` (default: max_position_embeddings)."""
        ids = jnp.zeros((1, max_length or self.max_position_embeddings), jnp.int32)
        return nn.meta.unbox(self.init(key, ids))


_apply = jax.jit(lambda module, variables, ids: module.apply(variables, ids), static_argnums=0)


def encode_prompts(module: CLIPTextModel, variables, tokenizer, prompts: Sequence[str]):
    """``[N, T, D]`` text states for ``N`` prompts; each distinct prompt is tokenized and encoded
    once (one batched call), then gathered back in order."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to encode")
    distinct = list(dict.fromkeys(prompts))
    index = {p: i for i, p in enumerate(distinct)}
    states = _apply(module, variables, jnp.asarray(tokenizer(distinct)))
    return states[np.array([index[p] for p in prompts])]


def prompt_table(ids, null_ids) -> tuple[np.ndarray, np.ndarray]:
    """``(table [P, T], index [...])`` of token ids ``[..., T]``: the distinct rows, the null
    prompt's ``null_ids`` ``[T]`` appended last (row ``P - 1``, for guidance and prompt dropout),
    and each row's place in the table. Encoding the table encodes every distinct prompt once;
    ``states[index]`` gives every row's states."""
    null_ids = np.asarray(null_ids, np.int32)
    ids = np.asarray(ids, np.int32)
    rows, inverse = np.unique(ids.reshape(-1, null_ids.shape[-1]), axis=0, return_inverse=True)
    is_null = np.all(rows == null_ids, axis=-1)
    keep = np.flatnonzero(~is_null)
    place = np.full(len(rows), len(keep), np.int32)  # the null prompt: the last row
    place[keep] = np.arange(len(keep), dtype=np.int32)
    table = np.concatenate([rows[keep], null_ids[None]])
    return table, place[inverse.reshape(-1)].reshape(ids.shape[:-1])


def encode_frame_prompts(module: CLIPTextModel, variables, tokenizer,
                         prompts: Sequence[Sequence[str]]):
    """``[B, F, T, D]`` from ``B`` lists of ``F`` prompts (one per frame; frame i attends to its own
    prompt). Distinct prompts are encoded once across the whole batch."""
    if isinstance(prompts, str) or not prompts or any(isinstance(r, str) for r in prompts):
        raise ValueError("prompts must be a list of B lists of per-frame prompts")
    frames = {len(r) for r in prompts}
    if len(frames) != 1 or 0 in frames:
        raise ValueError(f"every video needs the same, non-zero number of frame prompts; got "
                         f"lengths {[len(r) for r in prompts]}")
    flat = encode_prompts(module, variables, tokenizer, [p for r in prompts for p in r])
    return flat.reshape(len(prompts), frames.pop(), *flat.shape[1:])


def null_text_states(module: CLIPTextModel, variables, tokenizer, shape: Sequence[int] = (1, 1)):
    """The empty prompt's states (classifier-free guidance's unconditional input), broadcast to
    ``[*shape, T, D]``: as in Stable Diffusion, the null prompt is the encoded empty string."""
    states = encode_prompts(module, variables, tokenizer, [""])[0]
    return jnp.broadcast_to(states, (*shape, *states.shape))
