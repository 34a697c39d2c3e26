"""nuwa_xl_jax: NUWA-XL "diffusion over diffusion" for extremely long video, in JAX/Flax Linen."""

__version__ = "0.1.0"
