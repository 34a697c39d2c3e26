"""What each level of a generation runs: a denoiser split by what changes across sampler steps,
its weights, and their placement on the mesh (once per loaded family or per run, never per call).
DoD (dod/engine.py), the AR baseline (dod/baselines.py) and ART•V (dod/artv.py) all take them."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Protocol, Sequence

import jax
from jax.sharding import Mesh, NamedSharding

from nuwa_xl_jax import parallel

Denoise = Callable[..., jax.Array]  # denoise(params, x, t, ids, cond, mask, level) -> prediction


class Denoiser(Protocol):
    """A denoiser split by what changes across sampler steps (family.MTDModels is one). Prompts
    and given frames are fixed for a whole sampler call, so the level program encodes them once,
    outside the loop, and each step runs only ``unet``."""

    def encode_prompts(self, params, ids) -> Any:
        """``[..., T]`` token ids -> prompt states ``[..., T, D]``."""

    def condition(self, params, cond, mask) -> Any:
        """Given latents ``[B, F, h, w, c]`` and mask ``[B, F]`` -> features (a batch-first
        pytree)."""

    def unet(self, params, x, t, states, features, level) -> jax.Array:
        """One step's prediction from the encoded prompts and condition features."""


@dataclasses.dataclass(frozen=True)
class FunctionDenoiser:
    """A plain ``denoise(params, x, t, ids, cond, mask, level)`` as a :class:`Denoiser` that
    encodes nothing ahead: ids, cond and mask pass through and the whole function runs per step."""
    denoise: Denoise

    def encode_prompts(self, params, ids):
        return ids

    def condition(self, params, cond, mask):
        return cond, mask

    def unet(self, params, x, t, states, features, level):
        return self.denoise(params, x, t, states, *features, level)


def as_denoiser(denoise) -> Denoiser:
    return denoise if hasattr(denoise, "unet") else FunctionDenoiser(denoise)


@dataclasses.dataclass(frozen=True)
class LevelModel:
    """One level's denoiser and weights. ``denoise``: a :class:`Denoiser` (e.g. the family's
    MTDModels, ``params = {"mtd": ..., "text": ...}``) or a plain
    ``denoise(params, x, t, ids, cond, mask, level)`` (run whole at every step). Reuse the same
    denoiser for every level so levels of equal shape share one compilation (params are an
    argument). ``level``: the level value the model is passed (default: the plan's level). A
    shared local model run deeper than it was trained gets its deepest trained level here, so its
    level embedding is never read past ``num_levels`` (dod/runner.level_models_for)."""
    denoise: Any
    params: Any
    level: Optional[int] = None


def level_models(denoise: Denoise, global_params: Any, local_params: Any, depth: int,
                 local_models: str = "separate") -> tuple[LevelModel, ...]:
    """Per-level models for a plan of ``depth``: level 0 the global weights; level k >= 1 the
    local weights of depth k (``separate``: ``local_params[k - 1]``) or one shared local model
    (``shared``: ``local_params`` itself, told apart by the ``level`` the engine passes)."""
    if local_models not in ("separate", "shared"):
        raise ValueError(f"local_models={local_models!r}; use 'separate' or 'shared'")
    if local_models == "shared":
        locals_ = [local_params] * (depth - 1)
    else:
        local_params = list(local_params or [])
        if len(local_params) < depth - 1:
            raise ValueError(f"depth {depth} needs {depth - 1} local models (one per depth), got "
                             f"{len(local_params)}")
        locals_ = local_params[:depth - 1]
    return tuple(LevelModel(denoise, p) for p in [global_params, *locals_])


def place_params(params: Any, mesh: Mesh) -> Any:
    """Leaves already laid out on ``mesh`` (e.g. FSDP-sharded, or placed by an earlier call) are
    returned as they are; others (e.g. numpy weights of an export) are copied to the devices,
    replicated. Place weights once per loaded family (dod/runner.load_family) or per run
    (:func:`place_models`), never per call. The level program then takes the params' own
    shardings."""
    rep = parallel.replicated(mesh)

    def place(a):
        s = getattr(a, "sharding", None)
        if isinstance(s, NamedSharding) and s.mesh == mesh:
            return a
        return jax.device_put(a, rep)

    return jax.tree.map(place, params)


def place_models(models: Sequence[LevelModel], mesh: Mesh) -> tuple[LevelModel, ...]:
    """The models with their weights on ``mesh``, each distinct weight tree placed once (a shared
    local model serves several levels with one copy)."""
    placed = {}
    for m in models:
        if id(m.params) not in placed:
            placed[id(m.params)] = place_params(m.params, mesh)
    return tuple(dataclasses.replace(m, params=placed[id(m.params)]) for m in models)
