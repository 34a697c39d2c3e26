"""The paper's setting on FlintstonesHD: Stable Diffusion v1 layout, L=16, depth 3.

Variants: ``128`` and ``256`` (frame size in pixels).
"""
import ml_collections

from configs import common


def get_config(arg: str = "128") -> ml_collections.ConfigDict:
    if arg not in ("128", "256"):
        raise ValueError(f"configs/flintstones.py: unknown variant {arg!r}; expected '128' or '256'")
    size = int(arg)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict()
    config.model.vae = common.vae("sd")
    config.vae_loss = common.vae_loss()
    config.data = ml_collections.ConfigDict()
    config.data.resolution = (size, size)
    config.mesh = common.mesh()
    return config
