from __future__ import annotations

import fcntl
import os
import subprocess
import sys

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _pysockopt(*args: str) -> list[str]:
    return [sys.executable, "-m", "pysockopt", *args]


def test_closed_pipe_is_not_an_error() -> None:
    # `pysockopt errno --list | head -1`: the reader goes away after one line. The pipe is
    # shrunk to one page so the writer really meets the closed end.
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(_pysockopt("errno", "--list"), stdout=write_fd,
                            stderr=subprocess.PIPE)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        first = reader.readline()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, err
    assert first.strip() and b"Broken pipe" not in err and b"Traceback" not in err


def test_python_m_and_help() -> None:
    out = subprocess.run(_pysockopt("--help"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "keepalive" in out.stdout and "errno" in out.stdout
    out = subprocess.run(_pysockopt("--version"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("pysockopt ")
    out = subprocess.run(_pysockopt("keepalive", "--bogus"), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "usage" in out.stderr
