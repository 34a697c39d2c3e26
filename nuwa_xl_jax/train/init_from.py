"""Stages that start from public weights: ``model.vae.init_from``, ``model.mtd.init_from`` and
``model.text.init_from`` name folders written by ``python -m nuwa_xl_jax.convert`` (the family
format). Only the weights the public model has are taken; the layers NUWA-XL adds (temporal convs
and attentions, condition cascades and injections, the level embedding) keep the stage's own
identity init, so at step 0 the T-KLVAE is the image VAE and the MTD the image UNet, frame by frame
(the paper initialises its spatial layers from a text-to-image model).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from flax import traverse_util

from nuwa_xl_jax.configuration import ConfigError
from nuwa_xl_jax.family import base, store
from nuwa_xl_jax.models.tklvae import is_temporal_param
from nuwa_xl_jax.weights.common import flatten
from nuwa_xl_jax.weights.unet import is_new_layer

# component -> (convert --kind, the added layers that start at identity)
_COMPONENTS: dict[str, tuple[str, Optional[Callable[[str], bool]]]] = {
    "vae": ("vae", is_temporal_param), "mtd": ("unet", is_new_layer), "text": ("clip", None)}
# fields of a block that are not architecture (or belong to NUWA-XL's added layers)
_NOT_COMPARED = {"init_from", "tokenizer", "scaling_factor", "temporal", "temporal_kernel_size",
                 "temporal_attention_heads", "condition_injection", "condition_symmetric",
                 "num_levels", "dtype", "remat", "attention", "trainable"}


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v
    return norm(a) == norm(b)


def latent_scale(block) -> Optional[float]:
    """The ``latent_scale`` of the converted VAE folder ``block.init_from`` names (None if unset or
    the folder has none)."""
    folder = block.init_from
    if not folder:
        return None
    base.check(folder)
    meta = store.read_model_config(folder)
    return float(meta["latent_scale"]) if "latent_scale" in meta else None


def start_weights(block, path: str, component: str) -> Optional[dict]:
    """``{"params": ...}`` of the converted folder ``block.init_from`` names (None when unset),
    less the layers NUWA-XL adds. A folder of another component or architecture is one
    ConfigError naming the field and the fix."""
    block = block.to_dict()  # a typed model block (configuration.model)
    folder = block.get("init_from", "")
    if not folder:
        return None
    kind, new_layer = _COMPONENTS[component]
    base.check(folder)  # a base with a manifest: every file there, with its checksum
    params, meta = store.read_export(folder)  # a missing / damaged folder: one clear error
    if component not in params or component not in meta:
        raise ConfigError(f"{path}.init_from={folder!r} holds {sorted(params)} weights, not "
                          f"'{component}': give a folder written by python -m nuwa_xl_jax.convert "
                          f"--kind={kind}")
    source = meta[component]
    differ = [f"{f}: converted {source[f]!r}, config {block[f]!r}" for f in sorted(source)
              if f in block and f not in _NOT_COMPARED and not _same(source[f], block[f])]
    if differ:
        raise ConfigError(f"{path}.init_from={folder!r} is another architecture than {path} ("
                          + "; ".join(differ) + f"): set those {path} fields to the converted "
                          f"model's ({folder}/{store.MODEL_CONFIG})")
    flat = flatten(params[component]["params"])
    keep = {k: v for k, v in flat.items() if new_layer is None or not new_layer(k)}
    return {
        "params": traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in keep.items()})
    }
