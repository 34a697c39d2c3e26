"""The package layers of nuwa_xl_jax, read from the source: every module's imports (function-local
ones too, since they hide cycles as well as top-level ones do), folded to packages.

Nodes are the subpackages of nuwa_xl_jax (``train``, ``dod``, ``family``, ...); a top-level module
(``generate.py``, ``pipeline.py``) is a node of its own. A cycle between nodes fails, and so does
any
import of ``nuwa_xl_jax.train`` from what generation uses (inference never imports training).
Modules too form no cycle, inside a package or through imports deferred into functions.
"""
from __future__ import annotations

import ast
import collections
import functools
import os

import pytest

import nuwa_xl_jax

ROOT = os.path.dirname(nuwa_xl_jax.__file__)
INFERENCE = ("dod", "family", "models", "diffusion", "metrics", "pipeline", "generate")
# The layers, top first (docs/api.md, "Package layers"): a node imports only nodes of lower layers.
# A new subpackage or top-level module goes into the table (and that page) where its imports put it.
LAYERS = (
    ("train", "generate", "export", "evaluate", "cache_latents"),  # commands, training
    ("evaluation",),        # generates through the pipeline, then scores
    ("pipeline",),
    ("metrics",),           # probes of the synthetic world, FID / FVD features and statistics
    ("dod", "convert"),
    ("data",),
    ("family",),            # a trained family: on-disk format and runtime
    ("weights", "io"),      # public weights -> parameter trees; storyboards, videos
    ("models", "diffusion"),
    ("parallel",),          # meshes and shardings, by the mesh block's rules
    ("configuration", "paths", "vocabulary", "compile_cache", "cli"),
)


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _imports(path: str, module: str) -> set[str]:
    """Absolute names of every nuwa_xl_jax module or attribute ``path`` imports, at any depth."""
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in out if n == "nuwa_xl_jax" or n.startswith("nuwa_xl_jax.")}


def _node(name: str) -> str | None:
    """The layer ``nuwa_xl_jax.a.b...`` belongs to: ``a`` (a subpackage or a top-level module)."""
    parts = name.split(".")
    if len(parts) < 2:
        return None  # ``import nuwa_xl_jax`` / ``from nuwa_xl_jax import x``: x decides
    return parts[1]


@functools.lru_cache(maxsize=1)  # one read of the source per test session
def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    """``{node: nodes it imports}`` and, per edge, the modules that make it (for the message)."""
    edges: dict[str, set[str]] = collections.defaultdict(set)
    why: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for dirpath, _, files in os.walk(ROOT):
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            module = _module_name(path)
            src = _node(module)
            if src is None:
                continue
            for name in _imports(path, module):
                dst = _node(name)
                if dst is None or dst == src:
                    continue
                if not os.path.exists(os.path.join(ROOT, dst)) and \
                        not os.path.exists(os.path.join(ROOT, dst + ".py")):
                    # ``from nuwa_xl_jax import parallel`` resolves to a module; others are names
                    continue
                edges[src].add(dst)
                why[(src, dst)].append(module)
    return edges, why


@functools.lru_cache(maxsize=1)
def module_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over every nuwa_xl_jax module, function-local imports
    included. ``from pkg import sub`` points at ``pkg.sub`` when that is a module, else at ``pkg``
    (a name its ``__init__`` defines)."""
    paths = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                paths[_module_name(os.path.join(dirpath, f))] = os.path.join(dirpath, f)
    edges = {}
    for module, path in paths.items():
        tree = ast.parse(open(path).read(), path)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name in paths)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    target = f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                    if target in paths:
                        out.add(target)
        out.discard(module)
        edges[module] = out
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a node path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_imports_are_read_at_any_depth(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\nfrom nuwa_xl_jax.dod import plan\n\ndef f():\n"
                    "    from nuwa_xl_jax.train import stages\n    from . import sibling\n")
    assert _imports(str(path), "nuwa_xl_jax.family.m") == {
        "nuwa_xl_jax.dod", "nuwa_xl_jax.dod.plan", "nuwa_xl_jax.train", "nuwa_xl_jax.train.stages",
        "nuwa_xl_jax.family", "nuwa_xl_jax.family.sibling"}


def test_the_graph_sees_the_layers():
    edges, _ = import_graph()
    # known edges: if these vanish, the parser is reading nothing, and the tests below pass
    # vacuously
    assert "family" in edges["dod"] and "pipeline" in edges["train"] and "models" in edges["family"]


def test_no_cycle_between_packages():
    edges, why = import_graph()
    cycle = find_cycle(edges)
    if cycle:
        hops = "; ".join(f"{a} -> {b} in {', '.join(sorted(set(why[(a, b)])))}"
                         for a, b in zip(cycle, cycle[1:]))
        pytest.fail(f"import cycle {' -> '.join(cycle)}: {hops}")


def test_no_cycle_between_modules():
    """Also within a package, and through imports inside functions (which only defer a cycle)."""
    edges = module_graph()
    assert "nuwa_xl_jax.data.latent_cache" in edges["nuwa_xl_jax.data.batches"]  # the parser reads
    cycle = find_cycle(edges)
    assert cycle is None, "module import cycle: " + " -> ".join(cycle)


def test_packages_import_only_lower_layers():
    edges, why = import_graph()
    layer = {node: i for i, nodes in enumerate(LAYERS) for node in nodes}
    nodes = set(edges) | {b for targets in edges.values() for b in targets}
    missing = sorted(nodes - set(layer))
    assert not missing, (
        f"{missing} are in no layer: add them to LAYERS in "
        "tests/test_import_graph.py and to docs/api.md where their imports put them"
    )
    upward = [f"{a} -> {b} in {', '.join(sorted(set(why[(a, b)])))}"
              for a in sorted(edges) for b in sorted(edges[a]) if layer[b] <= layer[a]]
    assert not upward, "imports that do not point down the layers: " + "; ".join(upward)


@pytest.mark.parametrize("node", INFERENCE)
def test_inference_never_imports_training(node):
    edges, why = import_graph()
    reach, todo = set(), [node]
    while todo:  # everything the node imports, directly or through other packages
        n = todo.pop()
        for m in edges.get(n, ()):
            if m not in reach:
                reach.add(m)
                todo.append(m)
    assert "train" not in reach, (
        f"{node} reaches nuwa_xl_jax.train: " + "; ".join(
            f"{a} -> {b} in {', '.join(sorted(set(why[(a, b)])))}" for (a, b) in why
            if a in reach | {node} and b in reach))
