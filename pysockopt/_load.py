"""Import the C core, or say exactly why it is missing and what to do (one place for that).

pysockopt/__init__.py imports this module before anything else, so every way in
(``import pysockopt``, ``import pysockopt.tcpinfo``, ``python -m pysockopt``) gets the same
explanation instead of "No module named 'pysockopt._native'". The C core must be this folder's
own: a source folder without it is never completed with another copy's (an editable install
of another checkout answers for any submodule the folder lacks), which would run this
package's Python code on a binary built from other sources.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pathlib

__all__: list[str] = []

_HERE = pathlib.Path(__file__).resolve().parent


def _installed_elsewhere() -> pathlib.Path | None:
    """Where an installed pysockopt lives, if it is not this folder."""
    try:
        found = pathlib.Path(str(importlib.metadata.distribution("pysockopt")
                                 .locate_file("pysockopt"))).resolve()
    except (importlib.metadata.PackageNotFoundError, OSError):
        return None
    return None if found == _HERE or not found.is_dir() else found


def _why() -> str:
    root = _HERE.parent
    if (root / "csrc").is_dir() or (root / "setup.py").is_file():
        other = _installed_elsewhere()
        shadow = (f" and hides the pysockopt installed in {other.parent}"
                  if other is not None else " and shadows any installed pysockopt")
        return (f"pysockopt's C extension (pysockopt._native) is not built in {_HERE}. "
                f"Python imported that source folder, not an installed package: run from "
                f"{root}, the folder comes first on sys.path{shadow}. Build the extension "
                f"in place with `pip install -e .` in {root}, or run Python from another "
                "folder to use the installed package.")
    return (f"pysockopt's C extension (pysockopt._native) is missing from {_HERE}: the "
            "package was not built or installed completely. Reinstall it "
            "(`pip install --force-reinstall pysockopt`; building from source needs a C "
            "compiler and cffi).")


def _elsewhere(found: pathlib.Path) -> str:
    """Say that the C core Python found is another copy's, not this folder's, and what to do."""
    root = _HERE.parent
    if (root / "csrc").is_dir() or (root / "setup.py").is_file():
        todo = (f"Build it here with `python setup.py build_ext --inplace` (or "
                f"`pip install -e .`) in {root}, or run Python from another folder to use the "
                f"pysockopt in {found.parent}.")
    else:
        todo = ("Reinstall this package (`pip install --force-reinstall pysockopt`), or remove "
                "the path or editable install that points at the other copy.")
    return (f"pysockopt's C extension (pysockopt._native) is not built in {_HERE}: Python "
            f"found {found} instead, the extension of another copy of pysockopt (an editable "
            "install or a path entry elsewhere), which need not match this package's code and "
            f"is not loaded. {todo}")


def _find() -> None:
    """Import the C core of this folder, never another copy's (see ``_elsewhere``)."""
    name = f"{__package__}._native"
    # Looked up before it is loaded: an editable install of another checkout answers for any
    # submodule this folder lacks, and its binary must not even be loaded (it need not match).
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ImportError(_why(), name=name)
    origin = spec.origin
    if origin is not None and pathlib.Path(origin).resolve().parent != _HERE:
        raise ImportError(_elsewhere(pathlib.Path(origin).resolve()), name=name,
                          path=origin)
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:
            raise
        raise ImportError(_why(), name=err.name) from None


_find()  # the first import of the C core, wherever one asks
