"""Every TCP socket on the host, like ``ss -tan``: enumeration and counts by state.

The kernel is asked through NETLINK_SOCK_DIAG, the interface ``ss`` uses: every datagram read
until NLMSG_DONE, the state and port filters run by the kernel, TCP_INFO attached only when asked.
Both families come from one dump (the tcp_diag request, answered for AF_UNSPEC: one walk of the
kernel's socket tables, which every namespace shares, instead of one walk per family); a kernel
that refuses it gets one SOCK_DIAG_BY_FAMILY dump per family, as ``ss`` asks for them. Where
netlink is refused, /proc/net/tcp and /proc/net/tcp6 give the same answers (without tcp_info,
listener backlogs and drops). Counting happens in C and creates no Python object per socket.

Everything here sees the network namespace of the calling thread, unless ``netns=`` names
another one: the dump then runs in a native thread that entered it (see entering.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, Literal, NamedTuple

from .._core import ffi, lib, new_sink
from .._sock import os_error
from ..errors import InvalidConfigError
from ..tcpinfo import TcpState
from . import records as _decoding
from .namespaces import (
    Entered,
    FileReads,
    NetNamespace,
    NetnsArg,
    NetnsPermissionError,
    describe,
    entry_error,
    opened,
    read_files,
)
from .namespaces import read_files as _read_in
from .owners import Owners, Process, processes_of, walk_owners
from .records import STATES_BY_NUMBER, Connection, Timer

__all__ = [
    "Connection",
    "DumpSpec",
    "NativeDump",
    "Trip",
    "Owners",
    "Process",
    "Timer",
    "connections",
    "native_dump",
    "processes_of",
    "state_counts",
    "trip",
    "walk_owners",
]

Source = Literal["auto", "netlink", "proc"]


# The record decoding lives in records.py (issue 18); these names stay importable from here.
_check_record = _decoding.check_record
_records = _decoding.decode
_state = _decoding.state_of


# --- query validation

#: Every state ``ss -a`` asks for (bits 0..11); the kernel adds request sockets to SYN_RECV.
_ALL_STATES: Final = 0xFFF
_FAMILIES: Final[dict[int | None, int]] = {None: 0, socket.AF_INET: socket.AF_INET,
                                           socket.AF_INET6: socket.AF_INET6}


def state_mask(states: Iterable[TcpState | int | str] | TcpState | int | str | None) -> int:
    """Return sock_diag's state bitmask (1 << state) for states as ``connections()`` takes."""
    if states is None:
        return _ALL_STATES
    if isinstance(states, (int, str)):
        states = [states]
    mask = 0
    for s in states:
        state = parse_state(s)
        # Both sources label request sockets SYN_RECV (sock_diag's reply and /proc alike),
        # and asking sock_diag for SYN_RECV brings them: NEW_SYN_RECV is the same request.
        mask |= 1 << (TcpState.SYN_RECV if state == TcpState.NEW_SYN_RECV else state)
    return mask


def parse_state(value: TcpState | int | str) -> TcpState:
    """Return the TcpState for a state, its number, or a name in netstat or ss spelling.

    ``"CLOSE_WAIT"``, ``"close-wait"``, ``"FIN-WAIT-1"``, ``"estab"`` and ``8`` all work.
    Anything else raises InvalidConfigError.
    """
    if isinstance(value, TcpState):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return TcpState(value)
        except ValueError:
            pass
    elif isinstance(value, str):
        key = value.strip().upper().replace("-", "_")
        key = {"ESTAB": "ESTABLISHED", "FIN_WAIT_1": "FIN_WAIT1", "FIN_WAIT_2": "FIN_WAIT2",
               "UNCONN": "CLOSE", "SYN_RCVD": "SYN_RECV"}.get(key, key)
        if key in TcpState.__members__:
            return TcpState[key]
    names = ", ".join(s.label for s in TcpState)
    raise InvalidConfigError("state", value, names)


def _query(states: int, port: int | None, family: int | None, ext: int) -> object:
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 <= port <= 65535):
        raise InvalidConfigError("port", port, "0..65535 or None")
    if family not in _FAMILIES:
        raise InvalidConfigError("family", family, "socket.AF_INET, socket.AF_INET6 or None")
    return ffi.new("struct pso_sd_query *",
                   (_FAMILIES[family], states, -1 if port is None else port, ext))


# --- the two sources


