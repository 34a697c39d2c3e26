"""What `make demo` and `make test` install: the demo only the library, the tests the parity
extras."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARITY_ONLY = ("torch", "diffusers")


def _setup_lists() -> dict:
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def _recipe(makefile: str, target: str) -> tuple[list[str], list[str]]:
    """(prerequisites, recipe lines) of ``target``."""
    match = re.search(rf"^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n)*)", makefile, re.M)
    assert match, f"no Makefile target {target}"
    return match.group(1).split(), [line.strip() for line in match.group(2).splitlines()]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


def test_the_library_does_not_require_the_parity_extras():
    lists = _setup_lists()
    names = {_name(r) for r in lists["INSTALL_REQUIRES"]}
    assert not names & set(PARITY_ONLY), names & set(PARITY_ONLY)
    assert {_name(r) for r in lists["EXTRAS"]["interop"]} >= set(PARITY_ONLY)


def test_make_demo_installs_only_the_library_and_make_test_the_extras():
    makefile = open(os.path.join(ROOT, "Makefile")).read().replace("$(VENV)", ".venv")
    demo_deps, demo = _recipe(makefile, "demo")
    (lib,) = [d for d in demo_deps if d.startswith(".venv/.installed")]
    lib_deps, lib_recipe = _recipe(makefile, lib)
    installs = [
        line for line in lib_recipe if "pip install" in line and "--upgrade pip" not in line
    ]
    assert installs == ["$(PY) -m pip install -e ."], installs  # no [extras]
    assert not any(d.startswith(".venv/.installed") for d in lib_deps)
    test_deps, _ = _recipe(makefile, "test")
    (tests,) = [d for d in test_deps if d.startswith(".venv/.installed")]
    _, test_recipe = _recipe(makefile, tests)
    assert any(
        "pip install" in line and "interop" in line and "test" in line for line in test_recipe
    )
    assert any("nuwa_xl_jax.train" in line for line in demo)
