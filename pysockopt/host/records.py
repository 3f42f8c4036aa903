"""The records of a socket dump, decoded: ``Connection`` and ``Timer``, and the record decoder.

``connections.py`` runs the dump (netlink or /proc) into a native sink; this module turns the
sink's records into Connections. The decoder is the cost of a listing at a million sockets, so
it reads the native records where they are (no copy into bytes first), keeps the tcp_info
payloads in the one native blob the dump filled (each TcpInfo is a view at its offset, with no
Python frame per socket to build it), shares repeated address strings, and pauses the garbage
collector while it builds its objects (docs/connections.md, Performance).
"""

from __future__ import annotations

import errno
import gc
import socket
import struct
from array import array
from collections import deque
from collections.abc import Iterable
from enum import IntEnum
from itertools import compress, repeat
from typing import Any, Final, NamedTuple

from .._core import ffi, lib
from .._format import endpoint
from .._sock import os_error
from ..tcpinfo import RUNNING_KERNEL, TcpInfo, TcpState, set_view_offset, shared_view_class
from .namespaces import NetNamespace
from .owners import Process, processes_of

__all__ = ["Connection", "Timer", "check_record", "decode", "state_of", "take_info"]


class Timer(IntEnum):
    """The kernel timer pending on a socket, as ``ss -o`` and /proc/net/tcp report it."""

    NONE = 0
    RETRANSMIT = 1
    KEEPALIVE = 2
    TIME_WAIT = 3
    ZERO_WINDOW_PROBE = 4

    def __str__(self) -> str:
        return self.name  # print(conn.timer) shows KEEPALIVE, not the IntEnum's 2

    @property
    def label(self) -> str:
        """The spelling ``ss -o`` uses: ``on``, ``keepalive``, ``timewait``, ``persist``."""
        return _TIMER_LABELS[self]


_TIMER_LABELS: Final = {
    Timer.NONE: "off",
    Timer.RETRANSMIT: "on",
    Timer.KEEPALIVE: "keepalive",
    Timer.TIME_WAIT: "timewait",
    Timer.ZERO_WINDOW_PROBE: "persist",
}


class Connection(NamedTuple):
    """One TCP socket as the kernel reports it (one line of ``ss -tan``).

    Addresses are strings as ``inet_ntop`` writes them; ports are ints (0 for a listener's
    remote side). ``rqueue``/``wqueue`` are bytes not yet read / not yet acknowledged, except
    on a LISTEN socket, where they are the accept-queue length and the backlog (see
    ``accept_queue`` and ``backlog``). ``uid`` and ``inode`` are 0 for TIME_WAIT and
    SYN_RECV entries, which belong to no process. ``timer`` is the pending timer and
    ``expires_ms`` when it fires; ``retrans`` counts what that timer counts (retransmits,
    or unanswered keepalive / zero-window probes). ``drops`` is a listener's count of
    connections dropped because its queue was full (None for other sockets and from /proc).
    ``info`` is the socket's TcpInfo when ``with_info`` asked for it and the kernel has one
    (never for TIME_WAIT and SYN_RECV). ``netns`` is the NetNamespace the socket lives in when
    that is not the caller's own (``connections(netns=...)``), else None. ``cookie`` is the
    kernel's 64-bit socket cookie (inet_diag's idiag_cookie, the value SO_COOKIE gives the
    socket's owner): it names this one socket, where addresses and inode can be reused; 0 from
    /proc, which does not show it (unknown). It comes last so that code unpacking the older
    fields by position still works.
    """

    # A NamedTuple, not a dataclass: one listing builds up to 100k of these, and tuple
    # construction costs about a third of a frozen dataclass's (measured at 100k sockets).
    family: socket.AddressFamily
    state: TcpState
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    rqueue: int
    wqueue: int | None
    uid: int
    inode: int
    timer: Timer
    expires_ms: int
    retrans: int
    drops: int | None = None
    info: TcpInfo | None = None
    netns: NetNamespace | None = None
    cookie: int = 0

    @property
    def accept_queue(self) -> int | None:
        """On a LISTEN socket: connections waiting for accept(); otherwise None."""
        return self.rqueue if self.state == TcpState.LISTEN else None

    @property
    def backlog(self) -> int | None:
        """On a LISTEN socket: the accept-queue limit (None where /proc does not say)."""
        return self.wqueue if self.state == TcpState.LISTEN else None

    @property
    def local(self) -> str:
        """``address:port`` as ``ss`` prints it (IPv6 in brackets)."""
        return endpoint(self.family, self.local_address, self.local_port)

    @property
    def remote(self) -> str:
        """``address:port`` of the peer (``*`` port for a listener)."""
        return endpoint(self.family, self.remote_address, self.remote_port)

    def processes(self) -> tuple[Process, ...]:
        """Return the processes holding this socket, found through /proc/*/fd (slow: on demand)."""
        if not self.inode:
            return ()
        return processes_of([self.inode]).get(self.inode, ())

    def as_dict(self) -> dict[str, object]:
        """Every field for JSON: enums as their labels, info as its own dict (or None)."""
        return {
            "family": "inet" if self.family == socket.AF_INET else "inet6",
            "state": self.state.label,
            "local_address": self.local_address,
            "local_port": self.local_port,
            "remote_address": self.remote_address,
            "remote_port": self.remote_port,
            "rqueue": self.rqueue,
            "wqueue": self.wqueue,
            "uid": self.uid,
            "inode": self.inode,
            "timer": self.timer.label,
            "expires_ms": self.expires_ms,
            "retrans": self.retrans,
            "drops": self.drops,
            "info": None if self.info is None else self.info.as_dict(),
            "netns": None if self.netns is None else self.netns.inode,
            "cookie": self.cookie,
        }




