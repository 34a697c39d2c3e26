"""``python -m nuwa_xl_jax.train --config=configs/X.py[:variant] --workdir=DIR [--config.a.b=v]``

Runs the config's stages in order (``config.stages``: vae, mtd_global, mtd_local1, ...) or the
ones named by ``--stages``. Each stage resumes from its checkpoints; a finished stage (its exported
EMA weights exist) is skipped, so running the same command again continues where it stopped.
Multi-host: ``jax.distributed.initialize()`` reads TPU / Slurm environments by itself; on other
clusters pass ``--coordinator_address``, ``--num_processes`` and ``--process_id``.
"""
from __future__ import annotations

from absl import app, flags, logging

from nuwa_xl_jax import cli
from nuwa_xl_jax.configuration.files import define_config_flag

define_config_flag("config", "configs/NAME.py[:variant]: a config file, or one shipped with "
                   "nuwa_xl_jax (configuration/files.py)")
flags.DEFINE_string("workdir", None, "where checkpoints, logs, samples and exports go")
flags.DEFINE_list("stages", None, "stages to run (default: config.stages)")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() from the environment")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs)")
flags.DEFINE_integer("num_processes", None, "number of processes (multi-process runs)")
flags.DEFINE_integer("process_id", None, "this process's index (multi-process runs)")
flags.DEFINE_string("compilation_cache", None, "persistent compilation cache folder, or 'off' "
                    "(default: $NUWA_XL_JAX_COMPILATION_CACHE, else ~/.cache/nuwa_xl_jax/jax)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # progress bars, not Orbax's INFO lines
    if FLAGS.config is None:
        cli.fail("--config is required, e.g. --config=configs/synthetic.py", 2)
    if not FLAGS.workdir:
        cli.fail("--workdir is required: the folder for checkpoints, logs and exported weights", 2)
    from nuwa_xl_jax import compile_cache

    try:  # before anything compiles: stages, resumes and generate reuse compiled programs
        compile_cache.configure(FLAGS.compilation_cache)
    except OSError as e:
        cli.fail(f"--compilation_cache: {e}")
    from nuwa_xl_jax import parallel

    if FLAGS.coordinator_address or FLAGS.distributed:
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
    from nuwa_xl_jax import configuration
    from nuwa_xl_jax.train import stage_runner

    try:
        config = configuration.validate(FLAGS.config)  # the one check; the library reads this
        m = config.mesh or configuration.MeshConfig()
        mesh = parallel.make_mesh(m.shape, m.axes)
        stage_runner.run(config, FLAGS.workdir, mesh, FLAGS.stages)
    except stage_runner.USER_ERRORS as e:
        cli.fail(f"{type(e).__name__}: {e}")


def parse_flags(argv):
    """absl's parser, with flag and config errors as one line (nuwa_xl_jax/cli.py)."""
    return cli.parse_or_exit(FLAGS, argv)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
