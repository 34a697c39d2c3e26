"""The ART•V stage's loss (stage ``mtd_artv``, built by stages.artv_stage): one new frame from
[anchor, previous, new] windows.

Examples come from the data pipeline's ``artv`` mode (data/sampling.artv_indices): the anchor is
the first frame of a window as long as the family's DoD window, the new frame a uniformly drawn
later one, the previous frame its predecessor, so anchors lie as far back as in the longest video
the family generates. The loss is MTD's (eps or v MSE on the new frame, Min-SNR weighted as the
config says) on the *masked-diffusion* output (family/artv.py): the mask head learns jointly,
through the same loss, where to take the reference instead of the prediction. [ours, all of it:
the ART•V abstract names the ingredients, not their settings.]

- Noise augmentation: the previous frame's latent is noised to ``t_aug`` drawn uniformly from
  0..``artv.noise_aug_max_t`` and the model is told ``t_aug`` for it; the anchor stays clean (t =
  0).
  The mask blends in the *clean* previous latent (at generation: the generated one).
- A share ``artv.first_share`` of examples has nothing given and the loss on all three frames:
  the first call of a video, which draws the anchor from text alone.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.diffusion import schedules
from nuwa_xl_jax.family.artv import PREVIOUS, WINDOW, ARTVModels
from nuwa_xl_jax.train import prompt_table


def artv_loss(artv: ARTVModels, params, batch, key, prompt_dropout: float,
              min_snr_gamma: float = 0.0, table_states=None, null_row: int | None = None):
    """Loss and metrics of one batch of ``[anchor, previous, new]`` latent windows;
    ``table_states``: a frozen text encoder's prompt states (train/prompt_table.py)."""
    if "latents" not in batch:
        raise ValueError("the ART•V stage trains on cached latents (data.latent_dir): batches "
                         "have 'latents', not 'frames' (see data/latent_cache.py)")
    s = artv.settings
    k_t, k_noise, k_aug_t, k_aug, k_first, k_drop = jax.random.split(key, 6)
    z0 = batch["latents"]
    B, F = z0.shape[:2]
    if F != WINDOW:
        raise ValueError(f"ART•V windows have {WINDOW} frames [anchor, previous, new], got {F} "
                         "(data.mode must be 'artv')")
    first = jax.random.bernoulli(k_first, s.first_share, (B,))
    mask = jnp.where(first[:, None], 0.0, batch["mask"].astype(jnp.float32))  # [B, 3]
    m = mask[:, :, None, None, None]
    sched = artv.schedule
    t = jax.random.randint(k_t, (B,), 0, sched.num_train_timesteps)
    noise = jax.random.normal(k_noise, z0.shape)
    x_t = schedules.q_sample(sched, z0, t, noise)
    t_aug = jax.random.randint(k_aug_t, (B,), 0, s.noise_aug_max_t + 1)
    prev_aug = schedules.q_sample(sched, z0[:, PREVIOUS], t_aug,
                                  jax.random.normal(k_aug, z0[:, PREVIOUS].shape))
    given = z0.at[:, PREVIOUS].set(prev_aug) * m
    x_in = given + (1 - m) * x_t
    given_t = jnp.zeros((B, F), jnp.int32).at[:, PREVIOUS].set(t_aug)
    drop = jax.random.bernoulli(k_drop, prompt_dropout, (B, 1, 1))
    states = prompt_table.batch_states(artv, params, batch, drop, table_states, null_row)
    level = jnp.zeros((B,), jnp.int32) if artv.config.model.mtd.num_levels else None
    pred = artv.unet(params, x_in, t, states,
                     artv.condition(params, given, mask, z0[:, PREVIOUS], given_t), level)
    target = schedules.training_target(sched, z0, noise, t)
    sq = jnp.square(pred.astype(jnp.float32) - target)
    norm = jnp.maximum(jnp.sum(1 - m), 1.0) * np.prod(z0.shape[2:])
    snr_w = schedules.min_snr_weight(sched, t, min_snr_gamma)[:, None, None, None, None]
    loss = jnp.sum(snr_w * (1 - m) * sq) / norm
    return loss, {"mse": jnp.sum((1 - m) * sq) / norm}
