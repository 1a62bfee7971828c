"""The layout of srdeploy's sources (issue 11, Verification): no import circles among its modules,
and no module over MAX_LINES lines unless it says why.

Circles: every import of every module of the project's packages counts, also one inside a function
(it runs later, but the two modules still cannot be understood, tested or moved apart), except those
under ``if TYPE_CHECKING:`` (never run). ``import a.b.c`` and ``from a.b import c`` depend on the most
specific project module they name (a.b.c), not on the packages above it: importing a submodule from
its own package's ``__init__`` is how packages are built, not a circle.

Size: a Python module, or a C++/CUDA source under plugins/, longer than MAX_LINES lines needs a
paragraph starting ``Long module:`` in its docstring (C++: its leading comment) that says why it
stays whole. Both checkers are tested on a planted package first.
"""
from __future__ import annotations

import ast
import functools
import re
from collections import deque
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "plugins", "export", "runtime", "benchmarks")
MAX_LINES = 400
LONG = "Long module:"
CPP_SUFFIXES = (".h", ".hpp", ".cuh", ".cu", ".cpp", ".cc")


# ----------------------------------------------------------------------------- import circles

def project_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _import_statements(body: list[ast.stmt]):
    """Every import statement in ``body`` and the blocks nested in it (functions, classes, if, try,
    with, loops), except under ``if TYPE_CHECKING:``; expressions hold no imports, so they are skipped."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _import_statements(node.orelse)
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _import_statements(getattr(node, field, None) or [])
        for block in getattr(node, "handlers", None) or getattr(node, "cases", None) or []:
            yield from _import_statements(block.body)


def _most_specific(name: str, known) -> str | None:
    """The longest project module that ``name`` (a.b.c) is or lies in, or None (not ours)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def imports_of(name: str, path: Path, known) -> set[str]:
    """The project modules that module ``name`` (file ``path``) imports, anywhere in its code."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_statements(tree.body):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:  # from pkg import sub: the submodule when there is one, else pkg (sub is an attribute of it)
            module = node.module or ""
            if node.level:  # relative: level 1 is this package, each more level one package up
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            names = [f"{module}.{alias.name}" for alias in node.names]
        for imported in names:
            target = _most_specific(imported, known)
            if target is not None and target != name:
                found.add(target)
    return found


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    known = project_modules(root, packages)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative) with more than one module."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        result.append(sorted(component))
    return sorted(result)


def _shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """start -> ... -> start, the fewest steps, through modules of ``within`` only."""
    came_from = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & within):
            if child == start:
                path = []
                while node is not None:
                    path.append(node)
                    node = came_from[node]
                return path[::-1] + [start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One line ``a -> b -> a`` for each group of modules that import each other: a shortest
    cycle through its first module, then the group's other modules when it has more."""
    lines = []
    for component in _components(graph):
        cycle = _shortest_cycle(graph, component[0], set(component))
        others = [m for m in component if m not in cycle]
        lines.append(" -> ".join(cycle) + (f"  (in the same circle: {', '.join(others)})" if others else ""))
    return lines


# ----------------------------------------------------------------------------- module size

def _leading_comment(text: str) -> str:
    """The comment block that opens a C++/CUDA file, without its comment markers."""
    lines = []
    in_block = False
    for line in text.splitlines():
        stripped = line.strip()
        if in_block:
            in_block = "*/" not in stripped
            lines.append(stripped.replace("*/", "").lstrip("*").strip())
        elif stripped.startswith("//"):
            lines.append(stripped.lstrip("/").strip())
        elif stripped.startswith("/*"):
            in_block = "*/" not in stripped
            lines.append(stripped[2:].replace("*/", "").lstrip("*").strip())
        elif stripped:  # the first line of code ends the comment
            break
        else:
            lines.append("")
    return "\n".join(lines)


def says_why_long(path: Path) -> bool:
    """Whether the docstring (Python) or leading comment (C++/CUDA) has a ``Long module:`` paragraph."""
    text = path.read_text(errors="replace")
    if path.suffix == ".py":
        doc = ast.get_docstring(ast.parse(text, str(path))) or ""
    else:
        doc = _leading_comment(text)
    return any(paragraph.strip().startswith(LONG) for paragraph in re.split(r"\n\s*\n", doc))


def source_files(root: Path, packages=PACKAGES) -> list[Path]:
    files = [p for package in packages for p in (root / package).rglob("*.py")]
    files += [p for p in (root / "plugins").rglob("*") if p.suffix in CPP_SUFFIXES]
    return sorted(p for p in files if "build" not in p.relative_to(root).parts[:2])  # not CMake's output


