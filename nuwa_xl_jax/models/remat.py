"""Rematerialisation policies for the blocks of the VAE and the MTD UNet
(configuration.model.REMAT_POLICIES).

"full" recomputes the whole block in the backward pass (least memory); "dots_saveable" keeps the
outputs of matmuls without batch dimensions (the projections and MLPs, MaxText's usual choice) and
recomputes the rest, including the attention scores; "none" keeps everything (fastest, most memory).
"""
from __future__ import annotations

import flax.linen as nn
import jax


def remat_wrapper(name: str, static_argnums: tuple[int, ...] = ()):
    """``cls -> cls`` wrapping a block module class in ``nn.remat`` with the policy's saving rule.
    ``static_argnums`` (``self`` is 0) names Python arguments such as a frame count, which must
    stay concrete inside the rematerialised block."""
    if name == "none":
        return lambda cls: cls
    policy = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable if name == "dots_saveable"
              else None)
    return lambda cls: nn.remat(cls, prevent_cse=True, policy=policy, static_argnums=static_argnums)