_STEP: Final = {
    lib.PSO_SD_STEP_SOCKET: "opening a NETLINK_SOCK_DIAG socket",
    lib.PSO_SD_STEP_SEND: "sending the sock_diag dump request",
    lib.PSO_SD_STEP_RECV: "reading the sock_diag dump",
    lib.PSO_SD_STEP_PARSE: "parsing the sock_diag dump (malformed reply)",
    lib.PSO_SD_STEP_KERNEL: "sock_diag dump (the kernel answered with an error)",
}

#: Errors that mean "this host will not give us sock_diag": use /proc instead. EPROTONOSUPPORT /
#: EAFNOSUPPORT: no netlink or no sock_diag; ENOENT: no inet_diag handler (module missing);
#: EPERM / EACCES: a sandbox (seccomp, LSM) refuses it.
_REFUSED: Final = frozenset({errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.ENOENT,
                             errno.EPERM, errno.EACCES, errno.EOPNOTSUPP})


def _run_in(target: Entered, reads: FileReads | None,
            dumps: Sequence[tuple[object, object]]) -> OSError | None:
    """Read ``reads`` and run each (query, sink) dump inside ``target``, entering it ONCE.

    One native thread (csrc/netns.h ``pso_netns_look``) reads the files, then dumps in
    order, retrying an interrupted dump in place and stopping at the first that fails.
    Returns that failure as an OSError (None when every dump ran); failing to enter raises.
    """
    reqs = ffi.new("struct pso_netns_dump_req[]", max(1, len(dumps)))
    for k, (query, sink) in enumerate(dumps):
        reqs[k].q = query
        reqs[k].sink = sink
        reqs[k].tries = _DUMP_TRIES
    step = ffi.new("int *")
    files, nfiles = (ffi.NULL, 0) if reads is None else (reads.files, len(reads.paths))
    rc = lib.pso_netns_look(target.fd, files, nfiles, reqs, len(dumps), step)
    if rc:
        raise entry_error(rc, step[0], target)
    for k, (_, sink) in enumerate(dumps):
        if reqs[k].rc:
            return _trip_failure(reqs[k].rc, reqs[k].step, sink, target)
    return None


#: How many times a dump the kernel marks interrupted (NLM_F_DUMP_INTR: its tables changed
#: while it was read, so sockets may be missing or twice) is started again before giving up.
_DUMP_TRIES: Final = 4
_INCONSISTENT: Final = ("the socket tables changed while they were read (NLM_F_DUMP_INTR): "
                        "the listing would be inconsistent")
#: The dump's per-call settings (0: the C core's defaults, a 64 KiB first receive buffer,
#: grown to fit any datagram, and 10 s to wait for each datagram).
_RECV_SIZE = 0
_TIMEOUT_MS = 0
#: 1: dump the two families one at a time even where one dump would do (sink.split).
_SPLIT = 0
#: The message type of the one-dump request (0: TCPDIAG_GETSOCK): the seam of its fallback
#: (tests set a type the kernel refuses, as a kernel built without that request refuses it).
_UNSPEC_TYPE = 0
#: The native dump: the one seam of the retry loop (tests wrap it to mark dumps interrupted,
#: which the kernel does only when its tables change mid-dump).
_native_dump = lib.pso_sd_dump


def _timeout_text(sink: object) -> str:
    ms = sink.timeout_ms or lib.PSO_SD_TIMEOUT_MS  # type: ignore[attr-defined]
    return f"reading the sock_diag dump: no reply within {ms / 1000:g} s"


def _dump_failure(rc: int, sink: object) -> OSError:
    """Build the OSError for a failed dump from this call's sink (which step failed)."""
    step = sink.failed_step  # type: ignore[attr-defined]
    if rc == -errno.ETIMEDOUT and step == lib.PSO_SD_STEP_RECV:
        return os_error(rc, _timeout_text(sink))
    return os_error(rc, _STEP.get(step, "sock_diag dump"))


def _dump(query: object, sink: object) -> None:
    """Run one dump in the caller's namespace, again while the kernel marks it interrupted."""
    mark = ffi.new("struct pso_sd_mark *")
    for _ in range(_DUMP_TRIES):
        lib.pso_sd_sink_mark(sink, mark)
        rc = _native_dump(query, sink)
        if rc:
            raise _dump_failure(rc, sink)
        if not sink.interrupted:  # type: ignore[attr-defined]
            return
        lib.pso_sd_sink_rollback(sink, mark)  # and dump again from a clean slate
    raise OSError(errno.EAGAIN, f"{os.strerror(errno.EAGAIN)} (sock_diag dump interrupted "
                                f"{_DUMP_TRIES} times in a row: {_INCONSISTENT})")


