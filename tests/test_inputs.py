"""Bad input shared by every socket-taking function: a clear error, never a crash."""

from __future__ import annotations

import errno
import socket

import pytest

from pysockopt import KeepaliveConfig, apply_keepalive, poll_tcp_info, read_keepalive, tcp_info
from pysockopt import tcpinfo as tcpinfo_module


@pytest.mark.parametrize("fd", [2**31, 2**40, -(2**31) - 1, -(2**63)])
def test_descriptor_outside_c_int_is_ebadf(fd: int) -> None:
    for call in (tcp_info, read_keepalive, lambda s: apply_keepalive(s, KeepaliveConfig(9, 3, 3))):
        with pytest.raises(OSError) as info:
            call(fd)
        assert info.value.errno == errno.EBADF and str(fd) in str(info.value)


def test_out_of_range_descriptor_fails_only_its_entry(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, _ = tcp_pair
    results = poll_tcp_info([2**40, client, -(2**40)])
    assert isinstance(results[0], OSError) and results[0].errno == errno.EBADF
    assert not isinstance(results[1], OSError) and results[1].state is not None
    assert isinstance(results[2], OSError) and results[2].errno == errno.EBADF


def test_large_batch_buffer_is_not_kept(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    keep = tcpinfo_module._Buffers.KEEP
    small = poll_tcp_info([client] * 10)
    assert all(not isinstance(r, OSError) for r in small)
    spare = tcpinfo_module._BUFFERS.spare
    assert spare is not None and spare[0] <= keep
    big = poll_tcp_info([client] * (keep + 1))
    assert len(big) == keep + 1 and all(not isinstance(r, OSError) for r in big)
    # The small spare set is still the one kept; the large one was dropped with the call.
    assert tcpinfo_module._BUFFERS.spare is spare
    assert big[-1].state == small[0].state  # results stay valid after their buffer went
