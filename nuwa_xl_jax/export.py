"""``python -m nuwa_xl_jax.export --workdir=DIR --out=DIR [--format=family|diffusers]``

``--format=family`` (default): one self-contained inference artifact of the family a training
workdir holds (every stage's EMA weights, the config with its schedule and sampler defaults, the
VAE's latent scale, the tokenizer), loadable by ``NuwaXLPipeline.from_pretrained(OUT)`` and
``python -m nuwa_xl_jax.generate --workdir=OUT`` on another machine and device count
(nuwa_xl_jax/family/artifact.py). Weights pass through FSDP shards on ``--mesh_shape``; on a
multi-process run every process runs this command (same flags as ``train``'s).

``--format=base``: a text-to-image base's workdir (configs/synthetic_base.py: its ``vae`` and
``mtd_image`` stages) as the three folders ``convert`` writes for Stable Diffusion (``OUT/vae``,
``OUT/unet``, ``OUT/text``) and ``OUT/manifest.json`` (config, commit, steps, training time,
checksums, and the quality ``--quality`` names: benchmarks/base_quality.py's JSON);
nuwa_xl_jax/family/base.py. Video families start from it with ``model.*.init_from``.

``--format=diffusers``: the spatial VAE and the spatial UNet of ``--stage`` as diffusers folders
(``OUT/vae``, ``OUT/unet``: config.json + diffusion_pytorch_model.safetensors), the inverse of
``python -m nuwa_xl_jax.convert`` (nuwa_xl_jax/family/diffusers.py).

The output folder must be new (or empty); it appears only when complete.
"""
from __future__ import annotations

import json
from typing import Sequence

from absl import flags, logging

from nuwa_xl_jax import cli

# What a user can fix (ExportError, WeightsError and ConfigError are ValueErrors): a workdir that
# is not a family's, an unfinished stage, an existing output.
USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    del argv
    flags.DEFINE_string("workdir", None, "a training workdir (or an artifact written by this "
                        "command; --format=diffusers also takes a convert output)", flag_values=fv)
    flags.DEFINE_string("out", None, "a new folder for the export", flag_values=fv)
    flags.DEFINE_enum("format", "family", ["family", "diffusers", "base"],
                      "family: the whole model family; diffusers: the spatial VAE and UNet; base: "
                      "a text-to-image base in convert's format, with its manifest",
                      flag_values=fv)
    flags.DEFINE_string("quality", None, "--format=base: the JSON benchmarks/base_quality.py "
                        "wrote, recorded in the manifest", flag_values=fv)
    flags.DEFINE_string("notes", None, "--format=base: how the base was trained where its config "
                        "alone does not say, recorded in the manifest", flag_values=fv)
    flags.DEFINE_string("stage", "mtd_global", "--format=diffusers: the MTD stage whose UNet to "
                        "write", flag_values=fv)
    flags.DEFINE_list("mesh_shape", ["1", "-1"], "(data, fsdp) mesh the weights pass through",
                      flag_values=fv)
    cli.define_distributed_flags(fv)
    flags.mark_flags_as_required(["workdir", "out"], flag_values=fv)


def run(FLAGS: flags.FlagValues) -> int:
    logging.set_verbosity(logging.WARNING)
    # Deferred, as in every command: a flag error answers before JAX and the writers are imported,
    # and only the asked format's writer is (base and diffusers bring the weights converters).
    from nuwa_xl_jax import parallel

    distributed = cli.distributed_args(FLAGS)
    if distributed is not None:  # before any other JAX work
        parallel.initialize_distributed(*distributed)
    from nuwa_xl_jax.family import artifact

    if FLAGS.format == "family":
        mesh = parallel.make_mesh(tuple(int(s) for s in FLAGS.mesh_shape))
        out = artifact.write_family(FLAGS.workdir, FLAGS.out, mesh)
    elif FLAGS.format == "base":
        from nuwa_xl_jax.family import base

        quality = None
        if FLAGS.quality:
            with open(FLAGS.quality) as f:
                quality = json.load(f)
        out = base.write_base(FLAGS.workdir, FLAGS.out, quality, notes=FLAGS.notes)
    else:
        from nuwa_xl_jax.family import diffusers

        out = diffusers.export_diffusers(FLAGS.workdir, FLAGS.out, FLAGS.stage)
    print(f"wrote the {FLAGS.format} export of {FLAGS.workdir} to {out}")
    return 0


def main(argv: Sequence[str]) -> int:
    """The command with ``argv`` (flags only), in-process; errors a user can fix are raised."""
    return run(cli.parse(define_flags, argv, "export"))


if __name__ == "__main__":
    cli.run(define_flags, run, USER_ERRORS)
