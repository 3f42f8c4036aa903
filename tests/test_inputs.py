"""Bad input shared by every socket-taking function: a clear error, never a crash."""

from __future__ import annotations

import errno
import socket

import pytest

from pysockopt import (
    Action,
    KeepaliveConfig,
    apply_keepalive,
    errno_info,
    poll_tcp_info,
    read_keepalive,
    tcp_info,
    triage,
)
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
    first, last = small[0], big[-1]
    assert not isinstance(first, OSError) and not isinstance(last, OSError)
    assert last.state == first.state  # results stay valid after their buffer went


# --- errno input validation: any number, never an exception from formatting it


@pytest.mark.parametrize("code", [2**31, -(2**31) - 1, 2**70, 10**5000, -(10**5000)],
                         ids=["2**31", "-2**31-1", "2**70", "10**5000", "-10**5000"])
def test_errno_info_of_a_number_outside_c_int_is_unknown_not_an_error(code: int) -> None:
    info = errno_info(code)
    assert info.code == code and not info.known and info.name == ""
    assert "C int" in info.meaning and info.message and info.advice
    assert len(info.meaning) < 1000  # says what the number is, does not print 5000 digits


@pytest.mark.parametrize("exc", [
    OSError(10**5000, "x"),
    OSError(-(10**5000), "x"),
    OSError(2**40, "x"),
    ConnectionResetError(10**5000, "x"),
    ValueError(10**5000),
    RuntimeError("wrapped"),
], ids=["huge", "-huge", "2**40", "reset-huge", "ValueError-huge", "cause-huge"])
def test_triage_never_raises_on_odd_exceptions(exc: BaseException) -> None:
    if isinstance(exc, RuntimeError):
        exc.__cause__ = OSError(10**5000, "x")
    result = triage(exc)
    assert result.action is Action.GIVE_UP and result.reason


def test_triage_survives_an_exception_whose_str_raises() -> None:
    class Odd(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    result = triage(Odd())
    assert result.action is Action.GIVE_UP and "Odd" in result.reason


# --- fileno() that raises: one behaviour for single calls and batches


class RaisingFileno:
    def fileno(self) -> int:
        raise ValueError("I/O operation on closed file")


@pytest.mark.parametrize("call", [
    tcp_info, read_keepalive, lambda s: apply_keepalive(s, KeepaliveConfig(9, 3, 3)),
    lambda s: apply_keepalive(s, KeepaliveConfig(9, 3, 3), verify=False),
    lambda s: _raise_entry(poll_tcp_info([s])[0]),
])
def test_fileno_value_error_is_ebadf_everywhere(call: object) -> None:
    with pytest.raises(OSError) as info:
        call(RaisingFileno())  # type: ignore[operator]
    assert info.value.errno == errno.EBADF and "closed file" in str(info.value)
    assert isinstance(info.value.__cause__ or info.value.__context__, ValueError) or (
        "fileno() failed" in str(info.value))


def _raise_entry(entry: object) -> None:
    if isinstance(entry, OSError):
        raise entry
