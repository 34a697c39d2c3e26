"""A frozen text encoder's prompt states, computed once per distinct training prompt.

Training prompts come from a finite set: the captions of the latent cache's episodes. With
``model.text.trainable`` false the encoder's weights never change, so its states for that set are
fixed for the whole run: the stage encodes every distinct prompt (and the null prompt, for prompt
dropout) once, in the compute dtype, into a table replicated on the mesh (``loop.Stage.prepare``:
from the restored weights on a resume), the input pipeline adds each frame's row number
(``prompt_index``) to its batch, and the step gathers rows instead of running the encoder.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.models import text


class PromptTable:
    """``ids`` ``[N, T]``: the distinct prompts, the null prompt last (row ``null_row``)."""

    def __init__(self, ids: np.ndarray):
        self.ids = np.asarray(ids, np.int32)
        self._rows = {r.tobytes(): i for i, r in enumerate(self.ids)}

    @classmethod
    def of(cls, prompt_ids: np.ndarray, null_ids: np.ndarray) -> "PromptTable":
        """The distinct rows of ``prompt_ids`` ``[..., T]`` plus the null prompt
        (text.prompt_table)."""
        return cls(text.prompt_table(prompt_ids, null_ids)[0])

    @property
    def null_row(self) -> int:
        return len(self.ids) - 1

    def index(self, prompt_ids: np.ndarray) -> np.ndarray:
        """Host side: the table row of every prompt of ``prompt_ids`` ``[..., T]`` -> ``[...]``."""
        ids = np.ascontiguousarray(prompt_ids, np.int32)
        flat = ids.reshape(-1, ids.shape[-1])
        try:
            out = [self._rows[r.tobytes()] for r in flat]
        except KeyError:
            raise ValueError("a training prompt is not in the frozen text encoder's prompt table "
                             "(built from the latent cache when the stage started): the cache "
                             "changed under a running stage; restart it") from None
        return np.asarray(out, np.int32).reshape(ids.shape[:-1])

    def states(self, models: Any, params: Any):
        """``[N, T, D]``: each prompt encoded once (``models.encode_prompts``: the compute
        dtype)."""
        return models.encode_prompts(params, jnp.asarray(self.ids))

    def add_index(self, batch: dict) -> dict:
        """The input pipeline's map: the batch with ``prompt_index`` ``[b, F]`` added."""
        return {**batch, "prompt_index": self.index(batch["prompt_ids"])}


def batch_states(models: Any, params: Any, batch: dict, drop, table_states=None,
                 null_row: int | None = None):
    """The prompt states ``[B, F, T, D]`` of a batch, the null prompt's where ``drop`` ``[B, 1,
    1]``:
    the encoder run on the batch's ids (trained encoder), or rows of the frozen encoder's
    ``table_states`` gathered by ``batch["prompt_index"]``."""
    if table_states is None:
        ids = jnp.where(drop, models.null_ids, batch["prompt_ids"])
        return models.encode_prompts(params, ids)
    if "prompt_index" not in batch:
        raise ValueError("a frozen text encoder's step needs batch['prompt_index'] (rows of its "
                         "prompt table: PromptTable.add_index in the input pipeline)")
    return table_states[jnp.where(drop[..., 0], null_row, batch["prompt_index"])]
