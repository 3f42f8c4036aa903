"""A fuzz smoke test of the two parsers through their own entry points, a few seconds long.

Structure-aware: well-formed sock_diag dumps and /proc/net/tcp* texts are generated, checked
against what was generated (the oracle), then mutated the way a broken kernel or a truncated
read would (lengths that lie, cut datagrams, odd attribute lengths, unknown types, errors, data
after NLMSG_DONE, bit flips; cut, joined or garbled /proc lines). Whatever the input, the only
exception that may come out is OSError, and a reply that parses gives sane records. The seed is
fixed per run and printed on failure; PYSOCKOPT_FUZZ_SECONDS sets the budget (default 2 s for
each parser; the sanitizer stage runs the same budget, so fewer inputs).
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from helpers import nlmsg

from pysockopt import TcpState, Timer
from pysockopt._core import ffi, lib
from pysockopt.host.connections import Connection, _parse_dump, parse_proc

SECONDS = float(os.environ.get("PYSOCKOPT_FUZZ_SECONDS", "2"))
SEED = int(os.environ.get("PYSOCKOPT_FUZZ_SEED", "0")) or random.SystemRandom().randrange(2**32)

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN, SOCK_DIAG_BY_FAMILY = 1, 2, 3, 4, 20
TCPDIAG_GETSOCK = 18  # the one-dump request's type, which its replies carry
NLM_F_MULTI, NLM_F_DUMP_INTR = 2, 0x10
ATTR_INFO, ATTR_SKMEMINFO = 2, 7
STATES = [s for s in TcpState if s != TcpState.NEW_SYN_RECV]


def _budget(seconds: float) -> Iterator[int]:
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        yield i
        i += 1


def _check_only_oserror(run: Callable[[], list[Connection]], what: str) -> list[Connection] | None:
    try:
        return run()
    except OSError:
        return None
    except Exception as err:  # anything else is the bug this test exists to find
        pytest.fail(f"{what}: {type(err).__name__}: {err} (PYSOCKOPT_FUZZ_SEED={SEED})")


def _sane(conns: list[Connection], limit: int) -> None:
    assert len(conns) <= limit
    for c in conns:
        assert c.family in (socket.AF_INET, socket.AF_INET6)
        assert isinstance(c.state, TcpState) and isinstance(c.timer, Timer)
        assert 0 <= c.local_port <= 65535 and 0 <= c.remote_port <= 65535
        version = 4 if c.family == socket.AF_INET else 6
        assert ipaddress.ip_address(c.local_address).version == version
        assert ipaddress.ip_address(c.remote_address).version == version
        assert 0 <= c.cookie < 2**64 and 0 <= c.retrans <= 255
        assert c.info is None or 0 < c.info.size <= 65535


# --- sock_diag dumps


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + bytes(-length % 4)


def _socket_message(r: random.Random) -> tuple[bytes, tuple[object, ...]]:
    family = r.choice((socket.AF_INET, socket.AF_INET6))
    state, timer = r.choice(STATES), r.randrange(5)
    sport, dport = r.randrange(65536), r.randrange(65536)
    src = r.randbytes(4 if family == socket.AF_INET else 16)
    dst = r.randbytes(len(src))
    cookie = r.randrange(2**64)
    attrs = b""
    info_len = 0
    if r.random() < 0.5:
        info_len = r.randrange(1, 300)
        attrs += _attr(ATTR_INFO, r.randbytes(info_len))
    if r.random() < 0.3:
        attrs += _attr(ATTR_SKMEMINFO, r.randbytes(4 * 9))
    if r.random() < 0.2:
        attrs += _attr(r.randrange(20, 40), r.randbytes(r.randrange(12)))
    body = (struct.pack("=BBBB", family, state, timer, r.randrange(256))
            + struct.pack("!HH", sport, dport) + src.ljust(16, b"\0") + dst.ljust(16, b"\0")
            + struct.pack("=III", r.randrange(2**32), cookie & 0xFFFFFFFF, cookie >> 32)
            + r.randbytes(20) + attrs)
    expect = (state, socket.inet_ntop(family, src), sport, socket.inet_ntop(family, dst),
              dport, cookie, info_len or None)
    return _nlmsg(r.choice((SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK)), body), expect


def _nlmsg(kind: int, payload: bytes) -> bytes:
    return nlmsg(kind, payload, seq=0, pad=True)


def _dump(r: random.Random) -> tuple[list[bytes], list[tuple[object, ...]]]:
    """A well-formed reply in 1..4 datagrams and what it holds."""
    messages, expect = [], []
    for _ in range(r.randrange(0, 8)):
        m, e = _socket_message(r)
        messages.append(m)
        expect.append(e)
    if r.random() < 0.2:
        messages.insert(r.randrange(len(messages) + 1), _nlmsg(NLMSG_NOOP, b""))
    messages.append(_nlmsg(NLMSG_DONE, struct.pack("=i", 0)))
    cuts = sorted(r.sample(range(1, len(messages)), min(r.randrange(4), len(messages) - 1)))
    bounds = zip([0, *cuts], [*cuts, len(messages)], strict=True)
    datagrams = [b"".join(messages[a:b]) for a, b in bounds]
    return datagrams, expect


def _mutate_dump(r: random.Random, datagrams: list[bytes]) -> list[bytes]:
    out = [bytearray(d) for d in datagrams]
    for _ in range(r.randrange(1, 4)):
        d = r.choice(out)
        kind = r.randrange(10)
        if kind == 0 and len(d) >= 4:  # nlmsg_len lies (of the first message)
            struct.pack_into("=I", d, 0, r.choice(
                (0, 1, 15, 16, len(d) + 1, len(d) - 1, 0xFFFFFFFF, 0xFFFFFFFD,
                 r.randrange(2**32))))
        elif kind == 1 and d:  # cut
            del d[r.randrange(len(d)):]
        elif kind == 2 and len(d) > 92:  # an attribute length that lies
            struct.pack_into("=H", d, 88, r.choice((0, 1, 3, 4, 0xFFFF, r.randrange(2**16))))
        elif kind == 3:  # an error in the middle
            d += _nlmsg(NLMSG_ERROR, struct.pack("=i", r.choice(
                (0, 1, -1, -4095, -4096, -(2**31), 2**31 - 1, -r.randrange(1, 200)))))
        elif kind == 4:  # odd DONE status, or data after DONE
            d += _nlmsg(NLMSG_DONE, struct.pack("=i", r.randrange(-(2**31), 2**31)))
        elif kind == 5:  # unknown type, NOOP, OVERRUN
            d += _nlmsg(r.choice((0, NLMSG_NOOP, NLMSG_OVERRUN, 17, 19, 21, 0xFFFF)), r.randbytes(
                r.randrange(8)))
        elif kind == 6 and len(d) >= 8:  # the interrupted flag
            struct.pack_into("=H", d, 6, NLM_F_MULTI | NLM_F_DUMP_INTR)
        elif kind == 7 and d:  # bit flips
            for _ in range(r.randrange(1, 8)):
                d[r.randrange(len(d))] ^= 1 << r.randrange(8)
        elif kind == 8 and len(out) > 1:  # a datagram lost
            out.remove(d)
        else:  # an empty datagram
            out.insert(r.randrange(len(out) + 1), bytearray())
    return [bytes(d) for d in out]


def _row(c: Connection) -> tuple[object, ...]:
    return (c.state, c.local_address, c.local_port, c.remote_address, c.remote_port, c.cookie,
            c.info.size if c.info is not None else None)


def test_fuzz_netlink_dumps() -> None:
    r = random.Random(SEED)
    checked = mutated = 0
    for i in _budget(SECONDS):
        datagrams, expect = _dump(r)
        if i % 4 == 0:  # the oracle: a well-formed reply gives exactly what it holds
            got = _check_only_oserror(partial(_parse_dump, datagrams), "well-formed dump")
            assert got is not None and list(map(_row, got)) == expect, SEED
            checked += 1
            continue
        bad = _mutate_dump(r, datagrams)
        got = _check_only_oserror(partial(_parse_dump, bad), f"mutated dump {bad!r}")
        if got is not None:
            _sane(got, sum(len(d) for d in bad) // 88)
        mutated += 1
    assert checked and mutated, "the budget ran out before anything was tried"


# --- /proc/net/tcp text

HEADER = (b"  sl  local_address                         remote_address                        "
          b"st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")


def _proc_address(raw: bytes) -> bytes:
    words = [int.from_bytes(raw[i:i + 4], sys.byteorder) for i in range(0, len(raw), 4)]
    return "".join(f"{w:08X}" for w in words).encode()


def _proc_text(r: random.Random, family: int) -> tuple[bytes, list[tuple[object, ...]]]:
    lines: list[bytes] = [HEADER]
    expect: list[tuple[object, ...]] = []
    size = 4 if family == socket.AF_INET else 16
    for sl in range(r.randrange(0, 8)):
        state = r.choice([s for s in STATES if s != TcpState.BOUND_INACTIVE])
        src, dst = r.randbytes(size), r.randbytes(size)
        sport, dport = r.randrange(65536), r.randrange(65536)
        tx, rx = r.randrange(2**32), r.randrange(2**32)
        timer, uid = r.randrange(5), r.randrange(2**32)
        inode = 0 if r.random() < 0.3 else r.randrange(1, 2**32)
        tail = b" 1 0000000000000000 20 4 30 10 -1" if r.random() < 0.8 else b" 1 00000000"
        lines.append(b"%4d: %s:%04X %s:%04X %02X %08X:%08X %02X:%08X %08X %5d %8d %d%s\n" % (
            sl, _proc_address(src), sport, _proc_address(dst), dport, state, tx, rx, timer,
            r.randrange(2**32), r.randrange(256), uid, r.randrange(100), inode, tail))
        # A request socket (SYN_RECV, no inode, a short tail) reports uid 0, as sock_diag does.
        request = state == TcpState.SYN_RECV and inode == 0 and tail == b" 1 00000000"
        expect.append((state, socket.inet_ntop(family, src), sport, socket.inet_ntop(family, dst),
                       dport, 0 if request else uid, inode, Timer(timer)))
    return b"".join(lines), expect


def _mutate_text(r: random.Random, text: bytes) -> bytes:
    t = bytearray(text)
    for _ in range(r.randrange(1, 4)):
        kind = r.randrange(7)
        if kind == 0 and t:  # cut anywhere (a short read)
            del t[r.randrange(len(t)):]
        elif kind == 1 and t:  # a garbled byte
            t[r.randrange(len(t))] = r.choice(b" :\n\t-0F9gZ\x00\xff")
        elif kind == 2:  # an over-long number
            pos = r.randrange(len(t) + 1)
            t[pos:pos] = r.choice((b"F" * 17, b"9" * 25, b"-", b"--1", b"0x10"))
        elif kind == 3 and b"\n" in t:  # two lines joined
            t.remove(ord("\n"))
        elif kind == 4:  # a field dropped
            fields = t.split(b" ")
            if len(fields) > 3:
                del fields[r.randrange(len(fields))]
                t = bytearray(b" ".join(fields))
        elif kind == 5:  # a blank or foreign line
            pos = r.randrange(len(t) + 1)
            t[pos:pos] = r.choice((b"\n", b"   \n", b"garbage\n", HEADER))
        elif t:  # bit flips
            t[r.randrange(len(t))] ^= 1 << r.randrange(8)
    return bytes(t)


def _proc_row(c: Connection) -> tuple[object, ...]:
    return (c.state, c.local_address, c.local_port, c.remote_address, c.remote_port, c.uid,
            c.inode, c.timer)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["tcp", "tcp6"])
def test_fuzz_proc_text(family: int) -> None:
    r = random.Random(SEED + family)
    checked = mutated = 0
    for i in _budget(SECONDS / 2):
        text, expect = _proc_text(r, family)
        if i % 4 == 0:
            got = _check_only_oserror(partial(parse_proc, text, family), "well-formed text")
            assert got is not None and list(map(_proc_row, got)) == expect, SEED
            assert all(c.cookie == 0 for c in got)
            checked += 1
            continue
        bad = _mutate_text(r, text)
        got = _check_only_oserror(partial(parse_proc, bad, family), f"mutated text {bad!r}")
        if got is not None:
            _sane(got, bad.count(b"\n"))
        mutated += 1
    assert checked and mutated, "the budget ran out before anything was tried"


# --- SOCK_DESTROY answers, through the same walker


def _answer_datagram(r: random.Random, seq: int) -> tuple[bytes, int]:
    """Skipped messages, then the ack of request seq (0 or -errno), in one datagram."""
    skipped = b"".join(nlmsg(r.choice((NLMSG_NOOP, SOCK_DIAG_BY_FAMILY, 21)), r.randbytes(
        4 * r.randrange(4)), seq=seq) for _ in range(r.randrange(3)))
    answer = r.choice((0, -1, -2, -13, -95, -4095, -r.randrange(1, 4096)))
    request = nlmsg(21, bytes(72), flags=5, seq=seq)  # the kernel echoes our request
    return skipped + nlmsg(NLMSG_ERROR, struct.pack("=i", answer) + request, flags=0,
                           seq=seq), answer


def _parse_answer(data: bytes, seq: int) -> tuple[int, int]:
    # An exactly sized buffer, so the sanitizer stage sees any read past the datagram.
    buf = ffi.new("uint8_t[]", data) if data else ffi.NULL
    answer = ffi.new("int *", 1)
    return int(lib.pso_destroy_parse_answer(buf, len(data), seq, answer)), int(answer[0])


def test_fuzz_destroy_answers() -> None:
    r = random.Random(SEED + 1)
    checked = mutated = 0
    for i in _budget(SECONDS / 2):
        seq = r.randrange(1, 2**32)
        data, answer = _answer_datagram(r, seq)
        if i % 4 == 0:  # the oracle
            assert _parse_answer(data, seq) == (lib.PSO_NL_DONE, answer), SEED
            checked += 1
            continue
        (bad,) = _mutate_dump(r, [data])[:1] or [b""]
        rc, got = _parse_answer(bad, seq)
        if rc == lib.PSO_NL_DONE:
            assert -4095 <= got <= 0, (SEED, bad)
        elif rc == lib.PSO_NL_MORE:
            assert got == 1, (SEED, bad)  # no answer: untouched
        else:
            assert -4095 <= rc < 0, (SEED, bad, rc)
        mutated += 1
    assert checked and mutated, "the budget ran out before anything was tried"