_PROC_FILES: Final = ((socket.AF_INET, "tcp"), (socket.AF_INET6, "tcp6"))


def _read(path: str, target: Entered | None) -> bytes:
    if target is None:
        with open(path, "rb") as f:
            return f.read()
    (text,) = _read_in(target, [path])
    if isinstance(text, OSError):
        raise text
    return text


def _proc(query: object, sink: object, target: Entered | None = None) -> None:
    family = query.family  # type: ignore[attr-defined]  # cffi struct pso_sd_query
    for fam, name in _PROC_FILES:
        if family and family != fam:
            continue
        # thread-self, not self: a thread that joined another network namespace (setns)
        # must see that namespace's sockets, as its netlink socket would.
        path = f"/proc/thread-self/net/{name}"
        try:
            text = _read(path, target)
        except FileNotFoundError:
            if fam == socket.AF_INET6:
                continue  # IPv6 disabled: no IPv6 sockets
            raise
        rc = lib.pso_proc_parse(text, len(text), fam, query, sink)
        if rc < 0:
            raise os_error(rc, f"parsing {path} line {sink.bad_line}")  # type: ignore[attr-defined]


def _gather(queries: list[object], keep: bool, source: Source,
            target: Entered | None = None) -> object:
    """Run every query into one new sink (owned by ffi.gc: freed with its last reference)."""
    if source not in ("auto", "netlink", "proc"):
        raise InvalidConfigError("source", source, "'auto', 'netlink' or 'proc'")
    sink = _new_sink(keep)
    if source != "proc":
        try:
            if target is None:
                for query in queries:
                    _dump(query, sink)
            else:  # every query in one trip: one setns
                failure = _run_in(target, None, [(query, sink) for query in queries])
                if failure is not None:
                    raise failure
            return sink
        except OSError as err:
            if (source == "netlink" or err.errno not in _REFUSED
                    or isinstance(err, NetnsPermissionError)):
                raise
        # Refused: start again from /proc in a new sink, so no answer mixes the two sources.
        sink = _new_sink(keep)
    for query in queries:
        _proc(query, sink, target)
    return sink


def _new_sink(keep: bool) -> object:
    sink = new_sink(keep)
    sink.recv_size = _RECV_SIZE
    sink.timeout_ms = _TIMEOUT_MS
    sink.split = _SPLIT
    sink.unspec_type = _UNSPEC_TYPE
    return sink


# --- public API


def state_counts(
    *, port: int | None = None, family: int | None = None, source: Source = "auto",
    netns: NetnsArg = None,
) -> dict[TcpState, int]:
    """Return how many TCP sockets are in each state, like ``netstat -nat | awk | sort | uniq``.

    ``port`` keeps sockets whose local or remote port is ``port``; ``family`` is
    ``socket.AF_INET``, ``socket.AF_INET6`` or None for both. States with no socket are left
    out. Counted in C while the dump is read: no Python object per socket. ``source`` forces
    "netlink" or "proc"; "auto" uses netlink and falls back to /proc/net/tcp* when refused.
    ``netns``: another network namespace (a NetNamespace, an ``ip netns`` name, a path such
    as /proc/PID/ns/net, or a pid); entering one needs CAP_SYS_ADMIN (NetnsPermissionError).
    """
    query = _query(_ALL_STATES, port, family, 0)
    with opened(netns) as target:
        sink = _gather([query], False, source, target)
    counts = sink.counts  # type: ignore[attr-defined]
    result: dict[TcpState, int] = {}
    for number in range(len(STATES_BY_NUMBER)):
        if counts[number]:
            result[_state(number)] = int(counts[number])
    return result


