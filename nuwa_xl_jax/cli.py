"""What the absl command-line tools share: their flags declared by one function, parsed either into
absl's global flags (``python -m ...``, with ``--help``) or into fresh ones (the same tool called
in-process, e.g. by tests, without clashing with other tools' flags of the same name), flag errors
reported as one line with exit code 2 instead of a traceback, and the errors a user can fix
reported as one line with exit code 1.

Every command follows one shape (``generate.py`` is an example)::

    def define_flags(fv, argv): ...          # flags.DEFINE_*(..., flag_values=fv)
    def run(FLAGS) -> int | object: ...      # the work; raises the errors a user can fix
    def main(argv): return run(cli.parse(define_flags, argv, "NAME"))   # in-process
    if __name__ == "__main__":
        cli.run(define_flags, run, USER_ERRORS)

so no module declares flags at import time and every command can be imported beside the others.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn, Optional, Sequence

from absl import app, flags

# ``define(flag_values, argv)`` declares a tool's flags; argv is the whole command line (the config
# flag reads its ``--config.a.b=value`` overrides from it).
Define = Callable[[flags.FlagValues, Sequence[str]], None]


def define_distributed_flags(fv: flags.FlagValues) -> None:
    """The multi-process flags of the commands every process of a run starts (``train``,
    ``export``): ``--distributed`` (``jax.distributed.initialize()`` reads TPU / Slurm
    environments by itself), or ``--coordinator_address``, ``--num_processes`` and
    ``--process_id`` on other clusters. :func:`distributed_args` reads them back."""
    flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() from the "
                      "environment", flag_values=fv)
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs)",
                        flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "number of processes (multi-process runs)",
                         flag_values=fv)
    flags.DEFINE_integer("process_id", None, "this process's index (multi-process runs)",
                         flag_values=fv)


def distributed_args(FLAGS: flags.FlagValues) -> Optional[tuple]:
    """``(coordinator_address, num_processes, process_id)`` for
    ``parallel.initialize_distributed`` when the flags of :func:`define_distributed_flags` ask for
    a multi-process run, else None (one process)."""
    if not (FLAGS.coordinator_address or FLAGS.distributed):
        return None
    return FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id


def fail(message: str, code: int = 1):
    """Exits with ``error: message`` on stderr: what a user can fix, never a traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def exit_with_error(error: BaseException) -> NoReturn:
    """``error: Type: message`` on stderr and exit 1, skipping the interpreter's teardown: a failed
    Orbax restore leaves its asyncio threads behind, and at teardown they print "Event loop is
    closed" tracebacks under the one-line error. Commands check their outputs before any work, so
    nothing is left to write. Only for the command itself (:func:`run`): in-process callers get
    the exception."""
    print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # nor the threads' last words before the exit
    os._exit(1)


def parse_or_exit(flag_values: flags.FlagValues, argv: Sequence[str]) -> list[str]:
    """absl's parse, with flag and config-override errors (an unknown ``--config.x``, a bad
    variant, a missing required flag, a positional argument) as one line."""
    try:
        rest = flag_values(list(argv))
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        text = str(e).replace("\\n", "\n").strip().strip("'\"")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        # ml_collections embeds the config file's traceback: its last line is the message
        message = lines[-1] if "Traceback" in text else " ".join(lines)
        fail(f"bad flag or config override: {message}", 2)
    if len(rest) > 1:
        fail(f"unexpected arguments {rest[1:]}; every input is a --flag", 2)
    return rest


def parse(define: Define, argv: Sequence[str], prog: str) -> flags.FlagValues:
    """``argv`` (without the program name) parsed into fresh flags declared by ``define``."""
    flag_values = flags.FlagValues()
    full = [prog, *argv]
    define(flag_values, full)
    parse_or_exit(flag_values, full)
    return flag_values


def run(define: Define, main: Callable[[flags.FlagValues], object],
        user_errors: tuple[type[BaseException], ...] = ()) -> None:
    """``app.run`` of ``main(FLAGS)`` with the flags ``define`` declares on absl's global flags;
    an int main returns is the exit code (anything else, e.g. a benchmark's results: 0). An error
    of ``user_errors`` (what a user can fix: a bad input, an existing output) is one line and
    exit code 1 (:func:`exit_with_error`)."""
    define(flags.FLAGS, sys.argv)

    def entry(argv):
        del argv
        try:
            result = main(flags.FLAGS)
        except user_errors as e:
            exit_with_error(e)
        return result if isinstance(result, int) and not isinstance(result, bool) else None

    app.run(entry, flags_parser=lambda argv: parse_or_exit(flags.FLAGS, argv))
