"""The synthetic world's words: its scenes, characters and actions, and the vocabulary of the
built-in word tokenizer (those words plus the caption grammar's "with", "and", "in", "the").

Why a module of its own at the bottom: the world (``data/synthetic.py``) builds its captions from
these words, and a model family's runtime (``family/``) builds its tokenizer from them; the family
sits below ``data/`` (the latent cache reads a family), so the words cannot live in ``data/``.
"""
from __future__ import annotations

SCENES = ("desert", "cave", "forest", "beach", "city", "snow")
CHARACTERS = ("fred", "wilma", "barney", "betty", "dino", "pebbles")
ACTIONS = ("stands", "walks left", "walks right", "jumps", "grows", "shrinks", "enters", "leaves")

VOCABULARY = tuple(dict.fromkeys(
    list(CHARACTERS) + [w for a in ACTIONS for w in a.split()]
    + ["with", "and", "in", "the"] + list(SCENES)))