def connections(
    *,
    states: Iterable[TcpState | int | str] | TcpState | int | str | None = None,
    port: int | None = None,
    family: int | None = None,
    with_info: bool = False,
    source: Source = "auto",
    netns: NetnsArg = None,
) -> list[Connection]:
    """Return every TCP socket on the host (in this network namespace), like ``ss -tan``.

    ``states``: TcpStates (or numbers, or names like "CLOSE_WAIT") to keep, None for all;
    SYN_RECV includes the kernel's request sockets, and NEW_SYN_RECV means SYN_RECV (request
    sockets come back labelled SYN_RECV either way). ``port``: sockets whose local or remote
    port is ``port``. ``family``: ``socket.AF_INET``, ``socket.AF_INET6`` or None for both.
    All three are filters the kernel runs. ``with_info`` attaches each socket's TcpInfo
    (like ``ss -tin``). Listeners come first, with their drop counts. ``source`` as in
    state_counts; from /proc there is no tcp_info, no listener backlog and no drops.
    ``netns`` as in state_counts: each Connection from another namespace carries its
    NetNamespace (a name, path or pid is looked up in ``namespaces()`` for it).
    """
    with opened(netns) as target:
        where: NetNamespace | None = None
        if target is not None and netns is not None:
            # Described from the descriptor just opened: the census stats, it opens nothing.
            where = describe(netns, os.fstat(target.fd).st_ino)
        with native_dump(states=states, port=port, family=family, with_info=with_info,
                         source=source, target=target, netns=where) as dump:
            return dump.connections()


class NativeDump:
    """The sockets of one dump, held in C memory: valid inside ``native_dump()``'s block only.

    ``sink`` is the cffi ``struct pso_sd_sink *`` that C code reads (csrc/sockdiag.h; the
    Prometheus collector's tally, csrc/tally.h, counts it and keeps only some records).
    """

    __slots__ = ("_blob", "_netns", "sink")

    def __init__(self, sink: object, netns: NetNamespace | None) -> None:
        self.sink = sink
        self._netns = netns
        self._blob: bytes | memoryview | None = None

    def counts(self) -> dict[TcpState, int]:
        """Sockets per state, as dumped (every state, 0 included)."""
        raw = self.sink.counts  # type: ignore[attr-defined]
        return {s: int(raw[s]) for s in TcpState if s < lib.PSO_SD_NSTATES}

    def connections(self) -> list[Connection]:
        """Decode the records the sink holds now (all of them, or what a tally kept)."""
        if self._blob is None:  # the first decode takes the tcp_info blob; later ones share it
            self._blob = _decoding.take_info(self.sink)
        return _records(self.sink, self._netns, self._blob)


@contextlib.contextmanager
def native_dump(
    *,
    states: Iterable[TcpState | int | str] | TcpState | int | str | None = None,
    port: int | None = None,
    family: int | None = None,
    with_info: bool = False,
    source: Source = "auto",
    target: Entered | None = None,
    netns: NetNamespace | None = None,
) -> Iterator[NativeDump]:
    """Dump the sockets ``connections()`` would list, keeping them in C memory.

    The records are freed with the last reference to the dump (ffi.gc).

    For code that counts the records where they are instead of building a Connection per
    socket. ``states``, ``port``, ``family``, ``with_info`` and ``source`` as in
    ``connections()`` (listeners in a query of their own, with their drop counts).
    ``target``: a namespace already open (``namespaces.opened()``: one descriptor serves
    every read of a scan), None for the caller's own; ``netns``: what the records carry as
    ``Connection.netns``.
    """
    queries = _queries(states, port, family, with_info)
    yield NativeDump(_gather(queries, True, source, target), netns)


def _queries(states: Iterable[TcpState | int | str] | TcpState | int | str | None,
             port: int | None, family: int | None, with_info: bool) -> list[object]:
    """Return the sock_diag queries of one listing (listeners in one of their own)."""
    mask = state_mask(states)
    listen = mask & (1 << TcpState.LISTEN)
    others = mask & ~(1 << TcpState.LISTEN)
    ext = lib.PSO_SD_EXT_INFO if with_info else 0
    queries = []
    # Listeners are dumped on their own so that only they carry SKMEMINFO (their drop
    # counts): the listening hash is small, and the big established dump stays lean.
    if listen:
        queries.append(_query(listen, port, family, ext | lib.PSO_SD_EXT_SKMEMINFO))
    if others:
        queries.append(_query(others, port, family, ext))
    return queries


# --- one trip: a look's files and dumps, the namespace entered once


class DumpSpec(NamedTuple):
    """One dump of a ``trip``: what ``native_dump`` takes; ``keep`` False only counts."""

    states: Iterable[TcpState | int | str] | TcpState | int | str | None = None
    port: int | None = None
    with_info: bool = False
    keep: bool = True


class Trip(NamedTuple):
    """What one ``trip`` read: each file's bytes or OSError, and one NativeDump per DumpSpec.

    ``error``: the first dump that failed (the dumps are then not to be read), else None.
    """

    files: list[bytes | OSError]
    dumps: list[NativeDump]
    error: OSError | None


