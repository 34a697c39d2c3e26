"""The embedded default: a procedurally generated cartoon world, tiny models, trains on a CPU.

Variants: ``default`` and ``tiny`` (smallest, for tests).
"""
import ml_collections

from configs import common


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    if arg not in ("default", "tiny"):
        raise ValueError(f"configs/synthetic.py: unknown variant {arg!r}; expected 'default' or 'tiny'")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict()
    config.model.vae = common.vae("tiny")
    config.vae_loss = common.vae_loss()
    config.data = ml_collections.ConfigDict()
    config.data.resolution = (32, 32) if arg == "tiny" else (64, 64)
    config.mesh = common.mesh()
    return config
