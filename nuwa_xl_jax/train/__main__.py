"""``python -m nuwa_xl_jax.train --config=configs/X.py[:variant] --workdir=DIR [--config.a.b=v]``

Runs the config's stages in order (``config.stages``: vae, mtd_global, mtd_local1, ...) or the
ones named by ``--stages``. Each stage resumes from its checkpoints; a finished stage (its exported
EMA weights exist) is skipped, so running the same command again continues where it stopped.
Multi-host: ``jax.distributed.initialize()`` reads TPU / Slurm environments by itself; on other
clusters pass ``--coordinator_address``, ``--num_processes`` and ``--process_id``.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "configs/X.py[:variant]", lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, logs, samples and exports go")
flags.DEFINE_list("stages", None, "stages to run (default: config.stages)")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() from the environment")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs)")
flags.DEFINE_integer("num_processes", None, "number of processes (multi-process runs)")
flags.DEFINE_integer("process_id", None, "this process's index (multi-process runs)")
flags.DEFINE_string("compilation_cache", None, "persistent compilation cache folder, or 'off' "
                    "(default: $NUWA_XL_JAX_COMPILATION_CACHE, else ~/.cache/nuwa_xl_jax/jax)")
FLAGS = flags.FLAGS


def _fail(message: str, code: int = 1):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # progress bars, not Orbax's INFO lines
    if FLAGS.config is None:
        _fail("--config is required, e.g. --config=configs/synthetic.py", 2)
    if not FLAGS.workdir:
        _fail("--workdir is required: the folder for checkpoints, logs and exported weights", 2)
    from nuwa_xl_jax import compile_cache

    try:  # before anything compiles: stages, resumes and generate reuse compiled programs
        compile_cache.configure(FLAGS.compilation_cache)
    except OSError as e:
        _fail(f"--compilation_cache: {e}")
    from nuwa_xl_jax import parallel

    if FLAGS.coordinator_address or FLAGS.distributed:
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
    from nuwa_xl_jax import configuration
    from nuwa_xl_jax.train import pipeline

    config = FLAGS.config
    try:
        configuration.validate(config)
        mesh = parallel.make_mesh(tuple(config.mesh.shape), tuple(config.mesh.axes))
        pipeline.run(config, FLAGS.workdir, mesh, FLAGS.stages)
    except pipeline.USER_ERRORS as e:
        _fail(f"{type(e).__name__}: {e}")


def parse_flags(argv):
    """absl's parser, with config errors (an unknown ``--config.x`` key, a bad variant) reported as
    one line instead of a traceback."""
    try:
        return FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        text = str(e).replace("\\n", "\n").strip().strip("'\"")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        # ml_collections embeds the config file's traceback: its last line is the message
        message = lines[-1] if "Traceback" in text else " ".join(lines)
        print(f"error: bad flag or config override: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
