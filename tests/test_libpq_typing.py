"""``libpq_kwargs`` type-checks in the user's own code under ``mypy --strict``.

A ``dict[str, int]`` unpacked into ``psycopg.connect`` is matched against every keyword
``connect`` names (``autocommit: bool``, ``row_factory``...), and psycopg2's overloads refuse
it: users had to write ``# type: ignore``. ``libpq_kwargs`` returns a TypedDict
(``LibpqKeepalive``), whose keys mypy matches by name. This runs mypy on a user's module (and
on a control that passes a plain dict, which must fail: the check can fail).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

USER = '''
import psycopg
import psycopg2
from pysockopt import KeepaliveConfig
from pysockopt.integrations import LibpqKeepalive, libpq_kwargs


def connect(dsn: str) -> None:
    cfg = KeepaliveConfig.for_detection(30)
    with psycopg.connect(dsn, autocommit=True, **libpq_kwargs(cfg)) as conn:
        conn.execute("select 1")
    psycopg2.connect(dsn, **libpq_kwargs(cfg)).close()
    kwargs: LibpqKeepalive = libpq_kwargs(cfg)
    print(kwargs["keepalives_idle"] + kwargs["connect_timeout"])


async def connect_async(dsn: str) -> None:
    cfg = KeepaliveConfig.for_detection(30)
    conn = await psycopg.AsyncConnection.connect(dsn, **libpq_kwargs(cfg))
    await conn.close()
'''

CONTROL = '''
import psycopg
from pysockopt import KeepaliveConfig
from pysockopt.integrations import libpq_kwargs


def connect(dsn: str) -> None:
    plain: dict[str, int] = dict(libpq_kwargs(KeepaliveConfig.for_detection(30)))
    psycopg.connect(dsn, **plain).close()
'''


def test_psycopg_connect_with_libpq_kwargs_passes_mypy_strict(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    pytest.importorskip("psycopg")
    pytest.importorskip("psycopg2")
    (tmp_path / "user_code.py").write_text(USER)
    (tmp_path / "control.py").write_text(CONTROL)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # the user's settings, not this project's
    out, err, _status = api.run([
        "--strict", "--config-file", str(tmp_path / "mypy.ini"),
        "--cache-dir", str(tmp_path / "cache"),
        str(tmp_path / "user_code.py"), str(tmp_path / "control.py")])
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert not [e for e in errors if "user_code.py" in e], out + err
    assert [e for e in errors if "control.py" in e], (
        "the control (a plain dict[str, int]) type-checked: this test cannot fail\n" + out)
