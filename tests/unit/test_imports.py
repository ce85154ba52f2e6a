"""Dependencies point one way: core types at the bottom, the command line at the top.

Every module of the package is imported, and its import lines are read (an AST walk,
``from ..x import y`` resolved against the module's own name, lazy imports inside
functions included): nothing but the command line imports ``minionize.cli``, nothing
under ``engines/`` imports ``reporters/``, and the imports run when a module loads form
no circle.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import minionize

PACKAGE = Path(minionize.__file__).parent
#: ``python -m minionize`` is a command line of its own: it may import minionize.cli.
ENTRY_POINTS = {"minionize.__main__"}


def module_names() -> list[str]:
    names = ["minionize"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="minionize."):
        names.append(info.name)
    return sorted(names)


def source_of(name: str) -> Path:
    relative = Path(*name.split(".")[1:])
    package = PACKAGE / relative / "__init__.py"
    return package if package.exists() else (PACKAGE / relative).with_suffix(".py")


def is_module(name: str) -> bool:
    return name == "minionize" or source_of(name).exists()


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, at_load_only: bool = False) -> Iterator[str]:
    """The package's modules that ``name`` imports. ``at_load_only``: only the imports
    run when the module loads (not those in functions, nor under TYPE_CHECKING)."""
    is_package = source_of(name).name == "__init__.py"
    own_package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source_of(name).read_text(), str(source_of(name)))

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not at_load_only:
                    yield from (n for n in ast.walk(node)
                                if isinstance(n, (ast.Import, ast.ImportFrom)))
            elif isinstance(node, ast.If) and at_load_only and _type_checking_only(node):
                yield from walk(node.orelse)
            else:  # class bodies, if, try, with...: what they hold runs at load
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.ExceptHandler):
                        yield from walk(child.body)
                    elif isinstance(child, ast.stmt):
                        yield from walk([child])

    for node in walk(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = own_package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names]
            # ``from . import wire`` names a module, not the package it sits in
            named_only = all(is_module(target) for target in submodules)
            targets = submodules if named_only else [module, *submodules]
        for target in targets:
            if target.split(".")[0] == "minionize" and is_module(target):
                yield target


ALL_MODULES = module_names()


def test_every_module_imports() -> None:
    assert "minionize.cli.status" in ALL_MODULES and "minionize.status.model" in ALL_MODULES
    for name in ALL_MODULES:
        if name not in ENTRY_POINTS:  # importing __main__ would run the command
            importlib.import_module(name)


def test_the_walk_sees_relative_and_lazy_imports() -> None:
    assert "minionize.status.model" in set(imports("minionize.status.tui"))
    assert "minionize.status.tui" in set(imports("minionize.cli.status"))  # in a function
    assert "minionize.status.tui" not in set(imports("minionize.cli.status", at_load_only=True))


def test_nothing_imports_the_command_line() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name in ALL_MODULES
        if not name.startswith("minionize.cli") and name not in ENTRY_POINTS
        for target in imports(name)
        if target == "minionize.cli" or target.startswith("minionize.cli.")
    )
    assert offenders == []


def test_engines_do_not_import_reporters() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name in ALL_MODULES
        if name.startswith("minionize.engines.")
        for target in imports(name)
        if target.startswith("minionize.reporters")
    )
    assert offenders == []


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (module -> modules it imports), each as a path."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return found


def test_circles_are_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circle() -> None:
    """Counting every import: those run at load, in functions and for type hints alone
    (a circle that only type hints close is still two modules that need each other)."""
    graph = {name: set(imports(name)) - {name} for name in ALL_MODULES}
    assert circles(graph) == []
