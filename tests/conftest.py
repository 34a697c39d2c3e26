"""Test setup: 8 fake CPU devices and XLA's backend optimisation level 0 (tests/cpu_flags.py, set
before JAX is imported) so sharding tests run anywhere and tiny programs compile fast, and
one persistent compilation cache per test run, shared by the xdist workers and the CLIs the tests
start: many tests compile the same tiny programs in other processes (an engine per loaded family,
the training command run several times), and a program compiled once is then read from disk."""
import os
import shutil
import tempfile

import cpu_flags  # tests/: the XLA flags every test process gets

os.environ.setdefault("XLA_FLAGS", cpu_flags.xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"  # read by JAX at import, inherited by workers and CLIs
_made_cache = None


def pytest_configure(config):
    """The controller (or a run without xdist) makes the folder before any worker starts; a folder
    the caller chose (the variable already set) is kept and never removed."""
    global _made_cache
    if not hasattr(config, "workerinput") and CACHE_ENV not in os.environ:
        _made_cache = tempfile.mkdtemp(prefix="nuwa_xl_jax_test_compile_cache_")
        os.environ[CACHE_ENV] = _made_cache
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_ENV])
    _save_arrays_whole()


def _save_arrays_whole():
    """Orbax saves each replicated array as one slice per replica (``use_replica_parallel``, its
    default off GPUs): on the 8 fake devices every checkpoint of a tiny model became thousands of
    eager slice ops, each shape compiled once, about a fifth of a test's training time. The
    in-process tests save arrays whole, as Orbax does on GPUs; the CLIs the tests start (the
    multi-process runs among them) keep Orbax's default."""
    import jax
    import orbax.checkpoint as ocp
    from absl import logging
    from orbax.checkpoint._src.metadata import array_metadata_store  # as Orbax's default has

    handler = ocp.type_handlers.ArrayHandler(array_metadata_store=array_metadata_store.Store(),
                                             use_replica_parallel=False)
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # Orbax warns of every override; this one is meant
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    logging.set_verbosity(verbosity)


# The longest modules of the default run (seconds on 2 CPU cores, `--durations`), started first:
# `--dist loadscope --no-loadscope-reorder` (the Makefile) hands each worker whole modules in
# collection order (xdist's default order, by number of tests, started the 7-test tiny-base
# module late, and it ran alone at the end while the other worker idled). Longest first, the two
# workers finish together.
LONGEST_FIRST = (
    "family/test_base.py",            # ~270: trains a tiny base, then video families from it
    "test_device_check.py",           # ~105: every part of the accelerator check, in processes
    "train/test_stages.py",           # ~160
    "train/test_multihost.py",        # ~80: 2 processes and 1, each training and generating
    "test_generate_state_cli.py",     # ~60: six generate commands
    "test_train_step_benchmark.py",
    "test_keyframe_pins.py",
    "test_edit.py",
    "test_generate_cli.py",
    "dod/test_engine.py",
    "models/test_accelerator_trace.py",
    "test_pipeline_api.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0].removeprefix("tests/")
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: every other module keeps its collection order


def pytest_unconfigure(config):
    if _made_cache:
        shutil.rmtree(_made_cache, ignore_errors=True)
