"""The train and generate command lines turn JAX's persistent compilation cache on by default in a
user cache folder; a flag or an environment variable moves it or turns it off. Each case runs the
CLI's main in a fresh process (the setting is process-global) with the work itself stubbed out,
printing the cache settings the work would have run with."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The stub reports jax's cache settings when the CLI hands over to the real work.
STUB = """
import json, sys, jax
report = lambda *a, **k: print("CACHE " + json.dumps([jax.config.jax_compilation_cache_dir,
                                                        jax.config.jax_enable_compilation_cache]))
if sys.argv[1] == "train":
    from nuwa_xl_jax.train import __main__ as command, stage_runner
    stage_runner.run = report
else:
    from nuwa_xl_jax import generate as command
    command.write_video = report
command.main(sys.argv[2:])
"""


def cache_settings(tmp_path, cli, *args, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("NUWA_XL_JAX_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    environ.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, HOME=str(tmp_path / "home"),
                   XDG_CACHE_HOME="", **env)
    if cli == "train":
        args = ("--config=configs/synthetic.py:tiny", f"--workdir={tmp_path / 'run'}") + args
    r = subprocess.run([sys.executable, "-c", STUB, cli, *args], cwd=ROOT, env=environ,
                       capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stdout.splitlines() if line.startswith("CACHE ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    return tuple(json.loads(lines[-1][len("CACHE "):]))


def test_train_cli_caches_by_default_and_the_flag_disables_it(tmp_path):
    default = str(tmp_path / "home" / ".cache" / "nuwa_xl_jax" / "jax")
    assert cache_settings(tmp_path, "train") == (default, True)
    assert os.path.isdir(default)
    assert cache_settings(tmp_path, "train", "--compilation_cache=off")[1] is False


def test_generate_cli_cache_moved_by_env_and_disabled_by_flag(tmp_path):
    moved = str(tmp_path / "cache")
    assert cache_settings(tmp_path, "generate", NUWA_XL_JAX_COMPILATION_CACHE=moved) == (
        moved,
        True,
    )
    assert cache_settings(tmp_path, "generate", "--compilation_cache=off",
                          NUWA_XL_JAX_COMPILATION_CACHE=moved)[1] is False  # the flag wins
