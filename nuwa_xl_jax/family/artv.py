"""The runtime of an ART•V model (stage ``mtd_artv``): the family's MTD UNet run on a window of
three frames ``[anchor, previous, new]`` plus the masked-diffusion head (models/artv.py).

Why this shape [ours; the ART•V abstract states only what is conditioned on, not how]: the MTD
already takes given frames as a visual condition with a frame mask, per-frame timesteps and one
prompt per frame, and its temporal layers let the new frame attend to the given ones. So ART•V is
the MTD with F = 3: the anchor (the video's first frame, clean, t = 0) and the previous frame
(noise-augmented to a timestep the model is told) given, the new frame generated. One new frame per
call, as ART•V does: each call then only has to model the short motion between neighbours. With
nothing given (mask all zero) the same model draws a window from text alone: the first call of a
video, whose anchor position becomes frame 0 when no first frame is given.

Params: ``{"mtd": ..., "text": ..., "mask": ...}``; ``mtd`` and ``text`` have the same layout as any
MTD stage's, so an ART•V stage can start from another stage's weights (``init_from``).
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from nuwa_xl_jax import configuration
from nuwa_xl_jax.diffusion import schedules
from nuwa_xl_jax.family.runtime import MTDModels
from nuwa_xl_jax.models.artv import MaskHead, blend_prediction

ANCHOR, PREVIOUS, NEW = 0, 1, 2
WINDOW = 3


def artv_settings(config):
    """The config's ``artv`` block, or the defaults of record for configs written before it."""
    return config.artv or configuration.ARTVConfig()


class ARTVModels:
    """An :class:`MTDModels` for three-frame windows plus the mask head; the calls mirror it."""

    def __init__(self, models: MTDModels):
        self.models = models
        self.config = models.config
        self.settings = artv_settings(models.config)
        self.head = MaskHead(self.settings.mask_width)
        self.schedule = models.schedule
        self.tokenizer = models.tokenizer
        self.null_ids = models.null_ids
        self.latent_shape = models.latent_shape

    def init(self, key):
        params = self.models.init(key, WINDOW)
        z = jnp.zeros((1, *self.latent_shape))
        params["mask"] = self.head.init(key, z, z, jnp.zeros((1,)))
        return params

    def encode_prompts(self, params, ids):
        return self.models.encode_prompts(params, ids)

    def condition(self, params, given, mask, ref, given_t):
        """Step-invariant features of one window: the MTD's condition cascades of ``given``
        ``[B, 3, h, w, c]`` (anchor clean, previous noise-augmented, zeros where not given) and
        ``mask`` ``[B, 3]``; ``ref`` ``[B, h, w, c]``, the previous frame's clean latent the mask
        blends in; ``given_t`` ``[B, 3]``, the timesteps the given frames carry (0 for the
        anchor, the augmentation's for the previous frame)."""
        return {"mtd": self.models.condition(params, given, mask), "mask": mask,
                "ref": ref, "given_t": jnp.asarray(given_t, jnp.int32)}

    def unet(self, params, x, t, states, features, level=None):
        """One step: the MTD on the window (given frames told their own t), then the masked
        blend of the new frame's prediction towards the reference (only when the previous frame
        is given)."""
        t = jnp.broadcast_to(jnp.asarray(t, jnp.int32).reshape(x.shape[0], -1), x.shape[:2])
        mask = features["mask"]
        t = jnp.where(mask > 0, features["given_t"], t)
        out = self.models.unet(params, x, t, states, features["mtd"], level)
        new = self.blend(params, out[:, NEW], x[:, NEW], t[:, NEW], features["ref"],
                         mask[:, PREVIOUS])
        return out.at[:, NEW].set(new)

    def blend(self, params, out, x_t, t, ref, ref_on):
        """The new frame's output ``[B, h, w, c]`` with its x0 blended towards ``ref`` by the
        learned per-pixel mask (times ``ref_on``: no reference, no blend)."""
        a, s = (self.schedule.table(n)[t].reshape(-1, 1, 1, 1)
                for n in ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"))
        x0_net, _ = schedules.split_prediction(self.schedule.prediction_type, x_t, out, a, s)
        w = self.mask_weight(params, x0_net, ref, s)
        w = w * ref_on.reshape(-1, 1, 1, 1)
        return blend_prediction(self.schedule.prediction_type, out, x0_net, ref, w, a, s)

    def mask_weight(self, params, x0_net, ref, noise_level) -> Any:
        """The learned per-pixel weight of the reference, ``[B, h, w, 1]`` in [0, 1]."""
        return self.head.apply(params["mask"], x0_net, ref, noise_level.reshape(-1))

    def denoise(self, params, x, t, ids, given, mask, ref, given_t, level=None):
        """Prompts and conditions encoded and one step run (training's call)."""
        return self.unet(params, x, t, self.encode_prompts(params, ids),
                         self.condition(params, given, mask, ref, given_t), level)