def long_modules(root: Path, packages=PACKAGES, limit: int = MAX_LINES) -> list[str]:
    """``path: N lines`` for each source over ``limit`` lines without a ``Long module:`` paragraph."""
    found = []
    for path in source_files(root, packages):
        n = len(path.read_text(errors="replace").splitlines())
        if n > limit and not says_why_long(path):
            found.append(f"{path.relative_to(root)}: {n} lines")
    return found


# ----------------------------------------------------------------------------- the checkers, planted

def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cycle_checker_finds_planted_circles(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "from . import a\n",  # a package importing its submodule: no circle
        "pkg/a.py": "import os\nfrom . import b\n",
        "pkg/b.py": "def f():\n    from pkg.a import g  # inside a function: still counts\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..sub import d\nimport pkg.sub.d as dd\n",
        "pkg/sub/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import c\n",
        "pkg/sub/e.py": "from .. import b\n",
        "other/__init__.py": "",
        "other/x.py": "from pkg.sub.e import y\nfrom . import y\n",
        "other/y.py": "from other import x\nimport pkg.a\n",
    })
    graph = import_graph(root, ("pkg", "other"))
    assert graph["pkg"] == {"pkg.a"}
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.sub.c"] == {"pkg.sub.d"}  # relative and absolute forms resolve alike
    assert graph["pkg.sub.d"] == set()  # TYPE_CHECKING imports never run
    assert graph["pkg.sub.e"] == {"pkg.b"}  # ``from .. import b``: the module pkg.b
    assert graph["other.x"] == {"pkg.sub.e", "other.y"}  # ``from mod import name``: the module
    assert import_cycles(graph) == ["other.x -> other.y -> other.x", "pkg.a -> pkg.b -> pkg.a"]

    _write(root, {"pkg/b.py": "X = 1\n", "other/y.py": "import pkg.a\n"})  # both circles broken
    assert import_cycles(import_graph(root, ("pkg", "other"))) == []


def test_cycle_checker_names_a_longer_circle(tmp_path):
    root = _write(tmp_path, {"p/__init__.py": "", "p/a.py": "import p.b\n", "p/b.py": "import p.c\n",
                             "p/c.py": "def f():\n    import p.a\n", "p/d.py": "import p.a\n"})
    assert import_cycles(import_graph(root, ("p",))) == ["p.a -> p.b -> p.c -> p.a"]
    _write(root, {"p/b.py": "import p.c\nimport p.a\n"})  # a shorter circle inside the group: named, c listed
    assert import_cycles(import_graph(root, ("p",))) == ["p.a -> p.b -> p.a  (in the same circle: p.c)"]


def test_size_checker_finds_planted_long_modules(tmp_path):
    body = "x = 1\n" * MAX_LINES
    cpp_body = "int x;\n" * MAX_LINES
    root = _write(tmp_path, {
        "models/__init__.py": "",
        "models/short.py": '"""Short."""\n' + "x = 1\n" * (MAX_LINES - 1),  # exactly MAX_LINES: fine
        "models/long.py": '"""A module.\n\nIt is long."""\n' + body,
        "models/long_ok.py": '"""A module.\n\nLong module: one state machine that reads best whole."""\n' + body,
        "plugins/__init__.py": "",
        "plugins/op/kernel.cu": "// A kernel.\n" + cpp_body,
        "plugins/op/kernel_ok.cu": "// A kernel.\n//\n// Long module: the variants share one template.\n" + cpp_body,
        "plugins/op/block_ok.cpp": "/* A plugin.\n *\n * Long module: the IPluginV3 interface is one class.\n */\n"
                                   + cpp_body,
        "plugins/op/late.h": "#pragma once\n// Long module: a comment after code does not count.\n" + cpp_body,
    })
    assert long_modules(root, ("models", "plugins")) == [
        f"models/long.py: {MAX_LINES + 3} lines",
        f"plugins/op/kernel.cu: {MAX_LINES + 1} lines",
        f"plugins/op/late.h: {MAX_LINES + 2} lines",
    ]


# ----------------------------------------------------------------------------- the project itself

@functools.cache
def _project_graph() -> dict[str, set[str]]:
    return import_graph(REPO)


def test_no_import_circles():
    cycles = import_cycles(_project_graph())
    assert not cycles, "modules that import each other (break each circle):\n" + "\n".join(cycles)


def test_no_long_modules_without_a_reason():
    long = long_modules(REPO)
    assert not long, (f"modules over {MAX_LINES} lines: split them, or say why one stays whole in a "
                      f"paragraph of its docstring starting {LONG!r}:\n" + "\n".join(long))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_scanned(package):
    """The scans see the real tree: each package has modules, and imports are found in it."""
    graph = _project_graph()
    names = [n for n in graph if n == package or n.startswith(package + ".")]
    assert len(names) >= 2 and any(graph[n] for n in names)
