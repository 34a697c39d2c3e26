"""The two feature networks of the metrics, from converted weight folders or (asked for) random.

``python -m nuwa_xl_jax.convert --kind=inception|i3d`` writes a folder (``params/`` +
``model_config.json``, the family format) that :func:`load_feature_networks` reads. Random weights
are used only with ``random=True`` (the
CLI's ``--random_feature_weights``): the numbers then measure nothing the paper's do, and the
:attr:`FeatureNetworks.identity` that goes into every report and statistics file says so.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

from nuwa_xl_jax import convert
from nuwa_xl_jax.family import store
from nuwa_xl_jax.models import i3d, inception

RANDOM_WARNING = ("RANDOM-WEIGHT FEATURE NETWORKS: these Avg-FID / B-FVD-16 numbers are NOT "
                  "comparable with the paper's or anyone else's; they only compare runs made with "
                  "the same random networks. Convert the public weights for real metrics "
                  "(docs/evaluation.md).")


class FeatureWeightsError(ValueError):
    """A feature-network weights folder that is missing or of the wrong kind; says how to fix it."""


@dataclasses.dataclass
class FeatureNetworks:
    """``fid_fn``: uint8 frames ``[n, H, W, 3]`` -> ``[n, 2048]``; ``fvd_fn``: uint8 clips
    ``[n, 16, H, W, 3]`` -> ``[n, d]`` (either None when its metric is not asked for);
    ``identity``: what made the features (goes into reports and statistics files, and two sets of
    statistics are compared only when their identities agree)."""
    fid_fn: Optional[Callable]
    fvd_fn: Optional[Callable]
    identity: dict
    random: bool


def _read(path: str, kind: str, flag: str):
    if not os.path.isdir(path):
        raise FeatureWeightsError(
            f"{flag}={path!r}: no such folder. Convert the public weights first: python -m "
            f"nuwa_xl_jax.convert --kind={kind} --src=FILE --dst={path} (where FILE comes from: "
            "docs/evaluation.md), or pass --random_feature_weights for a smoke test whose numbers "
            "mean nothing")
    found = convert.converted_kind(path)
    if found is None:
        raise FeatureWeightsError(
            f"{flag}={path!r} has no {store.MODEL_CONFIG} naming a kind: not "
            f"a folder written by python -m nuwa_xl_jax.convert --kind={kind}"
        )
    if found != kind:
        raise FeatureWeightsError(f"{flag}={path!r} holds converted {found!r} weights; expected "
                                  f"--kind={kind} (inception for --fid_weights, i3d for "
                                  "--fvd_weights)")
    return convert.load_converted(path)


# kind -> (module class, random init, the flag naming its weights folder)
_NETWORKS = {"inception": (inception.FIDInceptionV3, inception.init_params, "--fid_weights"),
             "i3d": (i3d.InceptionI3D, i3d.init_params, "--fvd_weights")}


def _network(kind: str, weights: Optional[str], random: bool, seed: int, size_field: str,
             size: int, missing: str):
    """(module, variables, identity string) of one network: random (asked for) or converted."""
    cls, init, flag = _NETWORKS[kind]
    if random:
        module = cls(**{size_field: size})
        return module, init(module, seed), f"random {cls.__name__} (seed {seed})"
    if not weights:
        raise FeatureWeightsError(f"{missing}; docs/evaluation.md), or --random_feature_weights "
                                  "for a smoke test whose numbers mean nothing")
    cfg, variables = _read(weights, kind, flag)
    module = cls(**{**cfg["model"], size_field: size})
    return module, variables, f"{cfg.get('source', '?')} ({os.path.abspath(weights)})"


def load_feature_networks(fid_weights: Optional[str], fvd_weights: Optional[str], *,
                          random: bool = False, need_fid: bool = True, need_fvd: bool = True,
                          fid_size: int = inception.INPUT_SIZE, fvd_size: int = i3d.RESOLUTION,
                          fvd_output: str = "logits", seed: int = 0) -> FeatureNetworks:
    """The networks the requested metrics need. Without a weights folder for one that is needed,
    ``random=True`` must be given explicitly. ``fid_size`` / ``fvd_size`` other than 299 / 224
    are off-protocol (cheap smoke tests) and recorded in the identity."""
    if random and (fid_weights or fvd_weights):
        raise FeatureWeightsError("--random_feature_weights and --fid_weights/--fvd_weights "
                                  "exclude each other; pass one or the other")
    if need_fid and fid_size < 75:
        raise FeatureWeightsError(f"--fid_size={fid_size}: Inception-v3 needs at least 75 px "
                                  f"(FID's protocol: {inception.INPUT_SIZE})")
    if need_fvd and fvd_size < i3d.MIN_SIZE:
        raise FeatureWeightsError(f"--fvd_size={fvd_size}: I3D needs at least {i3d.MIN_SIZE} px "
                                  f"(FVD's protocol: {i3d.RESOLUTION})")
    identity: dict = {"random": bool(random)}
    fid_fn = fvd_fn = None
    if need_fid:
        module, variables, identity["fid"] = _network(
            "inception", fid_weights, random, seed, "input_size", fid_size,
            "Avg-FID needs --fid_weights (a folder written by python -m nuwa_xl_jax.convert "
            "--kind=inception from pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
        identity["fid_size"] = int(fid_size)
        fid_fn = inception.feature_fn(module, variables)
    if need_fvd:
        module, variables, identity["fvd"] = _network(
            "i3d", fvd_weights, random, seed, "resolution", fvd_size,
            "B-FVD-16 needs --fvd_weights (a folder written by python -m nuwa_xl_jax.convert "
            "--kind=i3d from pytorch-i3d's rgb_imagenet.pt")
        identity["fvd_size"] = int(fvd_size)
        identity["fvd_output"] = fvd_output
        fvd_fn = i3d.feature_fn(module, variables, output=fvd_output)
    off = []
    if need_fid and fid_size != inception.INPUT_SIZE:
        off.append(f"FID images at {fid_size} px, not {inception.INPUT_SIZE}")
    if need_fvd and fvd_size != i3d.RESOLUTION:
        off.append(f"FVD clips at {fvd_size} px, not {i3d.RESOLUTION}")
    if off:
        identity["off_protocol"] = "; ".join(off)
    return FeatureNetworks(fid_fn, fvd_fn, identity, bool(random))
