"""Tokenizers: a built-in word-level tokenizer (the synthetic world needs no files) and CLIP's BPE
tokenizer through transformers from a local folder. Both map a list of prompts to ``int32`` ids of
shape ``[N, max_length]`` with the same conventions as CLIP: BOS first, EOS after the last word,
then padding; prompts longer than ``max_length`` are truncated (EOS kept), as CLIP does.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL = (PAD, BOS, EOS, UNK)


class UnknownWordError(ValueError):
    """A prompt used words the built-in vocabulary lacks."""


class WordTokenizer:
    """Lower-cased words and punctuation, looked up in a fixed vocabulary.

    Unknown words are an error naming them (``strict=True``, the default) or map to ``<unk>``.
    ``pad_token_id`` is 0, so an all-padding prompt is the null prompt for guidance.
    """

    def __init__(self, vocabulary: Sequence[str], max_length: int = 16, strict: bool = True):
        words = list(SPECIAL) + [w for w in dict.fromkeys(vocabulary) if w not in SPECIAL]
        self.vocab = {w: i for i, w in enumerate(words)}
        self.max_length = max_length
        self.strict = strict
        self.pad_token_id, self.bos_token_id = self.vocab[PAD], self.vocab[BOS]
        self.eos_token_id, self.unk_token_id = self.vocab[EOS], self.vocab[UNK]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @staticmethod
    def split(prompt: str) -> list[str]:
        return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", prompt.lower())

    def unknown_words(self, prompts: Sequence[str]) -> list[str]:
        return sorted({w for p in prompts for w in self.split(p) if w not in self.vocab})

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        if isinstance(prompts, str):
            prompts = [prompts]
        if self.strict:
            unknown = self.unknown_words(prompts)
            if unknown:
                raise UnknownWordError(
                    f"words not in the built-in vocabulary: {', '.join(unknown)}. Use only words "
                    f"of "
                    f"the synthetic world's grammar, or a CLIP tokenizer (model.text.tokenizer)"
                )
        ids = np.full((len(prompts), self.max_length), self.pad_token_id, np.int32)
        for i, p in enumerate(prompts):
            toks = [self.vocab.get(w, self.unk_token_id) for w in self.split(p)]
            toks = [self.bos_token_id] + toks[: self.max_length - 2] + [self.eos_token_id]
            ids[i, : len(toks)] = toks
        return ids


class TokenizerError(ValueError):
    """A tokenizer that cannot be built (missing folder or files, wrong setting)."""


class CLIPBPETokenizer:
    """CLIP's byte-level BPE (transformers' CLIPTokenizer) from a local folder, with the same output
    as :class:`WordTokenizer`: ``int32 [N, max_length]``, BOS first, EOS last, padded with the
    folder's pad token; longer prompts are truncated to ``max_length`` tokens keeping BOS and EOS
    (what Stable Diffusion does with its 77 tokens)."""

    def __init__(self, tokenizer, max_length: int = 77):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_token_id, self.bos_token_id = tokenizer.pad_token_id, tokenizer.bos_token_id
        self.eos_token_id = tokenizer.eos_token_id

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        if isinstance(prompts, str):
            prompts = [prompts]
        out = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.max_length, return_tensors="np")
        return np.asarray(out["input_ids"], np.int32)


def clip_tokenizer(folder: str, max_length: int = 77) -> CLIPBPETokenizer:
    """CLIP's tokenizer from a local folder holding ``vocab.json`` and ``merges.txt`` (or a
    ``tokenizer.json``); never downloads."""
    if not os.path.isdir(folder):
        raise TokenizerError(
            f"CLIP tokenizer folder {folder!r} does not exist; give a local folder "
            "with vocab.json and merges.txt (e.g. Stable Diffusion's tokenizer/), "
            "or set model.text.tokenizer='word'"
        )
    has = lambda *names: all(os.path.isfile(os.path.join(folder, n)) for n in names)
    if not (has("vocab.json", "merges.txt") or has("tokenizer.json")):
        raise TokenizerError(f"{folder!r} holds neither vocab.json + merges.txt nor tokenizer.json")
    from transformers import CLIPTokenizer  # deferred: heavy (~1 s), only for CLIP's tokenizer

    try:
        tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # a corrupt vocabulary or merges file
        raise TokenizerError(f"cannot read the CLIP tokenizer in {folder!r}: {e}") from e
    return CLIPBPETokenizer(tok, max_length)


def make_tokenizer(text_config, vocabulary: Sequence[str] | None = None):
    """The tokenizer a ``model.text`` config asks for: 'word' (built-in, needs the world's
    ``vocabulary``) or a CLIP tokenizer folder. Prompts become ``max_position_embeddings`` ids."""
    name, max_length = text_config.tokenizer, int(text_config.max_position_embeddings)
    if name == "word":
        if vocabulary is None:
            raise TokenizerError(
                "model.text.tokenizer='word' needs the vocabulary of the synthetic "
                "world (pass vocabulary=...), or set it to a CLIP tokenizer folder"
            )
        tok = WordTokenizer(vocabulary, max_length=max_length)
    else:
        tok = clip_tokenizer(name, max_length=max_length)
    if tok.vocab_size > text_config.vocab_size:
        raise TokenizerError(f"the tokenizer has {tok.vocab_size} tokens but model.text.vocab_size "
                             f"is {text_config.vocab_size}; raise vocab_size to at least "
                             f"{tok.vocab_size}")
    return tok