# --- records to Connections

#: struct pso_conn (csrc/sockdiag.h), field for field: (name, struct format), in order.
RECORD_FIELDS: Final = (
    ("src", "16s"), ("dst", "16s"), ("cookie", "Q"), ("expires_ms", "I"), ("rqueue", "I"),
    ("wqueue", "I"), ("uid", "I"), ("inode", "I"), ("info_off", "I"), ("drops", "i"),
    ("sport", "H"), ("dport", "H"), ("info_len", "H"), ("family", "B"), ("state", "B"),
    ("timer", "B"), ("retrans", "B"), ("flags", "B"), ("pad", "x"),
)


def check_record(fields: Iterable[tuple[str, str]], ctype: str = "struct pso_conn") -> None:
    """Raise ImportError unless ``fields`` is exactly ``ctype``'s native layout.

    Every name at its offset with its size, none missing, nothing after: so two swapped
    fields fail at import, not as silently wrong records.
    """
    offset = 0
    names = []
    for name, fmt in fields:
        size = struct.calcsize("=" + fmt)
        try:
            native = ffi.offsetof(ctype, name)
            native_size = ffi.sizeof(dict(ffi.typeof(ctype).fields)[name].type)
        except (KeyError, AttributeError) as err:
            raise ImportError(f"pysockopt._native has no {ctype}.{name}: rebuild it") from err
        if native != offset or native_size != size:
            raise ImportError(f"{ctype}.{name} is {native_size} bytes at offset {native} in "
                              f"pysockopt._native, {size} at {offset} here: rebuild it")
        names.append(name)
        offset += size
    missing = [n for n, _ in ffi.typeof(ctype).fields if n not in names]
    if missing or offset != ffi.sizeof(ctype):
        raise ImportError(f"{ctype} fields missing here: {', '.join(missing) or '-'}; "
                          f"{ffi.sizeof(ctype)} bytes there, {offset} here: rebuild it")


check_record(RECORD_FIELDS)
_RECORD: Final = struct.Struct("=" + "".join(fmt for _, fmt in RECORD_FIELDS))

#: The TcpState of each state number the kernel reports (None where pysockopt knows none).
STATES_BY_NUMBER: Final = tuple(TcpState(i) if i in TcpState._value2member_map_ else None
                                for i in range(lib.PSO_SD_NSTATES))
_TIMERS: Final = tuple(Timer)


def state_of(number: int) -> TcpState:
    """Return the TcpState of a dumped state number; OSError(EBADMSG) for one unknown here."""
    state = STATES_BY_NUMBER[number]
    if state is None:
        raise OSError(errno.EBADMSG, f"the kernel reported TCP state {number}, unknown here")
    return state


def take_info(sink: Any) -> bytes | memoryview:
    """Take the sink's tcp_info blob (no copy): a memoryview that frees it when unreferenced.

    The sink no longer holds it (C readers of the sink see no tcp_info from then on); a
    caller that decodes the same sink twice keeps the blob and passes it to ``decode``.
    """
    length = ffi.new("size_t *")
    info = lib.pso_sd_take_info(sink, length)
    if info == ffi.NULL:
        return b""
    # The TcpInfo views keep the memoryview, which keeps the buffer, which keeps this owner.
    owner = ffi.gc(info, lib.pso_sd_info_free, size=length[0])
    return memoryview(ffi.buffer(owner, length[0]))


