"""pysockopt._core: the one door to the C core (typed helpers, one error boundary, ffi.gc)."""

from __future__ import annotations

import errno
import gc
import os
import socket

import pytest

from pysockopt import _core
from pysockopt._core import check, ffi, lib, native_errors


def test_native_errors_raise_the_mapped_oserror_with_context() -> None:
    with (pytest.raises(ConnectionResetError, match=r"\(reading x: step y\)$") as info,
          native_errors("reading x")):
        check(-errno.ECONNRESET, "step y")
    assert info.value.errno == errno.ECONNRESET and info.value.__cause__ is None
    with native_errors("anything"):
        assert check(7) == 7


def test_netns_socket_names_the_step_that_failed() -> None:
    fd = os.open("/etc/hostname", os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="setns") as info:
            _core.netns_socket(fd, socket.AF_INET, socket.SOCK_STREAM)
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_netns_socket_in_our_own_namespace() -> None:
    if os.geteuid() != 0:
        pytest.skip("setns needs CAP_SYS_ADMIN even into one's own namespace (CI runs as root)")
    nsfd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = _core.netns_socket(nsfd, socket.AF_INET, socket.SOCK_DGRAM)
    finally:
        os.close(nsfd)
    with socket.socket(fileno=fd) as sock:
        assert sock.type == socket.SOCK_DGRAM and not os.get_inheritable(fd)


def test_sinks_are_freed_by_their_owner() -> None:
    # Each sink holds a 1024-record array after one parse; 2000 of them unfreed would hold
    # ~170 MB. ffi.gc frees each when it goes: the process's RSS stays flat.
    def rss_kb() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

    done = bytes(16) + bytes(4)
    data = ffi.new("uint8_t[]", done)
    ffi.cast("uint32_t *", data)[0] = len(done)
    ffi.cast("uint16_t *", data + 4)[0] = 3  # NLMSG_DONE
    text = b"  sl  local_address\n" + b"   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 " \
           b"00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n"
    query = ffi.new("struct pso_sd_query *", (0, 0xFFFF, -1, 0))

    def churn(n: int) -> None:
        for _ in range(n):
            sink = _core.new_sink(True)
            assert lib.pso_proc_parse(text, len(text), socket.AF_INET, query, sink) == 1
            assert sink.nconns == 1 and sink.conns_cap == 1024
            assert lib.pso_sd_parse(data, len(done), sink) == lib.PSO_SD_DONE

    churn(200)
    gc.collect()
    before = rss_kb()
    churn(2000)
    gc.collect()
    assert rss_kb() - before < 40_000  # KiB; 2000 leaked arrays would be ~170 MB
