"""The package's shape is what docs/map.md says: a few modules at the top, one folder
per role, no module or class too long to read, and no module reaching into another
package's private module."""

from __future__ import annotations

import ast
from pathlib import Path

import minionize

PACKAGE = Path(minionize.__file__).parent
MAX_TOP_MODULES = 12
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 200


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_at_most_twelve_modules_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in sources()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_class_is_too_long() -> None:
    long = {}
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = size
    assert long == {}


def _package_of(path: Path) -> tuple[str, ...]:
    return path.relative_to(PACKAGE).parent.parts


def test_no_package_imports_another_packages_private_module() -> None:
    """``_name`` modules are their folder's own: ``cli/_options.py`` is for ``cli/``
    (``_version`` excepted: the version is everyone's)."""
    offenders = []
    for path in sources():
        own = ("minionize", *_package_of(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = list(own[: len(own) - (node.level - 1)])
                module = base + (node.module.split(".") if node.module else [])
            else:
                module = (node.module or "").split(".")
            if module[0] != "minionize":
                continue
            for alias in node.names:
                for parts in (module, [*module, alias.name]):
                    private = [i for i, part in enumerate(parts) if part.startswith("_")
                               and not part.startswith("__") and part != "_version"]
                    if private and tuple(parts[: private[0]]) != own:
                        offenders.append(f"{path.relative_to(PACKAGE)}: {'.'.join(parts)}")
    assert sorted(set(offenders)) == []
