"""The package's layout as a test: the import graph between nfsd's modules, read with ``ast``.

Every ``import`` / ``from ... import`` in a module counts, at module level and inside functions
(a lazy import is still a dependency: it only hides a cycle until the function runs).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "backend" / "nfsd"
TESTS = Path(__file__).resolve().parent

# The only modules allowed directly in nfsd/ (everything else lives in a package).
TOP_LEVEL = {"__init__", "__main__", "cli", "cli_args", "limits", "errors", "settings"}


def module_name(path: Path) -> str:
    """``backend/nfsd/jobs/queue.py`` -> ``nfsd.jobs.queue``; a package's ``__init__.py`` -> the package."""
    parts = ("nfsd",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (``from ..errors import X`` in nfsd.jobs.queue -> nfsd.errors)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(known: dict[str, Path], importers: dict[str, Path] | None = None) -> list[tuple[str, str, str | None, int]]:
    """``(importer, imported module, imported name or None, line)`` for every import of an nfsd module
    in ``importers`` (default: nfsd's own modules; a test file's relative imports are not nfsd's).

    ``from pkg import name`` where ``pkg.name`` is a module counts as an import of that module."""
    found = []
    for mod, path in (importers or known).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "nfsd":
                        found.append((mod, alias.name, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = resolve(mod, is_package, node)
                if target.split(".")[0] != "nfsd":
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in known:
                        found.append((mod, sub, None, node.lineno))
                    else:
                        found.append((mod, target, alias.name, node.lineno))
    return found


def suite_files() -> dict[str, Path]:
    return {f"tests/{p.relative_to(TESTS)}": p for p in sorted(TESTS.rglob("*.py"))}


@functools.lru_cache(maxsize=None)
def defined_names(path: Path) -> set[str]:
    """The names a module binds itself at module level (defs, classes, assignments, also under
    ``if`` / ``try``), not the ones it imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def module_attributes(known: dict[str, Path], importers: dict[str, Path]) -> list[tuple[str, str, str, int]]:
    """``(importer, module, attribute, line)`` for every ``alias.attribute`` read where ``alias`` is an nfsd
    module bound by an import (``from . import dataset as ds`` ... ``ds.parse_prompt``)."""
    found = []
    for mod, path in importers.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = resolve(mod, is_package, node) if path.is_relative_to(PACKAGE) else (node.module or "")
                for alias in node.names:
                    if f"{target}.{alias.name}" in known:
                        aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in known:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and \
                    isinstance(node.value, ast.Name) and node.value.id in aliases:
                found.append((mod, aliases[node.value.id], node.attr, node.lineno))
    return found


def graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules it imports. A package's ``__init__`` is not an edge to its submodules
    (importing ``nfsd.jobs.queue`` runs ``nfsd.jobs/__init__`` first, which is part of the package)."""
    edges: dict[str, set[str]] = {m: set() for m in known}
    for importer, target, _name, _line in imports(known):
        if target in known and target != importer:
            edges[importer].add(target)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the graph, or None (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {m: WHITE for m in edges}
    for root in sorted(edges):
        if colour[root] != WHITE:
            continue
        stack = [(root, iter(sorted(edges[root])))]
        path = [root]
        colour[root] = GREY
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour[child] == GREY:
                return path[path.index(child):] + [child]
            elif colour[child] == WHITE:
                colour[child] = GREY
                stack.append((child, iter(sorted(edges[child]))))
                path.append(child)
    return None


def test_the_graph_sees_lazy_and_relative_imports():
    known = modules()
    edges = graph(known)
    assert "nfsd.errors" in edges["nfsd.jobs.job_run"]  # from ..errors import Cancelled, ...
    assert "nfsd.priors.prior" in edges["nfsd.jobs.worker"]  # inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(graph(modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_private_name_imported_from_another_module():
    known = modules()
    bad = [f"{importer}:{line} imports {name} from {target}"
           for importer, target, name, line in imports(known) + imports(known, suite_files())
           if name is not None and name.startswith("_") and not name.startswith("__") and target != importer]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_every_name_is_imported_from_the_module_that_defines_it():
    """No re-export shims: ``from nfsd.jobs.queue import make_texture_job`` (defined in jobs.job_run) hides
    where a name lives and keeps an edge the graph does not need. A package's ``__init__`` may offer
    its public names (``from nfsd.server import create_app``)."""
    known = modules()
    bad = []
    for importer, target, name, line in imports(known) + imports(known, suite_files()):
        if name is None or target not in known or known[target].name == "__init__.py" or name == "*":
            continue
        if name not in defined_names(known[target]):
            bad.append(f"{importer}:{line} imports {name} from {target}, which does not define it")
    for importer, target, name, line in module_attributes(known, dict(known, **suite_files())):
        if known[target].name != "__init__.py" and name not in defined_names(known[target]) \
                and f"{target}.{name}" not in known:
            bad.append(f"{importer}:{line} reads {name} from {target}, which does not define it")
    assert not bad, "\n".join(bad)


def test_only_the_allowlisted_modules_sit_at_the_top_of_the_package():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL, f"modules at the top of nfsd/ that belong in a package: {sorted(top - TOP_LEVEL)}"


def test_every_import_of_nfsd_names_a_module_or_a_name_that_exists():
    """A moved module leaves no import of its old path behind (a lazy one would fail only when run)."""
    known = modules()
    missing = [f"{importer}:{line} imports {target}" for importer, target, name, line in imports(known)
               if target not in known]
    assert not missing, "\n".join(missing)
