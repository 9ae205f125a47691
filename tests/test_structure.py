"""The house's import structure, read from the source with `ast` (nothing is imported):

- no module of `sec2sec` imports `monitor`, anywhere (module level, inside a function, or for type checking
  only): the model library never depends on the live edges;
- no import circle between modules of `sec2sec` and `monitor`. Every import of a project module counts,
  wherever it is written: an import inside a function (lazy, to keep start-up fast or to reach an optional
  dependency) still makes the two modules depend on each other, so moving an import into a function does not
  break a circle. Only imports under `if TYPE_CHECKING:` are left out of the circle check: they exist for
  annotations and never run.

A failure names the circle (a -> b -> a) or the offending import with its file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sec2sec", "monitor")


@dataclass(frozen=True)
class Import:
    """One import of a project module: the importing module, the imported one, where, and how."""

    source: str
    target: str
    line: int
    type_checking: bool


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages (a package is its __init__)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The project modules an import statement loads (`from pkg import mod` loads pkg.mod when it is one)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, *([base] if base else [])])
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    out = []
    for name in names:
        while name and name not in known:  # `import sec2sec.x.y` of a function or class: its module
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import of a project module in one file, marked when it sits under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, module, path.name == "__init__.py", known):
                    if target != module:
                        found.append(Import(module, target, child.lineno, type_checking))
            inner = type_checking or (isinstance(child, ast.If) and _is_type_checking(child.test))
            visit(child, inner)

    visit(tree, False)
    return found


def all_imports() -> list[Import]:
    modules = project_modules()
    return [i for module, path in modules.items() for i in imports_of(module, path, set(modules))]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), as a sorted list: the circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return groups


def _graph(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for i in imports:
        if not i.type_checking:
            edges.setdefault(i.source, set()).add(i.target)
    return edges


def test_no_import_circles() -> None:
    imports = all_imports()
    assert len({i.source for i in imports}) > 30  # the walk sees the house
    found = circles(_graph(imports))
    where = {(i.source, i.target): i.line for i in imports if not i.type_checking}
    described = [
        " <-> ".join(group)
        + ": "
        + ", ".join(f"{a} imports {b} (line {where[a, b]})" for a in group for b in group if (a, b) in where)
        for group in found
    ]
    assert not found, "import circles: " + "; ".join(described)


def test_sec2sec_never_imports_monitor() -> None:
    offending = [
        f"{i.source} imports {i.target} (line {i.line})"
        for i in all_imports()
        if i.source.split(".")[0] == "sec2sec" and i.target.split(".")[0] == "monitor"
    ]
    assert not offending, "; ".join(offending)


def test_the_check_sees_lazy_and_relative_imports_and_skips_type_checking(tmp_path: Path) -> None:
    """The walk itself: a function-level import counts, a relative one resolves, TYPE_CHECKING is marked."""
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
        "def f():\n    from pkg.b import g\n    return g\n"
    )
    (tmp_path / "b.py").write_text("from . import a\nfrom .c import thing\n")
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    a = imports_of("pkg.a", tmp_path / "a.py", known)
    b = imports_of("pkg.b", tmp_path / "b.py", known)
    assert [(i.target, i.line, i.type_checking) for i in a] == [("pkg.c", 3, True), ("pkg.b", 5, False)]
    assert [(i.target, i.line) for i in b] == [("pkg.a", 1), ("pkg.c", 2)]
    assert circles(_graph(a + b)) == [["pkg.a", "pkg.b"]]
    assert circles({"x": {"y"}, "y": {"z"}, "z": set()}) == []


def test_the_dispatcher_imports_every_command_and_only_the_commands_import_the_library_the_other_way() -> None:
    """`sec2sec.commands` imports each command module plainly (arrows the circle check sees); no module of the
    library imports a command, and `monitor` never loads the offline commands (`sec2sec-live` starts without them)."""
    modules = project_modules()
    commands = {m for m in modules if m.startswith("sec2sec.commands.")}
    assert {"sec2sec.commands.extract", "sec2sec.commands.describe", "sec2sec.commands.weights"} <= commands
    imports = all_imports()
    dispatched = {i.target for i in imports if i.source == "sec2sec.commands"}
    assert commands <= dispatched, f"not imported by the dispatcher: {sorted(commands - dispatched)}"
    offending = [
        f"{i.source} imports {i.target} (line {i.line})"
        for i in imports
        if i.target.startswith("sec2sec.commands")
        and not i.source.startswith("sec2sec.commands")
        and i.source != "sec2sec.__main__"
    ]
    assert not offending, "; ".join(offending)


def test_the_run_speaks_to_its_parts_through_types_not_probes() -> None:
    """Where a run is put together and driven (the pipeline, its assembly, the CLI, the sinks), no part is found
    by `getattr`/`hasattr`: a source's optional abilities have defaults in `monitor.sources.Source`, a sink's
    name is part of `Sink`, and a renamed attribute is an error, not a counter silently missing."""
    found = []
    for name in ("pipeline", "assembly", "cli", "sinks", "sources", "recorders", "outlets", "run_end", "fields"):
        path = ROOT / "monitor" / f"{name}.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.id}")
    assert found == []
