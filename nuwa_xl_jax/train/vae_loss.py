"""The T-KLVAE's training loss: LDM's ``LPIPSWithDiscriminator``, as pure functions.

NUWA-XL trains the T-KLVAE with the image VAE's own loss: L1 (+ LPIPS) reconstruction, a small KL
to N(0, I), and a PatchGAN hinge loss switched on at ``disc_start`` whose weight adapts so the
adversarial gradient at the decoder's last layer is as large as the reconstruction's.

Every frame counts as one LDM "sample": reconstruction and KL are *summed* over a frame's pixels /
latents and *averaged* over batch and frames, which keeps LDM's ``kl_weight`` = 1e-6 and its
adaptive-weight balance meaningful. (LDM's learned output log-variance is left out: it starts at 0
and LDM's SD VAE config trains it to near 0.) Every function is jit-safe; ``step`` may be traced.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from nuwa_xl_jax.models.tklvae import DiagonalGaussian
from nuwa_xl_jax.weights.lpips import load_lpips

# The decoder's last spatial layer (LDM: ``decoder.conv_out.weight``); present with or without the
# temporal layers, so the adaptive weight means the same for the image VAE and the T-KLVAE.
LAST_LAYER: tuple[str, ...] = ("decoder", "conv_out", "kernel")


def reconstruction_nll(inputs: jax.Array, recon: jax.Array, l1_weight: float = 1.0,
                       lpips_distance: Optional[jax.Array] = None,
                       lpips_weight: float = 1.0, l2_weight: float = 0.0) -> jax.Array:
    """L1 (+ L2, + LPIPS) reconstruction loss, summed over each frame's pixels, averaged over
    frames.

    ``l2_weight`` [ours; LDM uses L1 only]: L1 is median-seeking, so a few-pixel object on a
    large flat background is the minority of every patch and its cheapest reconstruction is the
    background; a squared term makes a missing object cost what its error is.

    ``inputs``/``recon``: ``[B, F, H, W, C]``; ``lpips_distance``: ``[B, F]`` or None. As in LDM the
    per-frame LPIPS distance is added to every pixel's L1 error (so it is scaled by H*W*C).
    """
    diff = inputs.astype(jnp.float32) - recon.astype(jnp.float32)
    per_pixel = l1_weight * jnp.abs(diff)
    if l2_weight:
        per_pixel = per_pixel + l2_weight * jnp.square(diff)
    per_frame = jnp.sum(per_pixel, axis=(-3, -2, -1))
    if lpips_distance is not None:
        per_frame = per_frame + lpips_weight * lpips_distance * per_pixel[0, 0].size
    return jnp.mean(per_frame)


def kl_loss(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(q(z|x) || N(0, I)) summed over each frame's latent, averaged over batch and frames."""
    return jnp.mean(DiagonalGaussian(mean, jnp.clip(logvar, -30.0, 20.0)).kl())


