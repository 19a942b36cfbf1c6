"""The layout of the package keeps its layers: every import points down, the domain is
pure, no import cycle, no module over 400 lines.

Read from the source with ast (nothing is imported), imports inside functions and under
TYPE_CHECKING included: a lazy import upwards is still a dependency upwards.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "lighthousefs"

# Lower imports from higher only. Leaves (0) import nothing of ours; modules of one rank
# may import each other (the cycle test keeps that sane). The package itself (its
# __init__, the public surface) re-exports from anything and is imported by nothing.
RANK = {
    "errors": 0, "metrics": 0, "mounttable": 0, "_version": 0,
    "domain": 1, "store": 2, "engine": 3, "files": 4, "views": 5, "fs": 6,
    "daemon": 7, "cli": 7, "api": 7, "api_files": 7, "memory_tool": 7,
    "": 8,
}

# What the domain may import beyond itself and errors: pure computation only. Not os,
# time, socket, sqlite3, redis, trio, pyfuse3 (I/O, the clock, the event loop). logging
# is allowed: the domain names the rule it refuses by, and the caller's handlers decide
# where that goes.
DOMAIN_MAY_IMPORT = {
    "__future__", "typing", "dataclasses", "enum", "abc", "collections", "functools",
    "itertools", "operator", "re", "json", "codecs", "hashlib", "errno", "stat", "math",
    "bisect", "struct", "string", "unicodedata", "datetime", "logging", "msgpack",
    "posixpath",   # path arithmetic on strings (visibility.py), no file system
}
CLOCK_CALLS = {"now", "utcnow", "today"}   # datetime's clock (the time module is not allowed at all)

MAX_LINES = 400
# Today's offenders: this list only shrinks. A module split below MAX_LINES leaves it.
TOO_LONG_TODAY: set[str] = set()


def modules() -> dict[str, pathlib.Path]:
    """{dotted name relative to the package ("" for __init__): file}."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _without_typing_blocks(tree: ast.AST) -> ast.AST:
    """The module without its `if TYPE_CHECKING:` blocks (imports for annotations only)."""
    for node in ast.walk(tree):
        for field in ("body", "orelse"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                setattr(node, field, [n for n in block if not (
                    isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))])
    return tree


def imports_of(name: str, path: pathlib.Path, known: set[str],
               runtime_only: bool = False) -> tuple[set[str], set[str]]:
    """(our modules that `name` imports, other top-level modules it imports); with
    `runtime_only`, not those imported for annotations only (under TYPE_CHECKING)."""
    is_package = path.name == "__init__.py"
    ours, others = set(), set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(_without_typing_blocks(tree) if runtime_only else tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "lighthousefs" or alias.name.startswith("lighthousefs."):
                    ours.add(alias.name.removeprefix("lighthousefs").lstrip("."))
                else:
                    others.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module == "lighthousefs" or node.module.startswith("lighthousefs."):
                    base = node.module.removeprefix("lighthousefs").lstrip(".")
                else:
                    others.add(node.module.split(".")[0])
                    continue
            else:
                package = name.split(".") if name else []
                if not is_package:
                    package = package[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            for alias in node.names:
                # `from . import errors` imports a module; `from .. import __version__` a name.
                sub = f"{base}.{alias.name}" if base else alias.name
                ours.add(sub if sub in known else base)
    ours.discard(name)
    return ours, others


@pytest.fixture(scope="module")
def graph() -> dict[str, tuple[set[str], set[str]]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def rank(name: str) -> int:
    return RANK[name.split(".")[0]]


def test_every_module_has_a_rank(graph):
    assert [m for m in graph if m.split(".")[0] not in RANK] == []


def test_imports_point_down(graph):
    wrong = [f"{m} (rank {rank(m)}) imports {t} (rank {rank(t)})"
             for m, (ours, _) in graph.items() for t in sorted(ours)
             if not (rank(t) < rank(m) or (rank(t) == rank(m) and rank(m) not in (0, 8)))]
    assert wrong == []


def test_the_domain_imports_nothing_of_ours_but_errors_and_nothing_impure(graph):
    wrong = []
    for m, (ours, others) in graph.items():
        if m.split(".")[0] != "domain":
            continue
        wrong += [f"{m} imports {t}" for t in sorted(ours) if t != "errors" and not t.startswith("domain")]
        wrong += [f"{m} imports {t}" for t in sorted(others - DOMAIN_MAY_IMPORT)]
        for node in ast.walk(ast.parse(modules()[m].read_text())):
            if isinstance(node, ast.Attribute) and node.attr in CLOCK_CALLS:
                wrong.append(f"{m}:{node.lineno} reads the clock (.{node.attr})")
    assert wrong == []


def test_no_import_cycles():
    """At run time: a module may name a sibling's type in annotations (under
    TYPE_CHECKING) that imports it, as domain/rules.py names the Tree it is handed."""
    found = modules()
    graph = {name: imports_of(name, path, set(found), runtime_only=True) for name, path in found.items()}
    cycles, done = [], set()

    def visit(m, stack):
        if m in stack:
            cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            return
        if m in done:
            return
        for t in sorted(graph[m][0]):
            visit(t, stack + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
    assert cycles == []


def test_no_module_over_400_lines():
    lengths = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in modules().values()}
    too_long = {name for name, n in lengths.items() if n > MAX_LINES}
    assert too_long - TOO_LONG_TODAY == set(), {n: lengths[n] for n in too_long - TOO_LONG_TODAY}
    # Split below the limit: take it off TOO_LONG_TODAY, so it stays there.
    assert TOO_LONG_TODAY - too_long == set()


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checker itself: a relative import upwards and a name imported from the package
    root are both seen."""
    src = tmp_path / "lighthousefs" / "domain"
    src.mkdir(parents=True)
    (src / "x.py").write_text("import os\nfrom ..fs import operations\nfrom .. import __version__\n"
                              "from . import tree\nfrom ..errors import Refused\n")
    known = {"", "domain", "domain.x", "domain.tree", "fs", "fs.operations", "errors"}
    assert imports_of("domain.x", src / "x.py", known) == (
        {"fs.operations", "", "domain.tree", "errors"}, {"os"})
