"""nanonet's import graph, read from the source with `ast` (nothing is imported).

Every `import` and `from ... import` counts, at module level or inside a function, so a
cycle hidden in a function body shows up too. Run it to print the graph between
nanonet's parts:

    python tests/import_graph.py [REPO] [--legacy]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# source folder -> the import package it installs as (pyproject.toml's package-dir)
FOLDERS = {"nanonet": "nanonet", "runtimes": "nanonet.runtimes", "calibrate": "nanonet.calibrate", "export": "nanonet.export"}

# ARCHITECTURE.md's floors, from the ground up: an import only ever goes down (or sideways).
FLOORS = {
    "nanonet": 1,  # the package itself: its version and the error type, nothing heavy
    "nanonet.runtimes": 1,
    "nanonet.calibrate": 2,
    "nanonet.extras": 3,
    "nanonet.model": 3,
    "nanonet.data": 3,
    "nanonet.train": 3,
    "nanonet.active": 3,
    "nanonet.export": 4,
    "nanonet.cli": 5,
}


def modules(repo: Path) -> dict[str, Path]:
    """Module name -> source file, for every module of the installed package."""
    found = {}
    for folder, package in FOLDERS.items():
        root = repo / folder
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if folder == "nanonet" and parts[0] in FOLDERS:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imported(tree: ast.AST, name: str, is_package: bool) -> set[tuple[str, str]]:
    """What a module's import statements ask for: (module, name) for `from module import
    name`, (module, '') for `import module`."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update((alias.name, "") for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            out.update((source, alias.name) for alias in node.names)
    return out


def _legacy(module: str) -> str:
    """An old top-level name (`export.bundle`, `nanonet.errors`) as the module it became."""
    top = module.split(".")[0]
    if top in FOLDERS and top != "nanonet":
        module = f"nanonet.{module}"
    for moved in ("errors", "fsutil"):
        if module == f"nanonet.{moved}":
            module = f"nanonet.runtimes.{moved}"
    return module


def graph(repo: Path, legacy: bool = False) -> dict[str, set[str]]:
    """Module -> the nanonet modules it imports. `from m import x` imports m.x where that is
    a module, else m (a package's __init__ runs either way, as for every import, and is not
    counted). `legacy` reads an older tree's top-level names (`import export`) as the
    subpackages they became, to draw its graph."""
    files = modules(repo)
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for source, attr in _imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py"):
            if legacy:
                source = _legacy(source)
            target = f"{source}.{attr}" if f"{source}.{attr}" in files else source
            if target in files and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def part(module: str) -> str:
    """The part of the architecture a module belongs to (a FLOORS key)."""
    if module == "nanonet.__main__":  # `python -m nanonet`: the command line's entry point
        return "nanonet.cli"
    for prefix in sorted(FLOORS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return "nanonet"


def part_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between parts (subpackages), as a reader draws it."""
    parts: dict[str, set[str]] = {}
    for a, targets in edges.items():
        parts.setdefault(part(a), set()).update(part(b) for b in targets if part(b) != part(a))
    return parts


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--legacy"]
    repo = Path(args[0] if args else Path(__file__).resolve().parents[1])
    edges = graph(repo, legacy="--legacy" in sys.argv)
    for a, targets in sorted(part_graph(edges).items(), key=lambda kv: FLOORS.get(kv[0], 0)):
        print(f"{a} -> {', '.join(sorted(targets)) or '(nothing)'}")
    for component in cycles(edges):
        print("cycle:", " <-> ".join(component))
