"""Config files import only the library, load from any folder, and the shipped ones are found by
``configs/NAME.py`` from anywhere, in an installed (non-editable) package too; no code edits
sys.path."""
import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from absl import flags

from nuwa_xl_jax import cli, configuration
from nuwa_xl_jax.configuration import files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))


def test_there_are_configs_and_no_configs_package():
    assert {"synthetic.py", "flintstones.py"} <= set(CONFIGS)
    assert not os.path.exists(os.path.join(ROOT, "configs", "__init__.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_files_import_only_the_library(name):
    path = os.path.join(ROOT, "configs", name)
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import"
            top = node.module.split(".")[0]
        elif isinstance(node, ast.Import):
            top = node.names[0].name.split(".")[0]
        else:
            continue
        assert top in ("nuwa_xl_jax", "ml_collections") or top in sys.stdlib_module_names, \
            f"{name} imports {top}: config files import only the library"
    doc = ast.get_docstring(tree)
    assert "python -m nuwa_xl_jax." in doc and f"--config=configs/{name}" in doc, \
        f"{name}: the docstring carries the exact command"


@pytest.mark.parametrize("spec", ["synthetic.py:tiny", "flintstones.py:128"])
def test_a_config_copied_anywhere_loads(spec, tmp_path, monkeypatch):
    name, _, arg = spec.partition(":")
    want = configuration.load(f"configs/{spec}").to_dict()
    copy = tmp_path / "elsewhere" / "mine.py"
    copy.parent.mkdir()
    shutil.copy(os.path.join(ROOT, "configs", name), copy)
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert configuration.load(f"{copy}:{arg}").to_dict() == want


def test_shipped_configs_are_found_from_another_folder_and_a_local_file_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = configuration.load("configs/synthetic.py:tiny")
    assert config.generate.storyboard == os.path.join(ROOT, "configs", "storyboards", "cartoon.txt")
    assert os.path.isfile(config.generate.storyboard)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "synthetic.py").write_text(
        "from nuwa_xl_jax import configuration\n"
        "def get_config(arg='tiny'):\n"
        "    c = configuration.load('configs/flintstones.py:128')\n"
        "    c.seed = 7\n"
        "    return c\n")
    assert configuration.load("configs/synthetic.py").seed == 7
    with pytest.raises(configuration.ConfigError, match=r"'configs/nope.py' not found.*"
                       r"configs/synthetic.py.*configs/NAME.py"):
        configuration.load("configs/nope.py")


def _define(fv, argv):
    files.define_config_flag("config", flag_values=fv, sys_argv=argv)


def test_the_config_flag_finds_shipped_configs_and_takes_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fv = cli.parse(_define, ["--config=configs/synthetic.py:tiny", "--config.seed=3"], "prog")
    assert fv.config.seed == 3 and fv.config.data.frames_per_call == 4
    with pytest.raises(SystemExit) as exit_:
        cli.parse(_define, ["--config=configs/nope.py"], "prog")
    assert exit_.value.code == 2 and "configs/nope.py' not found" in capsys.readouterr().err
    assert fv is not flags.FLAGS  # fresh flags: other tools may define --config too


def test_an_installed_wheel_finds_the_shipped_configs(tmp_path):
    """A non-editable install: build the wheel from a copy of the sources, unpack it as
    site-packages would hold it, and load ``configs/synthetic.py`` from an empty folder."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(os.path.join(ROOT, "nuwa_xl_jax"), src / "nuwa_xl_jax", ignore=ignore)
    shutil.copytree(os.path.join(ROOT, "configs"), src / "configs", ignore=ignore)
    shutil.copy(os.path.join(ROOT, "setup.py"), src)
    shipped = src / "nuwa_xl_jax" / "assets" / "synthetic_base"
    if not shipped.exists():  # a stand-in with the real one's layout: its packaging is tested
        for component in ("vae", "unet", "text"):
            (shipped / component / "params" / "d").mkdir(parents=True)
            (shipped / component / "params" / "d" / "0a1b").write_bytes(b"weights")
            (shipped / component / "model_config.json").write_text("{}")
        from nuwa_xl_jax.family import base

        (shipped / base.MANIFEST).write_text(json.dumps(
            {"format": base.FORMAT, "files": base._files(str(shipped))}))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                        "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").iterdir()
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    empty = tmp_path / "empty"
    empty.mkdir()
    code = ("import nuwa_xl_jax; from nuwa_xl_jax import configuration\n"
            "c = configuration.load('configs/synthetic.py:tiny')\n"
            "print(nuwa_xl_jax.__file__); print(c.generate.storyboard)\n"
            "configuration.load('configs/flintstones.py:256')\n"
            "from nuwa_xl_jax.configuration import files; from nuwa_xl_jax.family import base\n"
            "for c in ('vae', 'unet', 'text'): base.check(files.shipped_base(c))\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([sys.executable, "-c", code], cwd=empty, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    package, storyboard = r.stdout.split()
    assert package == str(site / "nuwa_xl_jax" / "__init__.py")
    assert storyboard == str(site / "nuwa_xl_jax" / "configs" / "storyboards" / "cartoon.txt")


def test_no_code_edits_sys_path():
    """Config files import the library, tests get their helpers from pytest's rootdir handling
    and subprocesses from PYTHONPATH: nothing needs ``sys.path`` edits."""
    needle = "sys" + ".path"
    found = []
    for top in ("nuwa_xl_jax", "configs", "benchmarks", "launch", "tests", "notebooks"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                path = os.path.join(dirpath, name)
                if not name.endswith((".py", ".sh", ".sbatch", ".ipynb")) or \
                        path == os.path.abspath(__file__):
                    continue
                for number, line in enumerate(open(path, encoding="utf-8"), start=1):
                    code = line.split("#")[0]
                    if needle in code and any(op in code for op in (".insert", ".append", "=",
                                                                    ".extend", "[")):
                        found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert not found, "sys.path edits:\n" + "\n".join(found)
