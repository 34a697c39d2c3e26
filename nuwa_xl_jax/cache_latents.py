"""``python -m nuwa_xl_jax.cache_latents --config=configs/NAME.py[:variant] --out=DIR``
``[--split=train] [--encoder=tklvae --vae_workdir=RUN | --encoder=pool:FACTOR] [--config.a.b=v]``

Encodes every frame of a split once into a latent cache (``data/latent_cache.py``), then training
reads latents from it with ``--config.data.latent_dir=DIR``. The training command builds its own
cache after the vae stage; this is for a cache shared between runs, or a pooled one.
"""
from __future__ import annotations

import os
from typing import Sequence

from absl import flags

from nuwa_xl_jax import cli
from nuwa_xl_jax.configuration.files import define_config_flag


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    define_config_flag("config", "configs/NAME.py[:variant]: the data block (and VAE) to encode",
                       flag_values=fv, sys_argv=argv)
    flags.DEFINE_string(
        "out", None, "where the cache goes (then set data.latent_dir)", flag_values=fv
    )
    flags.DEFINE_string("split", None, "the split to encode (default: the config's data.split)",
                        flag_values=fv)
    flags.DEFINE_string("encoder", "tklvae", "'tklvae' (a trained VAE: --vae_workdir) or "
                        "'pool:FACTOR' (average pooling)", flag_values=fv)
    flags.DEFINE_string("vae_workdir", "", "a training workdir whose vae stage is done",
                        flag_values=fv)
    flags.mark_flags_as_required(["config", "out"], flag_values=fv)


def run(FLAGS: flags.FlagValues) -> int:
    # Deferred, as in every command: a flag error answers before JAX, TFDS and the VAE load.
    from nuwa_xl_jax import configuration
    from nuwa_xl_jax.data import latent_cache
    from nuwa_xl_jax.family import store

    encoder = FLAGS.encoder
    if encoder.startswith("pool:"):
        factor = encoder.split(":", 1)[1]
        if not factor.isdigit() or int(factor) < 1:
            cli.fail(f"--encoder=pool:FACTOR needs a positive integer factor, got {encoder!r}", 2)
    elif encoder != "tklvae":
        cli.fail(f"--encoder must be 'tklvae' or 'pool:FACTOR', got {encoder!r}", 2)
    elif not FLAGS.vae_workdir:
        cli.fail(
            "--encoder=tklvae needs --vae_workdir (a training workdir whose vae stage is done)", 2
        )
    try:
        config = configuration.validate(FLAGS.config)  # the one check; the library reads this
        split = FLAGS.split or config.data.split
        if encoder.startswith("pool:"):
            latent_cache.build_pooled(config, FLAGS.out, int(factor), split)
        else:
            variables, scale = store.read_vae(FLAGS.vae_workdir, config)
            latent_cache.build(config, FLAGS.out, variables, scale, split)
    except (ValueError, FileNotFoundError, KeyError) as e:  # ConfigError, ExportError: ValueErrors
        cli.fail(f"{type(e).__name__}: {e}")
    print(f"wrote {os.path.join(FLAGS.out, split)}; set data.latent_dir={FLAGS.out}")
    return 0


def main(argv: Sequence[str]) -> int:
    """The command with ``argv`` (flags only), in-process; exits as the command does on errors."""
    return run(cli.parse(define_flags, argv, "cache_latents"))


if __name__ == "__main__":
    cli.run(define_flags, run)
