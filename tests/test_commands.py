"""Every command line follows one convention (nuwa_xl_jax/cli.py): flags declared by
``define_flags(fv, argv)`` on the FlagValues it is given, never at import, so all of them import
into one process and each parses its own command line there; errors a user can fix leave through
one place (``cli.exit_with_error``)."""
import importlib
import inspect

import pytest
from absl import flags

from nuwa_xl_jax import cli

COMMANDS = ("nuwa_xl_jax.train.__main__", "nuwa_xl_jax.generate", "nuwa_xl_jax.evaluate",
            "nuwa_xl_jax.export", "nuwa_xl_jax.convert", "nuwa_xl_jax.cache_latents")


def test_all_commands_import_into_one_process_without_touching_global_flags():
    modules = [importlib.import_module(name) for name in COMMANDS]
    ours = [f"--{name} ({flags.FLAGS.find_module_defining_flag(name)})" for name in flags.FLAGS
            if (flags.FLAGS.find_module_defining_flag(name) or "").startswith("nuwa_xl_jax")]
    assert not ours, f"declared on absl's global flags at import: {ours}"
    for module in modules:
        assert callable(module.define_flags) and callable(module.run) and callable(module.main)


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_parses_its_own_flags(name):
    module = importlib.import_module(name)
    names = _flag_names(module)
    argv = [f"--{flag}={value}" for flag, value in [("config", "configs/synthetic.py:tiny"),
                                                    ("workdir", "w"), ("out", "o")]
            if flag in names]
    fv = cli.parse(module.define_flags, [*argv, "--config.data.depth=2"]
                   if "config" in names else argv, name)
    assert all(fv[flag].present for flag in ("workdir", "out") if flag in names)
    if "config" in names:  # the config's overrides are read from the argv parse() was given
        assert fv.config.data.depth == 2


def _flag_names(module) -> set[str]:
    fv = flags.FlagValues()
    module.define_flags(fv, [module.__name__])
    return set(fv)


def test_generate_and_evaluate_share_flag_names_in_one_process():
    """The two used to declare --workdir, --frames, ... on absl's global flags: importing both was
    a DuplicateFlagError."""
    generate = importlib.import_module("nuwa_xl_jax.generate")
    evaluate = importlib.import_module("nuwa_xl_jax.evaluate")
    assert {"workdir", "frames", "steps"} <= _flag_names(generate) & _flag_names(evaluate)


def test_positional_arguments_are_one_line(capsys):
    generate = importlib.import_module("nuwa_xl_jax.generate")
    with pytest.raises(SystemExit) as e:
        cli.parse(generate.define_flags, ["stray"], "generate")
    assert e.value.code == 2 and "unexpected arguments ['stray']" in capsys.readouterr().err


def test_the_orbax_exit_workaround_lives_in_cli_only():
    for name in COMMANDS:
        source = inspect.getsource(importlib.import_module(name))
        assert "os._exit" not in source, f"{name} leaves by os._exit itself; use cli.run's errors"


def test_train_and_export_share_one_definition_of_the_multi_process_flags():
    """--distributed, --coordinator_address, --num_processes and --process_id come from
    cli.define_distributed_flags in both commands, and read back the same way."""
    expected = _flag_names_of(cli.define_distributed_flags)
    for name in ("nuwa_xl_jax.train.__main__", "nuwa_xl_jax.export"):
        assert expected <= _flag_names(importlib.import_module(name)), name
    source = "".join(inspect.getsource(importlib.import_module(name))
                     for name in ("nuwa_xl_jax.train.__main__", "nuwa_xl_jax.export"))
    assert '"coordinator_address"' not in source and "define_distributed_flags" in source
    fv = cli.parse(lambda fv, argv: cli.define_distributed_flags(fv), [], "x")
    assert cli.distributed_args(fv) is None
    fv = cli.parse(lambda fv, argv: cli.define_distributed_flags(fv),
                   ["--coordinator_address=h:1", "--num_processes=2", "--process_id=1"], "x")
    assert cli.distributed_args(fv) == ("h:1", 2, 1)
    fv = cli.parse(lambda fv, argv: cli.define_distributed_flags(fv), ["--distributed"], "x")
    assert cli.distributed_args(fv) == (None, None, None)


def _flag_names_of(define) -> set[str]:
    fv = flags.FlagValues()
    define(fv)
    return set(fv)
