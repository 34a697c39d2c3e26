"""Config files: finding the file a ``--config`` path names, and reading it into a ConfigDict.

A config file is plain Python with ``get_config(arg)``; it imports only the library (its shared
blocks are in :mod:`nuwa_xl_jax.configuration.presets`), so it loads from any folder and no code
edits ``sys.path``. ``configs/NAME.py`` (and ``configs/storyboards/...``) also names the copy
shipped
with nuwa_xl_jax when no such file exists where the command runs: an installed package (the wheel
carries the repository's ``configs/`` as ``nuwa_xl_jax/configs/``) and a source checkout run from
another folder both find it. A file that does exist always wins, so a local copy is what runs.
"""
from __future__ import annotations

import importlib.util
import os

import ml_collections
from absl import flags
from ml_collections import config_flags

from nuwa_xl_jax.configuration.checks import ConfigError

PREFIX = "configs"
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The synthetic world's text-to-image base, shipped as package data (nuwa_xl_jax/family/base.py
# writes and checks it; configs/synthetic.py starts from it).
SHIPPED_BASE = os.path.join(_PACKAGE, "assets", "synthetic_base")
BASE_COMPONENTS = ("vae", "unet", "text")


def shipped_base(component: str) -> str:
    """The folder of ``component`` ('vae', 'unet' or 'text') of the shipped synthetic base, for
    ``model.{vae,mtd,text}.init_from`` (checked when a stage reads it, not here)."""
    if component not in BASE_COMPONENTS:
        raise ConfigError(f"unknown base component {component!r}; expected one of "
                          f"{', '.join(BASE_COMPONENTS)}")
    return os.path.join(SHIPPED_BASE, component)


def shipped_roots() -> list[str]:
    """Folders holding the shipped configs: the installed copy, then a source checkout's."""
    roots = [os.path.join(_PACKAGE, PREFIX)]
    repo = os.path.dirname(_PACKAGE)
    if os.path.isfile(os.path.join(repo, "setup.py")):  # a source checkout (editable install)
        roots.append(os.path.join(repo, PREFIX))
    return [r for r in roots if os.path.isdir(r)]


def find(path: str) -> str:
    """The absolute path of the file ``path`` names: ``path`` itself when it exists, else, for
    ``configs/REST``, the shipped ``REST``. Raises ConfigError naming where it looked."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.exists(path):
        return os.path.abspath(path)
    parts = os.path.normpath(path).split(os.sep)
    roots = shipped_roots()
    if not os.path.isabs(path) and parts[0] == PREFIX and len(parts) > 1:
        for root in roots:
            candidate = os.path.join(root, *parts[1:])
            if os.path.exists(candidate):
                return candidate
    shipped = sorted(f"{PREFIX}/{f}" for r in roots[:1] for f in os.listdir(r) if f.endswith(".py"))
    raise ConfigError(
        f"{path!r} not found in {os.getcwd()!r}"
        + (f" nor among the shipped configs ({', '.join(shipped)})" if shipped else "")
        + "; give the path of a config file, or configs/NAME.py for a shipped one"
    )


def read(spec: str) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of ``path[:arg]`` (found by :func:`find`), not yet validated."""
    path, _, arg = spec.partition(":")
    path = find(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config {path!r} is not a file; give a .py file with get_config()")
    module_spec = importlib.util.spec_from_file_location("_nuwa_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config {path!r} has no get_config(); a config file defines "
                          "get_config(arg) returning an ml_collections.ConfigDict")
    return module.get_config(arg) if arg else module.get_config()


class _FindingParser:
    """Wraps ml_collections' config-file parser: the path is found by :func:`find` first."""

    def __init__(self, inner):
        self._inner = inner

    def parse(self, spec):
        path, sep, arg = spec.partition(":")
        return self._inner.parse(find(path) + sep + arg)

    def __getattr__(self, name):  # flag_type, syntactic_help, ...: ml_collections' answers
        return getattr(self._inner, name)


def define_config_flag(name: str = "config", help_string: str = "configs/NAME.py[:variant]",
                       flag_values=None, sys_argv=None):
    """``config_flags.DEFINE_config_file`` (with ``--NAME.a.b=value`` overrides) whose path may
    name a shipped config (:func:`find`). The CLI validates the result after the overrides.
    ``sys_argv``: the command line holding those overrides (default ``sys.argv``)."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    holder = config_flags.DEFINE_config_file(name, None, help_string, flag_values=flag_values,
                                             lock_config=True, sys_argv=sys_argv)
    flag = flag_values[name]
    flag.parser = _FindingParser(flag.parser)
    return holder
