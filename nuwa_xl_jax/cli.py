"""What the absl command-line tools share: their flags declared by one function, parsed either into
absl's global flags (``python -m ...``, with ``--help``) or into fresh ones (the same tool called
in-process, e.g. by tests, without clashing with other tools' flags of the same name), and flag
errors reported as one line with exit code 2 instead of a traceback."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app, flags

# ``define(flag_values, argv)`` declares a tool's flags; argv is the whole command line (the config
# flag reads its ``--config.a.b=value`` overrides from it).
Define = Callable[[flags.FlagValues, Sequence[str]], None]


def fail(message: str, code: int = 1):
    """Exits with ``error: message`` on stderr: what a user can fix, never a traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def parse_or_exit(flag_values: flags.FlagValues, argv: Sequence[str]) -> list[str]:
    """absl's parse, with flag and config-override errors (an unknown ``--config.x``, a bad
    variant, a missing required flag) as one line."""
    try:
        return flag_values(list(argv))
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        text = str(e).replace("\\n", "\n").strip().strip("'\"")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        # ml_collections embeds the config file's traceback: its last line is the message
        message = lines[-1] if "Traceback" in text else " ".join(lines)
        fail(f"bad flag or config override: {message}", 2)


def parse(define: Define, argv: Sequence[str], prog: str) -> flags.FlagValues:
    """``argv`` (without the program name) parsed into fresh flags declared by ``define``."""
    flag_values = flags.FlagValues()
    full = [prog, *argv]
    define(flag_values, full)
    parse_or_exit(flag_values, full)
    return flag_values


def run(define: Define, main: Callable[[flags.FlagValues], object]) -> None:
    """``app.run`` of ``main(FLAGS)`` with the flags ``define`` declares on absl's global flags;
    an int main returns is the exit code (anything else, e.g. a benchmark's results: 0)."""
    define(flags.FLAGS, sys.argv)

    def entry(argv):
        del argv
        result = main(flags.FLAGS)
        return result if isinstance(result, int) and not isinstance(result, bool) else None

    app.run(entry, flags_parser=lambda argv: parse_or_exit(flags.FLAGS, argv))
