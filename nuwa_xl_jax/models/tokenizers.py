"""Tokenizers: a built-in word-level tokenizer (the synthetic world needs no files) and CLIP's BPE
tokenizer through transformers from a local folder. Both map a list of prompts to ``int32`` ids of
shape ``[N, max_length]`` with the same conventions as CLIP: BOS first, EOS after the last word,
then padding; prompts longer than ``max_length`` are truncated (EOS kept), as CLIP does.
"""
from __future__ import annotations

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
                    f"words not in the built-in vocabulary: {', '.join(unknown)}. Use only words of "
                    f"the synthetic world's grammar, or a CLIP tokenizer (model.text.tokenizer)")
        ids = np.full((len(prompts), self.max_length), self.pad_token_id, np.int32)
        for i, p in enumerate(prompts):
            toks = [self.vocab.get(w, self.unk_token_id) for w in self.split(p)]
            toks = [self.bos_token_id] + toks[: self.max_length - 2] + [self.eos_token_id]
            ids[i, : len(toks)] = toks
        return ids
