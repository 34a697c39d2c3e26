"""``python -m nuwa_xl_jax.train --config=configs/X.py[:variant] --workdir=DIR [--config.a.b=v]``

Runs the config's stages in order (``config.stages``: vae, mtd_global, mtd_local1, ...) or the
ones named by ``--stages``. Each stage resumes from its checkpoints; a finished stage (its exported
EMA weights exist) is skipped, so running the same command again continues where it stopped.
Multi-host: ``jax.distributed.initialize()`` reads TPU / Slurm environments by itself; on other
clusters pass ``--coordinator_address``, ``--num_processes`` and ``--process_id``.
"""
from __future__ import annotations

from typing import Sequence

from absl import flags, logging

from nuwa_xl_jax import cli
from nuwa_xl_jax.configuration.files import define_config_flag


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    define_config_flag("config", "configs/NAME.py[:variant]: a config file, or one shipped with "
                       "nuwa_xl_jax (configuration/files.py)", flag_values=fv, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "where checkpoints, logs, samples and exports go",
                        flag_values=fv)
    flags.DEFINE_list("stages", None, "stages to run (default: config.stages)", flag_values=fv)
    cli.define_distributed_flags(fv)
    flags.DEFINE_string("compilation_cache", None, "persistent compilation cache folder, or 'off' "
                        "(default: $NUWA_XL_JAX_COMPILATION_CACHE, else ~/.cache/nuwa_xl_jax/jax)",
                        flag_values=fv)


def run(FLAGS: flags.FlagValues) -> int:
    logging.set_verbosity(logging.WARNING)  # progress bars, not Orbax's INFO lines
    if FLAGS.config is None:
        cli.fail("--config is required, e.g. --config=configs/synthetic.py", 2)
    if not FLAGS.workdir:
        cli.fail("--workdir is required: the folder for checkpoints, logs and exported weights", 2)
    # Deferred: a flag error answers before JAX and the training stack are imported.
    from nuwa_xl_jax import compile_cache

    try:  # before anything compiles: stages, resumes and generate reuse compiled programs
        compile_cache.configure(FLAGS.compilation_cache)
    except OSError as e:
        cli.fail(f"--compilation_cache: {e}")
    from nuwa_xl_jax import parallel  # deferred too (JAX)

    distributed = cli.distributed_args(FLAGS)
    if distributed is not None:
        parallel.initialize_distributed(*distributed)
    # Deferred too, and after jax.distributed.initialize: the training stack (grain, TFDS, ...).
    from nuwa_xl_jax import configuration
    from nuwa_xl_jax.train import stage_runner

    try:
        config = configuration.validate(FLAGS.config)  # the one check; the library reads this
        m = config.mesh or configuration.MeshConfig()
        mesh = parallel.make_mesh(m.shape, m.axes)
        stage_runner.run(config, FLAGS.workdir, mesh, FLAGS.stages)
    except stage_runner.USER_ERRORS as e:
        cli.fail(f"{type(e).__name__}: {e}")
    return 0


def main(argv: Sequence[str]) -> int:
    """The command with ``argv`` (flags only), in-process; exits as the command does on errors."""
    return run(cli.parse(define_flags, argv, "train"))


if __name__ == "__main__":
    cli.run(define_flags, run)
