"""Code that must live in one place: one way to escape text for a terminal, one errno policy per
purpose, and no reaching into another module's private names from the namespace and diagnosis
modules.

These read the package's source (ast), so each fails the day a second copy comes back.
"""

from __future__ import annotations

import ast
import pathlib
from collections import defaultdict

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "pysockopt"


def _modules() -> list[tuple[str, ast.Module]]:
    return [(str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text(encoding="utf-8")))
            for path in sorted(PACKAGE.rglob("*.py"))]


def test_text_is_made_printable_in_one_place() -> None:
    defined = [(name, node.name) for name, tree in _modules() for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") == "printable"]
    assert defined == [("pysockopt/_format.py", "printable")]


def _errno_set(value: ast.expr | None) -> frozenset[str] | None:
    """``frozenset({errno.ENOENT, ...})`` -> its names; None for anything else."""
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("frozenset", "set") and len(value.args) == 1
            and isinstance(value.args[0], (ast.Set, ast.List, ast.Tuple))):
        return None
    names = []
    for elt in value.args[0].elts:
        if not (isinstance(elt, ast.Attribute) and isinstance(elt.value, ast.Name)
                and elt.value.id == "errno"):
            return None
        names.append(elt.attr)
    return frozenset(names)


def test_each_set_of_errnos_is_defined_once() -> None:
    where: dict[frozenset[str], list[str]] = defaultdict(list)
    for name, tree in _modules():
        for node in tree.body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            codes = _errno_set(value)
            if codes:
                where[codes].append(name)
    twice = {", ".join(sorted(codes)): names for codes, names in where.items()
             if len(names) > 1}
    assert not twice, f"the same errno set defined in several modules: {twice}"


#: The modules of the namespace work and the diagnosis they feed: none reaches into another
#: module's private names (a helper two modules need is a documented one, in one of them).
_NO_PRIVATE_IMPORTS = (
    "pysockopt/host/namespaces.py", "pysockopt/host/diagnosis.py", "pysockopt/host/rules.py",
    "pysockopt/cli/netns.py", "pysockopt/cli/sockets.py", "pysockopt/cli/diagnose.py",
    "pysockopt/host/closed.py", "pysockopt/cli/closed.py",
)


def test_namespace_and_diagnosis_modules_use_no_private_name_of_another_module() -> None:
    found = []
    for name, tree in _modules():
        if name not in _NO_PRIVATE_IMPORTS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    # A private module (``from .. import _host``) is the package's own business.
                    if private and node.module is not None:
                        found.append(f"{name}: from {'.' * node.level}{node.module} import "
                                     f"{alias.name}")
    assert not found, found
