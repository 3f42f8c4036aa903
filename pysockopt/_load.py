"""Import the C core, or say exactly why it is missing and what to do (one place for that).

pysockopt/__init__.py imports this module before anything else, so every way in
(``import pysockopt``, ``import pysockopt.tcpinfo``, ``python -m pysockopt``) gets the same
explanation instead of "No module named 'pysockopt._native'".
"""

from __future__ import annotations

import importlib
import importlib.metadata
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


try:  # the first import of the C core, wherever one asks
    importlib.import_module(f"{__package__}._native")
except ModuleNotFoundError as err:
    if err.name != f"{__package__}._native":
        raise
    raise ImportError(_why(), name=err.name) from None
