"""ART•V's masked diffusion: a per-pixel mask that blends the reference latent into the network's
prediction of the new frame, learned jointly with the denoiser.

What the ART•V abstract states (arXiv 2311.18834): the model "implicitly learns which information
can be drawn from reference images rather than network predictions". How, it does not say.
Our reading [ours]:

- the reference is the previous frame's clean latent (the frame the new one continues);
- the blend is in x0 space, ``x0 = w * ref + (1 - w) * x0_net``, per latent pixel (one weight
  shared by the channels), and turned back into the network's parameterisation (eps or v) at the
  same ``x_t``, so the loss and the samplers are unchanged;
- ``w = gate * sigmoid(logit)``: ``logit`` from a small conv head (:class:`MaskHead`) reading the
  network's x0 estimate, the reference, their difference and the noise level; ``gate`` a learned
  scalar that starts at 0, used clipped to [0, 1] with a straight-through gradient (so it cannot
  get stuck outside). At init ``w == 0`` exactly: a fresh ART•V predicts exactly what its MTD UNet
  predicts (identity at init), and the gate gets a gradient from the first step.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nuwa_xl_jax.models.layers import conv2d


class MaskHead(nn.Module):
    """``(x0_net, ref, noise_level) -> w`` in [0, 1], ``[N, h, w, 1]``; exactly 0 at init."""
    width: int = 32

    @nn.compact
    def __call__(self, x0_net, ref, noise_level):
        level = jnp.broadcast_to(noise_level.reshape(-1, 1, 1, 1), (*x0_net.shape[:3], 1))
        h = jnp.concatenate([x0_net, ref, x0_net - ref, level.astype(x0_net.dtype)], axis=-1)
        h = nn.silu(conv2d(self.width, name="conv_in")(h))
        h = nn.silu(conv2d(self.width, name="conv_mid")(h))
        logit = conv2d(1, name="conv_out")(h)
        gate = self.param("gate", nn.initializers.zeros_init(), ())
        # Clipped forward, identity backward: w stays a convex weight, the gate never stops
        # learning.
        gate = gate + jax.lax.stop_gradient(jnp.clip(gate, 0.0, 1.0) - gate)
        return gate * nn.sigmoid(logit)


def blend_prediction(prediction_type: str, out, x0_net, ref, w, sqrt_abar, sqrt_one_minus_abar):
    """The network output ``out`` (eps or v at some x_t, whose x0 estimate is ``x0_net``) after
    that x0 is blended towards ``ref`` with weight ``w``: ``x0' = x0_net + w (ref - x0_net)``.
    Both parameterisations are affine in x0 at fixed x_t (d eps / d x0 = -sqrt(abar) /
    sqrt(1 - abar), d v / d x0 = -1 / sqrt(1 - abar)), so the correction is added to ``out`` and
    ``w == 0`` returns ``out`` bit for bit."""
    if prediction_type == "epsilon":
        slope = -sqrt_abar / sqrt_one_minus_abar
    elif prediction_type == "v":
        slope = -1.0 / sqrt_one_minus_abar
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; use 'epsilon' or 'v'")
    return out + slope * w * (ref - x0_net)
