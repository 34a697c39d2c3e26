"""The guides name real code: every backticked ``module.name`` in README.md and docs/*.md whose
module is a nuwa_xl_jax module (by its last name: ``parallel``, ``segments``, ``store``, ...)
names an attribute that module has. A rename or a deletion that leaves a guide behind fails here."""
import importlib
import os
import pkgutil
import re

import nuwa_xl_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Names that are config blocks or fields as well as modules (`mtd.dtype`, `mesh.axes`), and
# file suffixes (`engine.py`): not references to a module's attribute.
NOT_MODULES = {"config", "configuration", "model", "mtd", "vae", "text", "mesh", "family",
               "data", "train", "generate", "artv", "files", "metrics", "done"}
SUFFIXES = {"py", "json", "jsonl", "md", "npz", "png", "mp4", "txt"}


def _modules() -> dict[str, str]:
    """Last name -> dotted name, for the names only one module has."""
    seen: dict[str, list[str]] = {}
    for info in pkgutil.walk_packages(nuwa_xl_jax.__path__, "nuwa_xl_jax."):
        seen.setdefault(info.name.rsplit(".", 1)[1], []).append(info.name)
    return {last: names[0] for last, names in seen.items() if len(names) == 1
            and not last.startswith("_")}


def test_guides_name_attributes_that_exist():
    modules = _modules()
    pages = [os.path.join(ROOT, "README.md")] + [
        os.path.join(ROOT, "docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs")))
        if f.endswith(".md")]
    stale = []
    for page in pages:
        text = open(page).read()
        for module, attr in re.findall(r"`(?:[\w.]*\.)?([a-z_]\w*)\.([A-Za-z_]\w*)[(`]", text):
            if module in modules and module not in NOT_MODULES and attr not in SUFFIXES:
                if not hasattr(importlib.import_module(modules[module]), attr):
                    stale.append(f"{os.path.relpath(page, ROOT)}: {module}.{attr}")
    assert not stale, "guides name what does not exist: " + "; ".join(sorted(set(stale)))


def test_the_demos_time_is_stated_once_in_the_readme():
    """The Makefile and the config point to the README's measured table instead of stating a
    time of their own (three statements had drifted apart)."""
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    demo_comment = makefile[:makefile.index("\ndemo:")].rsplit("\n\n", 1)[-1]
    config_doc = open(os.path.join(ROOT, "configs", "synthetic.py")).read().split('"""')[1]
    for name, text in (("Makefile", demo_comment), ("configs/synthetic.py", config_doc)):
        assert not re.search(r"\d+\s*(-\s*\d+\s*)?min", text), f"{name} states the demo's time"
        assert "README" in text, f"{name} does not point to the README for the demo's time"
    assert re.search(r"\| wall time \| \d+ min", open(os.path.join(ROOT, "README.md")).read())