def trip(target: Entered | None, paths: Sequence[str], specs: Sequence[DumpSpec], *,
         netns: NetNamespace | None = None) -> Trip:
    """Read ``paths`` and run every dump of ``specs``, entering ``target`` ONCE.

    For another namespace, one native thread (csrc/netns.h ``pso_netns_look``) enters it,
    reads the files and runs the dumps into their sinks, retrying an interrupted dump there;
    decoding and counting happen afterwards, in the caller's thread, from the filled sinks.
    Only what is rare takes another trip: a file larger than the first buffer (read again,
    grown), and a host that refuses sock_diag (the /proc fallback, as ``connections()``).
    ``target`` None: the caller's own namespace, no thread. Failing to enter raises; a failed
    dump is the Trip's ``error``. ``netns``: what the records carry as ``Connection.netns``.
    """
    plans = [(_queries(d.states, d.port, None, d.with_info), d.keep) for d in specs]
    if target is None:
        files = read_files(None, paths)
        sinks: list[object] = []
        try:
            for queries, keep in plans:
                sinks.append(_gather(queries, keep, "auto"))
        except OSError as err:
            return Trip(files, [], err)
        return Trip(files, [NativeDump(s, netns) for s in sinks], None)
    reads = FileReads(paths)
    sinks = [_new_sink(keep) for _, keep in plans]
    failure = _run_in(target, reads, [(query, sinks[i]) for i, (queries, _) in enumerate(plans)
                                      for query in queries])
    files = reads.results(target)
    if failure is None:
        return Trip(files, [NativeDump(s, netns) for s in sinks], None)
    if failure.errno not in _REFUSED:
        return Trip(files, [], failure)
    try:  # sock_diag refused: every dump again from /proc, in new sinks (no mixed answer)
        sinks = [_gather(queries, keep, "proc", target) for queries, keep in plans]
    except OSError as proc_err:
        return Trip(files, [], proc_err)
    return Trip(files, [NativeDump(s, netns) for s in sinks], None)


def _trip_failure(rc: int, step: int, sink: object, target: Entered) -> OSError:
    """Return the OSError for a dump of a trip that failed in ``target``."""
    if step == 0 and rc == -errno.EAGAIN:
        return OSError(errno.EAGAIN, f"{os.strerror(errno.EAGAIN)} (sock_diag dump "
                                     f"interrupted {_DUMP_TRIES} times in a row in "
                                     f"{target.what}: {_INCONSISTENT})")
    if rc == -errno.ETIMEDOUT and step == lib.PSO_SD_STEP_RECV:
        return os_error(rc, f"{_timeout_text(sink)} in {target.what}")
    return os_error(rc, f"{_STEP.get(step, 'sock_diag dump')} in {target.what}")


def _parse_dump(datagrams: Iterable[bytes], *, with_info: bool = True) -> list[Connection]:
    """Decode the datagrams of one sock_diag dump reply (what the kernel sent, in order).

    Raises OSError: the kernel's error from NLMSG_ERROR, EBADMSG for a malformed reply, or
    EBADMSG when the datagrams end before NLMSG_DONE (a dump read only in part), EAGAIN when
    a message is flagged NLM_F_DUMP_INTR (inconsistent: the live dump would be retried).
    """
    sink = _new_sink(True)
    rc = lib.PSO_SD_MORE
    for data in datagrams:
        rc = lib.pso_sd_parse(data, len(data), sink)
        if rc < 0:
            raise os_error(rc, "parsing a sock_diag reply")
    if rc != lib.PSO_SD_DONE:
        raise OSError(errno.EBADMSG, "sock_diag reply ends before NLMSG_DONE (truncated)")
    if sink.interrupted:  # type: ignore[attr-defined]
        raise OSError(errno.EAGAIN, f"{os.strerror(errno.EAGAIN)} (sock_diag reply marked "
                                    f"interrupted: {_INCONSISTENT})")
    conns = _records(sink)
    return conns if with_info else [c._replace(info=None) for c in conns]


def parse_proc(text: bytes, family: int, *, port: int | None = None) -> list[Connection]:
    """Decode the text of /proc/net/tcp (AF_INET) or /proc/net/tcp6 (AF_INET6)."""
    query = _query(_ALL_STATES, port, None, 0)
    sink = _new_sink(True)
    rc = lib.pso_proc_parse(text, len(text), family, query, sink)
    if rc < 0:
        line = sink.bad_line  # type: ignore[attr-defined]  # this call's, in its sink
        raise os_error(rc, f"parsing /proc/net/tcp text, line {line}")
    return _records(sink)

