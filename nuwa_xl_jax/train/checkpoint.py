"""A thin wrapper over Orbax's CheckpointManager: one composite checkpoint per step holding

- ``state``: the TrainState (params, optimizer state, EMA, step, RNG), restored straight into the
  shardings of the current mesh, so a checkpoint written on 8 devices restores on 1 or 4;
- ``data``: the grain iterator state, one file per process (grain's own Orbax handler);
- ``meta``: JSON with the config and the architecture fingerprint, checked before restoring so a
  workdir holding another model is a clear error and is never overwritten.

Saves are asynchronous; the last ``max_to_keep`` are kept.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from nuwa_xl_jax import paths


class CheckpointMismatchError(ValueError):
    """The workdir holds a checkpoint of another architecture or stage."""


def fingerprint(model_config: Any) -> str:
    """A short hash of the parts of the config that decide parameter shapes."""
    text = json.dumps(model_config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
        self.directory = paths.absolute(directory)  # a bucket URL stays a URL
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        item_handlers = {"state": ocp.StandardCheckpointHandler(),
                         "meta": ocp.JsonCheckpointHandler()}
        item_handlers["data"] = grain.checkpoint.CheckpointHandler()
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers=item_handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, data_iterator: Any = None,
             force: bool = False) -> bool:
        args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored["meta"]

    def check_compatible(self, meta: dict, step: int | None = None) -> None:
        """Raises CheckpointMismatchError if the saved architecture or stage differs from
        ``meta``."""
        saved = self.read_meta(step)
        for key in ("stage", "fingerprint"):
            if key in meta and saved.get(key) != meta[key]:
                raise CheckpointMismatchError(
                    f"{self.directory} holds a checkpoint of another "
                    f"{'stage' if key == 'stage' else 'architecture'} "
                    f"({key} {saved.get(key)!r}, this run has {meta[key]!r}). Nothing was "
                    f"overwritten: "
                    "use a new --workdir, or the config the checkpoint was written with."
                )

    def restore(self, abstract_state: Any, step: int | None = None, data_iterator: Any = None):
        """Restores ``(state, meta)``; ``abstract_state`` leaves are ShapeDtypeStructs with
        shardings.

        The data iterator, if given, is restored in place.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        args = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        return restored["state"], restored["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a live pytree: the restore target for the same
    layout."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