def decode(sink: Any, netns: NetNamespace | None = None,
           blob: bytes | memoryview | None = None) -> list[Connection]:
    """Decode the records a native sink holds into Connections (in dump order).

    ``blob``: the sink's tcp_info blob if already taken (``take_info``); else it is taken
    here and moves into the result. The records are read in place and stay the sink's.
    """
    n = sink.nconns
    if n == 0:
        return []
    if blob is None:
        blob = take_info(sink) if sink.info_len else b""
    # Read where the C core wrote them, a round of columns at a time: a copy of the records
    # into bytes first was the listing's peak memory (held + 2x the records).
    idx = _new_uncleared("uint32_t[]", 2 * n)
    table = ffi.new("struct pso_sd_addr_table *")
    summary = ffi.new("struct pso_sd_summary *")
    rc = lib.pso_sd_intern_addresses(sink, idx, table, summary)
    if rc:
        raise os_error(rc, "numbering a listing's addresses")
    try:
        names = _names(ffi.buffer(table.entries, table.n * lib.PSO_SD_ADDR_SIZE)[:])
    finally:
        lib.pso_sd_addr_table_free(table)
    # The garbage collector is paused while the records become objects: a listing makes
    # millions of tracked objects (tuples, views) and none of them forms a cycle, yet each
    # generation-0 threshold crossed started a collection, and collections of the older
    # generations walked everything built so far (29% of a listing's time at 119k sockets).
    # The objects stay tracked; the next collection after the listing sees them as usual.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _decode(sink, idx, names, blob, netns, summary)
    finally:
        if paused:
            gc.enable()


def _names(entries: bytes) -> list[str]:
    """Each distinct address of a listing as inet_ntop writes it, by its number."""
    ntop = socket.inet_ntop
    size = lib.PSO_SD_ADDR_SIZE
    out = []
    for at in range(0, len(entries), size):
        if entries[at] == socket.AF_INET:
            out.append(ntop(socket.AF_INET, entries[at + 1:at + 5]))
        else:
            out.append(ntop(socket.AF_INET6, entries[at + 1:at + size]))
    return out


def _layout() -> dict[str, tuple[str, int, int]]:
    """Each numeric field of struct pso_conn as a column: (array typecode, offset, size)."""
    out = {}
    offset = 0
    for name, fmt in RECORD_FIELDS:
        size = struct.calcsize("=" + fmt)
        if fmt in ("B", "H", "I", "Q", "i"):
            if array(fmt).itemsize != size:  # pragma: no cover - a platform's C ints
                raise ImportError(f"array typecode {fmt!r} is not {size} bytes here")
            out[name] = (fmt, offset, size)
        offset += size
    return out


_COLUMNS: Final = _layout()
_FAMILIES: Final = tuple(socket.AF_INET if i == socket.AF_INET else socket.AF_INET6
                         for i in range(256))
#: A record's drops is -1 when the kernel reported none (C: sockdiag.h): None in a Connection.
_NO_DROPS: Final[dict[int, None]] = {-1: None}
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)
_set_off = set_view_offset  # the slot's member descriptor, called by map()
_new_connection = tuple.__new__
#: Records decoded per round: the columns of one round (~50 bytes a record) are all the
#: decoder holds besides the result, whatever the listing's size.
CHUNK: Final = 1 << 14