def hinge_discriminator_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))]): zero once real > 1 and fake < -1."""
    return 0.5 * (
        jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake))
    )


def generator_loss(logits_fake: jax.Array) -> jax.Array:
    """-E[D(x_hat)]: the decoder is pushed towards patches the discriminator calls real."""
    return -jnp.mean(logits_fake)


def discriminator_factor(step: jax.Array, disc_start: int) -> jax.Array:
    """1.0 from ``disc_start`` on, 0.0 before (LDM's ``adopt_weight``); jit-safe for a traced
    step."""
    return jnp.where(jnp.asarray(step) >= disc_start, 1.0, 0.0)


def _global_norm(tree: Any) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def adaptive_weight(nll_grads: Any, g_grads: Any, disc_weight: float = 1.0,
                    max_weight: float = 1e4, eps: float = 1e-4) -> jax.Array:
    """LDM's adaptive GAN weight: ``disc_weight * ||dNLL/dW|| / (||dG/dW|| + eps)``, clipped.

    ``W`` is the decoder's last layer; the gradients are pytrees (or arrays). The result carries
    no gradient (``stop_gradient``): it scales the generator term, it is not optimised.
    """
    ratio = _global_norm(nll_grads) / (_global_norm(g_grads) + eps)
    return disc_weight * jax.lax.stop_gradient(jnp.clip(ratio, 0.0, max_weight))


def _get(tree: Mapping, path: Sequence[str]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _replace(tree: Mapping, path: Sequence[str], value: Any) -> dict:
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _replace(tree[path[0]], path[1:], value)
    return out


def last_layer_grads(decode_fn: Callable[[Any], jax.Array], params: Mapping,
                     loss_fns: Sequence[Callable[[jax.Array], jax.Array]],
                     path: Sequence[str] = LAST_LAYER) -> list[jax.Array]:
    """Gradients of each ``loss_fn(decode_fn(params))`` w.r.t. the leaf ``params[path]``.

    One forward pass and one VJP per loss; only the last layer is differentiated, which is all the
    adaptive weight needs. ``decode_fn`` maps params to the reconstruction (e.g. a closure over the
    posterior sample); each ``loss_fn`` maps the reconstruction to a scalar (the NLL; the generator
    loss through the discriminator).
    """
    def decode_with(leaf):
        return decode_fn(_replace(params, tuple(path), leaf))

    recon, vjp = jax.vjp(decode_with, _get(params, path))
    return [vjp(jax.grad(fn)(recon))[0] for fn in loss_fns]


def autoencoder_loss(
    inputs: jax.Array,
    recon: jax.Array,
    mean: jax.Array,
    logvar: jax.Array,
    cfg: Any,
    lpips_distance: Optional[jax.Array] = None,
) -> tuple[jax.Array, dict]:
    """Reconstruction + ``cfg.kl_weight`` * KL, without the adversarial term.

    The whole loss before ``cfg.disc_start`` (or when no discriminator is trained); returns
    ``(loss, scalar metrics)`` like every training stage's loss.
    """
    nll = reconstruction_nll(inputs, recon, cfg.l1_weight, lpips_distance, cfg.lpips_weight,
                             cfg.l2_weight)
    kl = kl_loss(mean, logvar)
    total = nll + cfg.kl_weight * kl
    return total, {"nll": nll, "kl": kl}


def generator_objective(cfg: Any, inputs: jax.Array, recon: jax.Array, mean: jax.Array,
                        logvar: jax.Array, logits_fake: jax.Array, step: jax.Array,
                        d_weight: jax.Array,
                        lpips_distance: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
    """The autoencoder's total loss and its parts (a ``vae_loss`` config block gives the weights).

    ``d_weight`` is :func:`adaptive_weight` (already times ``cfg.disc_weight``); the GAN term is
    off before ``cfg.disc_start``.
    """
    nll = reconstruction_nll(inputs, recon, cfg.l1_weight, lpips_distance, cfg.lpips_weight,
                             cfg.l2_weight)
    kl = kl_loss(mean, logvar)
    g = generator_loss(logits_fake)
    factor = discriminator_factor(step, cfg.disc_start)
    total = nll + cfg.kl_weight * kl + d_weight * factor * g
    return total, {"loss": total, "nll": nll, "kl": kl, "g_loss": g, "d_weight": d_weight,
                   "disc_factor": factor}


def discriminator_objective(cfg: Any, logits_real: jax.Array, logits_fake: jax.Array,
                            step: jax.Array) -> tuple[jax.Array, dict]:
    """The discriminator's hinge loss, off before ``cfg.disc_start``."""
    d = discriminator_factor(step, cfg.disc_start) * hinge_discriminator_loss(
        logits_real, logits_fake
    )
    return d, {"d_loss": d, "logits_real": jnp.mean(logits_real),
               "logits_fake": jnp.mean(logits_fake)}


def make_lpips(cfg: Any):
    """``(LPIPS module, variables)`` from ``cfg.lpips_path``, or None when the term is disabled
    (empty path or zero weight). A path that does not exist is an error, never a download."""
    if not cfg.lpips_path or not cfg.lpips_weight:
        return None
    return load_lpips(cfg.lpips_path)
