"""Run test code as an unprivileged user, and run it short of file descriptors.

``as_unprivileged(fn)`` forks; the child closes every descriptor it inherited (so the
sockets the test holds are not also held by a process of the unprivileged user), joins a
network namespace if asked, drops to ``nobody`` (uid/gid 65534, no supplementary groups,
hence no capabilities), runs ``fn`` and sends its result or exception back pickled. Forking
instead of starting a new interpreter works wherever the interpreter itself is not readable
by that user (a pyenv under /root); ``fn`` runs with the modules the test already imported,
so import what it needs before calling. Needs root: mark such tests ``@pytest.mark.root``
and skip with ``unprivileged_reason()``.

``free_descriptors(n)`` leaves this process exactly ``n`` free descriptors (RLIMIT_NOFILE
lowered, the rest filled with /dev/null) for the duration of a with-block.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import pickle
import pwd
import resource
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import TypeVar

from netns import setns

T = TypeVar("T")

#: ``nobody`` on Debian, Ubuntu, Fedora, Alpine; a uid need not be in /etc/passwd to be used.
NOBODY = 65534


def unprivileged_reason() -> str | None:
    """Return None when this process can run code as another user, else why not."""
    if os.geteuid() != 0:
        return "needs root to drop privileges to another user (CI runs as root)"
    return None


def as_unprivileged(fn: Callable[[], T], *, netns: str | None = None, uid: int = NOBODY,
                    gid: int = NOBODY, timeout: float = 60.0) -> T:
    """Run ``fn`` in a forked child as ``uid``/``gid`` (in namespace ``netns`` if given).

    Returns what ``fn`` returned, or raises what it raised (as a RuntimeError carrying the
    child's traceback when the exception does not pickle). The child holds none of this
    process's descriptors.
    """
    reason = unprivileged_reason()
    if reason:
        raise RuntimeError(reason)
    _warm()  # the interpreter's own files may not be readable by that user
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _child(fn, write_fd, netns, uid, gid)
    os.close(write_fd)
    try:
        data = _read_all(read_fd, timeout, pid)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"the unprivileged child died without a result (status {status})")
    ok, payload = pickle.loads(data)
    if ok:
        result: T = payload  # what fn returned in the child, unpickled
        return result
    if isinstance(payload, BaseException):
        raise payload
    raise RuntimeError(f"in the unprivileged child:\n{payload}")


def _warm() -> None:
    """Import now what the code under test imports lazily (text codecs, on first open)."""
    for name in ("ascii", "utf-8", "latin-1"):
        codecs.lookup(name)


def _child(fn: Callable[[], object], write_fd: int, netns: str | None, uid: int,
           gid: int) -> None:  # pragma: no cover - runs after fork
    code = 0
    try:
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, 1 << 16)
        if netns is not None:
            setns(f"/run/netns/{netns}")
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        try:
            result: tuple[bool, object] = (True, fn())
        except BaseException as exc:
            result = (False, exc)
        try:
            data = pickle.dumps(result)
        except Exception:
            data = pickle.dumps((False, traceback.format_exc()))
    except BaseException:
        data = pickle.dumps((False, traceback.format_exc()))
        code = 1
    with contextlib.suppress(OSError):
        view = memoryview(struct.pack("=Q", len(data)) + data)
        while view:
            view = view[os.write(write_fd, view):]
    os._exit(code)


def _read_all(fd: int, timeout: float, pid: int) -> bytes:
    import select

    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            raise TimeoutError(f"the unprivileged child gave no result within {timeout} s")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    if len(data) < 8:
        return b""
    (size,) = struct.unpack("=Q", data[:8])
    return data[8:8 + size]


@contextlib.contextmanager
def free_descriptors(n: int) -> Iterator[None]:
    """Leave exactly ``n`` free descriptors inside the with-block, then restore everything.

    The soft RLIMIT_NOFILE is lowered to a little over what is open, the rest is filled
    with /dev/null, then ``n`` are closed again. Import whatever the block needs first: an
    import opens files.
    """
    _warm()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 32, hard))
    filler: list[int] = []
    try:
        while True:
            try:
                filler.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as err:
                if err.errno != errno.EMFILE:
                    raise
                break
        for _ in range(n):
            os.close(filler.pop())
        yield
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


#: A named system user for what needs an /etc/passwd entry (initdb, postgres) or a user of its
#: own (the namespace tests' unprivileged CLI runs): made when first needed, removed at the end
#: of the session that made it (conftest's pytest_sessionfinish), so the suite leaves none.
TEST_USER = "pysockopt-test"
_made_test_user = False


def pysockopt_test_user() -> pwd.struct_passwd:
    """Return the passwd entry of ``TEST_USER``, making it (a system user, no home) if missing."""
    global _made_test_user
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", TEST_USER], check=True, capture_output=True)
        _made_test_user = True
        return pwd.getpwnam(TEST_USER)


def remove_test_user() -> None:
    """Remove ``TEST_USER`` if this session made it (with its group); a user found is kept."""
    global _made_test_user
    if _made_test_user:
        subprocess.run(["userdel", TEST_USER], capture_output=True)
        _made_test_user = False
