"""The package's import graph: no cycles, and data flows one way (no module imports an entry point).

Every ``import`` and ``from ... import`` of ``gen_bench`` in every module, at any depth (function-level
and ``TYPE_CHECKING`` imports included), read with ``ast``: nothing is imported to build the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "gen_bench"

# Entry points: the command modules, which only the ``gen-bench`` dispatcher (cli) imports.
ENTRY_MODULES = ("gen_bench.cli", "gen_bench.train", "gen_bench.eval", "gen_bench.sample",
                 "gen_bench.interpolate", "gen_bench.inpaint")
# Commands that live in a library module (argparse commands), imported by the dispatcher only.
ENTRY_FUNCTIONS = {"gen_bench.leaderboard": "leaderboard_command", "gen_bench.report": "report_command",
                   "gen_bench.assets": "assets_command"}
# The last readers of results: importing them from anything but the dispatcher (and the report, which
# lays out the leaderboard's tables) would make training or evaluation depend on result display.
LAST_READERS = {"gen_bench.leaderboard": ("gen_bench.cli", "gen_bench.report"),
                "gen_bench.report": ("gen_bench.cli",)}
def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their ``__init__``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(package: Path = PACKAGE) -> dict[str, set[tuple[str, str | None]]]:
    """Module -> the (module, imported name or ``None``) pairs of ``gen_bench`` it imports.

    ``from gen_bench.x import y`` counts as an import of the module ``gen_bench.x.y`` when that is a
    module, else of ``gen_bench.x`` (name ``y``); relative imports are resolved.
    """
    mods = modules(package)

    def known(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[tuple[str, str | None]]] = {m: set() for m in mods}
    for mod, path in mods.items():
        here = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                graph[mod] |= {(known(a.name), None) for a in node.names
                               if a.name.split(".")[0] == "gen_bench"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                if base.split(".")[0] != "gen_bench":
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    graph[mod].add((full, None) if full in mods else (known(base), alias.name))
    return graph


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected sets of more than one module, or of one that imports itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_cycles_and_imports_of_any_kind(tmp_path):
    pkg = tmp_path / "gen_bench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from gen_bench.sub.b import f\n")
    (pkg / "a.py").write_text("def g():\n    from gen_bench.sub import b\n")  # function-level
    (pkg / "sub" / "b.py").write_text("from ..c import h\ndef f():\n    pass\n")  # relative
    (pkg / "c.py").write_text("import gen_bench.a\nh = 1\n")
    graph = imports(pkg)
    assert graph["gen_bench.a"] == {("gen_bench.sub.b", None)}
    assert graph["gen_bench.sub.b"] == {("gen_bench.c", "h")}
    assert graph["gen_bench.sub"] == {("gen_bench.sub.b", "f")}
    assert graph["gen_bench.c"] == {("gen_bench.a", None)}
    edges = {m: {t for t, _ in targets} for m, targets in graph.items()}
    assert cycles(edges) == [{"gen_bench.a", "gen_bench.sub.b", "gen_bench.c"}]
    assert cycles({"x": {"x"}, "y": set()}) == [{"x"}]


def test_the_package_has_no_import_cycle():
    edges = {m: {t for t, _ in targets} for m, targets in imports().items()}
    assert [sorted(c) for c in cycles(edges)] == []


def test_no_module_imports_an_entry_point():
    found = []
    for mod, targets in imports().items():
        for target, name in targets:
            if target in ENTRY_MODULES and mod != "gen_bench.cli":
                found.append(f"{mod} imports {target}")
            if name is not None and ENTRY_FUNCTIONS.get(target) == name and mod != "gen_bench.cli":
                found.append(f"{mod} imports {target}.{name}")
            if target in LAST_READERS and mod not in (target, *LAST_READERS[target]):
                found.append(f"{mod} imports {target}")
    assert found == []
    # every entry point named here exists, so a rename cannot silently empty the check
    mods = modules()
    assert set(ENTRY_MODULES) | set(ENTRY_FUNCTIONS) | set(LAST_READERS) <= set(mods)
    for mod, func in ENTRY_FUNCTIONS.items():
        body = ast.parse(mods[mod].read_text()).body
        assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in body), (mod, func)
