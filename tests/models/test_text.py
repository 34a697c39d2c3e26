"""CLIP text transformer (structure, causality), tokenizers, and per-frame prompt encoding."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax import configuration
from nuwa_xl_jax.models import text
from nuwa_xl_jax.models.tokenizers import (
    TokenizerError,
    UnknownWordError,
    WordTokenizer,
    clip_tokenizer,
    make_tokenizer,
)

WORDS = ["a", "red", "ball", "blue", "cat", "jumps", "over", "the", "fence", "."]


def tiny_config(**over):
    c = configuration.text_block()
    c.update(dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=8), **over)
    return c


@pytest.fixture(scope="module")
def encoder():
    module = text.CLIPTextModel.from_config(tiny_config())
    return module, module.init_variables(jax.random.key(0))


@pytest.fixture
def clip_folder(tmp_path):
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b": 3, "c": 4, "a</w>": 5,
             "b</w>": 6, "c</w>": 7, "ab": 8, "ab</w>": 9}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\na b</w>\n")
    return str(tmp_path)


# ---- tokenizers -------------------------------------------------------------------------------

def test_word_tokenizer_conventions():
    tok = WordTokenizer(WORDS, max_length=8)
    ids = tok(["A red ball.", ""])
    assert ids.dtype == np.int32 and ids.shape == (2, 8)
    v = tok.vocab
    assert ids[0].tolist() == [tok.bos_token_id, v["a"], v["red"], v["ball"], v["."],
                               tok.eos_token_id, 0, 0]
    assert ids[1].tolist() == [tok.bos_token_id, tok.eos_token_id] + [tok.pad_token_id] * 6
    assert tok.pad_token_id == 0


def test_word_tokenizer_truncates_long_prompts_keeping_eos():
    tok = WordTokenizer(WORDS, max_length=6)
    ids = tok(["the red cat jumps over the blue fence"])[0]
    v = tok.vocab
    # documented: the first max_length - 2 words are kept, then EOS
    assert ids.tolist() == [tok.bos_token_id, v["the"], v["red"], v["cat"], v["jumps"],
                            tok.eos_token_id]


def test_word_tokenizer_unknown_word_is_named():
    with pytest.raises(UnknownWordError, match="dragon"):
        WordTokenizer(WORDS)(["a red dragon"])


def test_clip_tokenizer_from_local_folder(clip_folder):
    tok = clip_tokenizer(clip_folder, max_length=6)
    ids = tok(["ab abc", "", "a b c a b c"])
    assert ids.dtype == np.int32 and ids.shape == (3, 6)
    assert ids[0].tolist() == [0, 9, 8, 7, 1, 1]  # BPE merge 'a b' applied; EOS then pad (=EOS)
    assert ids[1].tolist() == [0, 1, 1, 1, 1, 1]
    assert ids[2].tolist() == [0, 5, 6, 7, 5, 1]  # truncated to max_length, EOS kept


def test_clip_tokenizer_missing_folder_or_files(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        clip_tokenizer(str(tmp_path / "nope"))
    with pytest.raises(TokenizerError, match="vocab.json"):
        clip_tokenizer(str(tmp_path))


def test_make_tokenizer_word_and_folder(clip_folder):
    tok = make_tokenizer(tiny_config(), vocabulary=WORDS)
    assert isinstance(tok, WordTokenizer) and tok.max_length == 8
    with pytest.raises(TokenizerError, match="vocabulary"):
        make_tokenizer(tiny_config())
    with pytest.raises(TokenizerError, match="vocab_size"):
        make_tokenizer(tiny_config(vocab_size=5), vocabulary=WORDS)
    clip = make_tokenizer(tiny_config(tokenizer=clip_folder))
    assert clip(["ab"]).shape == (1, 8)


# ---- the encoder -----------------------------------------------------------------------------

def test_hf_parameter_structure_and_logical_axes():
    module = text.CLIPTextModel.from_config(tiny_config())
    boxed = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    p = boxed["params"]["text_model"]
    assert set(p) == {"embeddings", "encoder", "final_layer_norm"}
    assert set(p["encoder"]) == {"layers_0", "layers_1"}
    layer = p["encoder"]["layers_1"]
    assert set(layer) == {"self_attn", "layer_norm1", "mlp", "layer_norm2"}
    assert set(layer["self_attn"]) == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert set(layer["mlp"]) == {"fc1", "fc2"}
    specs = nn.get_partition_spec(boxed)["params"]["text_model"]
    assert tuple(specs["embeddings"]["token_embedding"]["embedding"]) == ("vocab", "embed")
    assert tuple(specs["encoder"]["layers_0"]["mlp"]["fc1"]["kernel"]) == ("embed", "mlp")


def test_causal_and_shape(encoder):
    module, variables = encoder
    ids = np.array([[1, 5, 6, 7, 8, 2, 0, 0]], np.int32)
    out = module.apply(variables, ids)
    assert out.shape == (1, 8, 16)
    ids2 = ids.copy()
    ids2[0, 4] = 9
    out2 = module.apply(variables, ids2)
    diff = np.abs(np.asarray(out2 - out)).max(axis=-1)[0]
    assert np.all(diff[:4] == 0) and np.all(diff[4:] > 0)


def test_too_many_tokens_is_a_clear_error(encoder):
    module, variables = encoder
    with pytest.raises(ValueError, match="max_position_embeddings"):
        module.apply(variables, np.zeros((1, 9), np.int32))


def test_bad_text_config():
    with pytest.raises(configuration.ConfigError, match="num_attention_heads"):
        configuration.TextConfig.from_dict(tiny_config(num_attention_heads=3))
    with pytest.raises(configuration.ConfigError, match="model.text.hidden_act"):
        text.CLIPTextModel.from_config(tiny_config(hidden_act="relu"))


# ---- prompts -> states -----------------------------------------------------------------------

class CountingTokenizer(WordTokenizer):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.rows = []

    def __call__(self, prompts):
        self.rows.append(len(prompts))
        return super().__call__(prompts)


def test_encode_prompts_encodes_each_distinct_prompt_once(encoder):
    module, variables = encoder
    tok = CountingTokenizer(WORDS, max_length=8)
    prompts = ["a red ball"] * 50 + ["a blue cat"] * 30 + ["a red ball", "the fence"]
    states = text.encode_prompts(module, variables, tok, prompts)
    assert tok.rows == [3]  # one call, three distinct prompts
    assert states.shape == (82, 8, 16)
    naive = np.stack([np.asarray(module.apply(variables, tok([p])))[0] for p in prompts])
    np.testing.assert_allclose(np.asarray(states), naive, atol=1e-5)
    assert not np.allclose(naive[0], naive[60])


def test_frame_layout_and_null_prompt(encoder):
    module, variables = encoder
    tok = WordTokenizer(WORDS, max_length=8)
    prompts = [["a red ball", "a red ball", "a blue cat"], ["the fence", "a red ball", "the fence"]]
    states = text.encode_frame_prompts(module, variables, tok, prompts)
    assert states.shape == (2, 3, 8, 16)
    for b in range(2):
        for f in range(3):
            single = module.apply(variables, tok([prompts[b][f]]))[0]
            np.testing.assert_allclose(np.asarray(states[b, f]), np.asarray(single), atol=1e-5)
    null = text.null_text_states(module, variables, tok, (2, 3))
    assert null.shape == (2, 3, 8, 16)
    np.testing.assert_allclose(np.asarray(null[1, 2]),
                               np.asarray(module.apply(variables, tok([""]))[0]), atol=1e-5)
    with pytest.raises(ValueError, match="same, non-zero number of frame prompts"):
        text.encode_frame_prompts(module, variables, tok, [["a red ball"], ["a", "the fence"]])