def _decode(sink: Any, idx: Any, names: list[str], blob: bytes | memoryview,
            netns: NetNamespace | None, summary: Any) -> list[Connection]:
    # A listing's cost is its per-socket work, so there is no Python code per socket here:
    # each field is copied by C into a contiguous array (one column; iterating an array costs
    # a third of a strided view of the records), mapped through C-level lookups, and the
    # Connections are built by map(tuple.__new__, repeat(Connection), zip(columns)), a round
    # of CHUNK records at a time.
    # The checks come from the C pass that numbered the addresses (sockdiag_records.h): no
    # column is read just to check it (at 1M sockets each such pass streamed 80 MB again).
    seen = summary.states
    for number in range(32):
        known = number < len(STATES_BY_NUMBER) and STATES_BY_NUMBER[number] is not None
        if seen >> number & 1 and not known:
            raise OSError(errno.EBADMSG, f"the kernel reported TCP state {number}"
                                         f"{' or above' if number == 31 else ''}, unknown here")
    if summary.max_timer >= len(_TIMERS):
        raise OSError(errno.EBADMSG,
                      f"the kernel reported timer {summary.max_timer}, unknown here")
    n = sink.nconns
    unknown = lib.PSO_CONN_WQUEUE_UNKNOWN
    wqueue_unknown = bool(summary.flags & unknown)  # /proc's listeners: no backlog (rare)
    infos = _Infos(blob, summary)
    out: list[Connection] = []
    for first in range(0, n, CHUNK):
        count = min(CHUNK, n - first)

        def column(name: str, first: int = first, count: int = count) -> array[int]:
            code, offset, size = _COLUMNS[name]
            got = array(code, bytes(count * size))
            with ffi.from_buffer(got) as at:
                rc = lib.pso_sd_column(sink, first, count, offset, size, at)
            if rc:
                raise os_error(rc, "reading a listing's records")
            return got

        def addresses(which: int, first: int = first, count: int = count) -> array[int]:
            got = array("I", bytes(4 * count))
            with ffi.from_buffer("uint32_t[]", got) as at:
                rc = lib.pso_sd_idx_column(idx, n, first, count, which, at)
            if rc:
                raise os_error(rc, "reading a listing's addresses")
            return got

        wqueue: Iterable[int | None] = column("wqueue")
        if wqueue_unknown:
            wqueue = [None if f & unknown else w
                      for w, f in zip(wqueue, column("flags"), strict=True)]
        drops = column("drops")
        columns = (
            map(_FAMILIES.__getitem__, column("family")),
            map(STATES_BY_NUMBER.__getitem__, column("state")),
            map(names.__getitem__, addresses(0)),
            column("sport"),
            map(names.__getitem__, addresses(1)),
            column("dport"),
            column("rqueue"),
            wqueue,
            column("uid"),
            column("inode"),
            map(_TIMERS.__getitem__, column("timer")),
            column("expires_ms"),
            column("retrans"),
            map(_NO_DROPS.get, drops, drops),
            infos(column("info_len"), column("info_off")) if infos.some else repeat(None),
            repeat(netns),
            column("cookie"),
        )
        # Not strict: the repeat() columns are endless; the record columns are all count long.
        out += map(_new_connection, repeat(Connection), zip(*columns, strict=False))
    return out


class _Infos:
    """Each record's TcpInfo view into a listing's tcp_info blob, a round at a time."""

    def __init__(self, blob: bytes | memoryview, summary: Any) -> None:
        self.blob = blob
        self.some = bool(summary.info_len)
        self.differ = bool(summary.info_lens_differ)
        self.cls: type[TcpInfo] | None = None
        if self.some and not self.differ:
            # One class per listing, whose views read the listing's blob as a class
            # attribute: each view is then made with a single slot to fill.
            base = shared_view_class(summary.info_len, RUNNING_KERNEL)
            self.cls = type("TcpInfo", (base,), {
                "__slots__": (), "_buf": blob, "__module__": base.__module__,
                "__qualname__": "TcpInfo", "__doc__": base.__doc__})

    def __call__(self, lengths: array[int], offsets: array[int]) -> Iterable[TcpInfo | None]:
        """Return the views of one round's records (None where a record has no tcp_info)."""
        if self.cls is None:  # lengths differ: never from one kernel (one struct size)
            out: list[TcpInfo | None] = []
            for length, off in zip(lengths, offsets, strict=True):
                if length:
                    view = object.__new__(shared_view_class(length, RUNNING_KERNEL))
                    view._buf = self.blob
                    view._off = off
                    out.append(view)
                else:
                    out.append(None)
            return out
        count = len(lengths) - lengths.count(0)
        some_none = count < len(lengths)
        wanted = compress(offsets, lengths) if some_none else offsets
        made: list[TcpInfo] = list(map(object.__new__, repeat(self.cls, count)))
        deque(map(_set_off, made, wanted), maxlen=0)
        if not some_none:
            return made
        # None for records without tcp_info (TIME_WAIT, SYN_RECV), the next view for the
        # others.
        choices = (repeat(None), iter(made))
        return map(next, map(choices.__getitem__, map(bool, lengths)))
