"""Code that must live in one place: one way to escape text for a terminal, one errno policy per
purpose, and no reaching into another module's private names from the namespace and diagnosis
modules.

These read the package's source (ast), so each fails the day a second copy comes back.
"""

from __future__ import annotations

import ast
import pathlib
import re
from collections import defaultdict

from pysockopt import TcpState, _platform
from pysockopt._core import lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pysockopt"


#: Where the project's own code lives (a copy of the tree without .git must do, as CI's).
_SOURCE_DIRS = ("pysockopt", "csrc", "tests", "benchmarks")


def _sources(*suffixes: str) -> list[pathlib.Path]:
    """The project's source files with these suffixes (".py", ".c", ".h")."""
    found = [ROOT / "setup.py"] if ".py" in suffixes else []
    for top in _SOURCE_DIRS:
        found += [path for path in (ROOT / top).rglob("*") if path.suffix in suffixes
                  and path.is_file() and "__pycache__" not in path.parts]
    return sorted(found)


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


def _private_imports(tree: ast.Module, local: set[str] | None = None) -> list[str]:
    """``from M import _name`` statements of tree: relative ones (inside the package) or, with
    ``local``, those from one of these modules (the tests' helper modules)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        if not (node.level or (local is not None and node.module in local)):
            continue
        for alias in node.names:
            # A private module (``from .. import _host``) is the package's own business.
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"from {'.' * node.level}{node.module} import {alias.name}")
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    # A helper two modules need is a documented public one, in one of them.
    found = {name: names for name, tree in _modules() if (names := _private_imports(tree))}
    tests = ROOT / "tests"
    helpers = {path.stem for path in tests.glob("*.py")}
    for path in sorted(tests.glob("*.py")):
        names = _private_imports(ast.parse(path.read_text(encoding="utf-8")), helpers)
        if names:
            found[str(path.relative_to(ROOT))] = names
    assert not found, found


# --- constants and platform checks, once


def test_clone_newnet_is_defined_once() -> None:
    # Python and tests take it from pysockopt._platform, which reads the C core's.
    number = r"(0x[0-9a-fA-F]+|[0-9]+)"
    defined = re.compile(rf"^\s*(#\s*define\s+\w*CLONE_NEWNET\s+{number}"
                         rf"|\w*CLONE_NEWNET\s*(:[^=]*)?=\s*{number})", re.MULTILINE)
    where = [str(path.relative_to(ROOT)) for path in _sources(".py", ".c", ".h")
             for _ in defined.finditer(path.read_text(encoding="utf-8"))]
    assert where == ["csrc/netns.h"], where
    assert _platform.CLONE_NEWNET == lib.PSO_CLONE_NEWNET == 0x40000000


def test_tcp_states_come_from_one_c_header() -> None:
    for state in TcpState:
        assert getattr(lib, f"PSO_TCP_{state.name}") == state.value, state
    defined = re.compile(r"^#\s*define\s+\w*(ESTABLISHED|TIME_WAIT|SYN_RECV|LISTEN)\s+\d",
                         re.MULTILINE)
    where = sorted({str(path.relative_to(ROOT)) for path in _sources(".c", ".h")
                    if defined.search(path.read_text(encoding="utf-8"))})
    assert where == ["csrc/tcpstate.h"], where


def _platform_checks(tree: ast.Module) -> list[int]:
    """Lines that test ``sys.platform`` (a comparison or a method call on it)."""
    lines = []
    for node in ast.walk(tree):
        operand: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            operand = node.func.value
        elif isinstance(node, ast.Compare):
            operand = node.left
        if (isinstance(operand, ast.Attribute) and operand.attr == "platform"
                and isinstance(operand.value, ast.Name) and operand.value.id == "sys"):
            lines.append(operand.lineno)
    return lines


def test_only_the_platform_module_asks_which_platform_this_is() -> None:
    found = {name: lines for name, tree in _modules()
             if name != "pysockopt/_platform.py" and (lines := _platform_checks(tree))}
    assert not found, f"ask pysockopt._platform instead: {found}"


def _imports(tree: ast.Module, package: str) -> set[str]:
    """The absolute names of the modules ``tree`` imports (``package``: where it lives)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_only_the_core_module_imports_the_native_module() -> None:
    importers = []
    for path in _sources(".py"):
        rel = path.relative_to(ROOT)
        package = ".".join(rel.parent.parts) if rel.parts[0] == "pysockopt" else ""
        if "pysockopt._native" in _imports(ast.parse(path.read_text(encoding="utf-8")),
                                           package):
            importers.append(str(rel))
    # _load.py finds the extension by name (importlib) before anything imports it.
    assert importers == ["pysockopt/_core.py"], importers
