"""TCP_INFO: every field the running kernel returns, for one socket or thousands in one call.

The kernel copies ``min(buffer, its struct tcp_info)`` and reports the length it wrote. glibc's
``struct tcp_info`` knows only the first 104 bytes and the build host's ``linux/tcp.h`` may be
older than the running kernel, so this module keeps its own table of every field (offset, size,
bits, unit, the kernel version that added it) and decodes by the length actually returned: a
field beyond it is None, never 0, and bytes beyond the known 280 are kept in ``extra`` so a newer
kernel is noticed instead of guessed at.

``TcpInfo`` is a read-only view over the returned bytes; each attribute is decoded when read,
so reading three fields costs three small decodes, not sixty.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from . import _platform
from ._core import ffi, lib
from ._sock import SocketLike, closed_during_call, fileno_of, filenos_of, os_error, replaced
from .errors import InvalidConfigError, UnsupportedPlatformError

__all__ = [
    "TCP_INFO_FIELDS",
    "TCP_INFO_KNOWN_SIZE",
    "TcpInfo",
    "TcpInfoField",
    "TcpInfoPoller",
    "TcpInfoReader",
    "TcpState",
    "poll_tcp_info",
    "tcp_info",
    "tcp_info_fields",
    "tcp_info_reader",
]


# --- states


class TcpState(IntEnum):
    """A TCP state with the kernel's number (include/net/tcp_states.h).

    ``label`` is the netstat spelling (``"SYN_RECV"``, ``"CLOSE_WAIT"``); ``ss_label`` is how
    ``ss`` prints it (``"SYN-RECV"``, ``"CLOSE-WAIT"``). NEW_SYN_RECV is the kernel's state for
    request sockets; socket dumps report those as SYN_RECV. BOUND_INACTIVE is a pseudo-state
    that only inet_diag dumps use (bound but neither listening nor connected).
    """

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    NEW_SYN_RECV = 12
    BOUND_INACTIVE = 13

    def __str__(self) -> str:
        return self.name  # print(info.state) shows ESTABLISHED, not the IntEnum's 1

    @property
    def label(self) -> str:
        """The netstat spelling, e.g. ``"FIN_WAIT2"``."""
        return self.name

    @property
    def ss_label(self) -> str:
        """The spelling ``ss`` prints, e.g. ``"FIN-WAIT-2"``, ``"ESTAB"``, ``"UNCONN"``."""
        return _SS_LABELS[self]


_SS_LABELS: Final[dict[TcpState, str]] = {
    TcpState.ESTABLISHED: "ESTAB",
    TcpState.SYN_SENT: "SYN-SENT",
    TcpState.SYN_RECV: "SYN-RECV",
    TcpState.FIN_WAIT1: "FIN-WAIT-1",
    TcpState.FIN_WAIT2: "FIN-WAIT-2",
    TcpState.TIME_WAIT: "TIME-WAIT",
    TcpState.CLOSE: "UNCONN",
    TcpState.CLOSE_WAIT: "CLOSE-WAIT",
    TcpState.LAST_ACK: "LAST-ACK",
    TcpState.LISTEN: "LISTEN",
    TcpState.CLOSING: "CLOSING",
    TcpState.NEW_SYN_RECV: "NEW-SYN-RECV",
    TcpState.BOUND_INACTIVE: "BOUND-INACTIVE",
}


# --- the field table


@dataclass(frozen=True, slots=True)
class TcpInfoField:
    """One field of Linux's ``struct tcp_info``, named as the kernel names it without ``tcpi_``.

    ``offset`` and ``size`` locate the field's storage unit in bytes (native byte order);
    ``bits`` is ``(first_bit, width)`` for a bitfield inside that unit, counted from the least
    significant bit as little-endian hosts lay them out. ``kernel`` is the version that added
    the field at this place; ``until`` the version from which these bytes mean something else
    (None while they still mean this).
    """

    name: str
    offset: int
    size: int
    unit: str
    kernel: str
    meaning: str
    bits: tuple[int, int] | None = None
    until: str | None = None

    @property
    def end(self) -> int:
        """The byte offset just past the field's storage unit."""
        return self.offset + self.size

    @property
    def ctype(self) -> str:
        """The C type as uapi/linux/tcp.h declares it, e.g. ``__u32`` or ``__u8 :4``."""
        base = f"__u{8 * self.size}"
        return base if self.bits is None else f"{base} :{self.bits[1]}"


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _f(name: str, offset: int, size: int, unit: str, kernel: str, meaning: str,
       bits: tuple[int, int] | None = None, until: str | None = None) -> TcpInfoField:
    return TcpInfoField(name, offset, size, unit, kernel, meaning, bits, until)


#: Every field of struct tcp_info the project knows, in offset order (include/uapi/linux/tcp.h).
#: Bytes 276-279 changed meaning in kernel 7.0; both layouts are listed (see ``until``).
TCP_INFO_FIELDS: Final[tuple[TcpInfoField, ...]] = (
    _f("state", 0, 1, "state", "2.6", "TCP state, as a TcpState"),
    _f("ca_state", 1, 1, "enum", "2.6",
       "congestion-control state: 0 Open, 1 Disorder, 2 CWR, 3 Recovery, 4 Loss"),
    _f("retransmits", 2, 1, "count", "2.6",
       "timeouts while retransmitting the oldest unacknowledged segment; above 0 means the "
       "peer is not acknowledging"),
    _f("probes", 3, 1, "count", "2.6",
       "keepalive or zero-window probes sent and not answered"),
    _f("backoff", 4, 1, "count", "2.6",
       "exponential backoff steps of the retransmit or probe timer"),
    _f("options", 5, 1, "flags", "2.6",
       "negotiated options: 1 timestamps, 2 SACK, 4 window scaling, 8 ECN, 16 ECN seen, "
       "32 SYN data acked, 64 microsecond timestamps, 128 Fast Open child"),
    _f("snd_wscale", 6, 1, "shift", "2.6",
       "window scale the peer announced (its advertised windows are shifted by this)", (0, 4)),
    _f("rcv_wscale", 6, 1, "shift", "2.6",
       "window scale we announced (our advertised windows are shifted by this)", (4, 4)),
    _f("delivery_rate_app_limited", 7, 1, "bool", "4.9",
       "1 when the last delivery_rate sample was limited by the application, not the network",
       (0, 1)),
    _f("fastopen_client_fail", 7, 1, "enum", "5.5",
       "why a Fast Open client fell back: 0 unspecified, 1 no cookie, 2 SYN data not acked, "
       "3 SYN retransmitted", (1, 2)),
    _f("rto", 8, 4, "us", "2.6", "retransmission timeout"),
    _f("ato", 12, 4, "us", "2.6", "delayed-ACK timeout"),
    _f("snd_mss", 16, 4, "bytes", "2.6", "maximum segment size used for sending"),
    _f("rcv_mss", 20, 4, "bytes", "2.6", "estimate of the peer's segment size"),
    _f("unacked", 24, 4, "segments", "2.6",
       "segments sent and not yet acknowledged; on a LISTEN socket: the accept-queue length"),
    _f("sacked", 28, 4, "segments", "2.6",
       "segments selectively acknowledged; on a LISTEN socket: the accept-queue limit (backlog)"),
    _f("lost", 32, 4, "segments", "2.6", "segments currently considered lost"),
    _f("retrans", 36, 4, "segments", "2.6", "retransmitted segments not yet acknowledged"),
    _f("fackets", 40, 4, "segments", "2.6", "forward-acknowledged segments; always 0 since 4.18"),
    _f("last_data_sent", 44, 4, "ms", "2.6", "time since data was last sent"),
    _f("last_ack_sent", 48, 4, "ms", "2.6", "never filled in by the kernel: always 0"),
    _f("last_data_recv", 52, 4, "ms", "2.6", "time since data was last received"),
    _f("last_ack_recv", 56, 4, "ms", "2.6",
       "time since an ACK was last received (a live idle peer still ACKs keepalive probes)"),
    _f("pmtu", 60, 4, "bytes", "2.6", "path MTU"),
    _f("rcv_ssthresh", 64, 4, "bytes", "2.6", "current limit on the receive window we offer"),
    _f("rtt", 68, 4, "us", "2.6", "smoothed round-trip time"),
    _f("rttvar", 72, 4, "us", "2.6", "round-trip time variation"),
    _f("snd_ssthresh", 76, 4, "segments", "2.6",
       "slow-start threshold (2147483647: not yet set)"),
    _f("snd_cwnd", 80, 4, "segments", "2.6", "congestion window"),
    _f("advmss", 84, 4, "bytes", "2.6", "segment size advertised to the peer"),
    _f("reordering", 88, 4, "segments", "2.6", "estimated reordering distance"),
    _f("rcv_rtt", 92, 4, "us", "2.6", "round-trip time as estimated by the receiver"),
    _f("rcv_space", 96, 4, "bytes", "2.6", "receive-buffer autotuning estimate"),
    _f("total_retrans", 100, 4, "segments", "2.6", "segments retransmitted over the lifetime"),
    _f("pacing_rate", 104, 8, "bytes/s", "3.15", "current pacing rate (2**64-1: unlimited)"),
    _f("max_pacing_rate", 112, 8, "bytes/s", "3.15",
       "SO_MAX_PACING_RATE limit (2**64-1: none)"),
    _f("bytes_acked", 120, 8, "bytes", "4.1", "bytes of our data the peer acknowledged"),
    _f("bytes_received", 128, 8, "bytes", "4.1", "bytes of the peer's data received in order"),
    _f("segs_out", 136, 4, "segments", "4.2", "segments sent, pure ACKs and retransmits included"),
    _f("segs_in", 140, 4, "segments", "4.2", "segments received, pure ACKs included"),
    _f("notsent_bytes", 144, 4, "bytes", "4.6", "bytes queued to send and not sent yet"),
    _f("min_rtt", 148, 4, "us", "4.6",
       "smallest round-trip time seen in the last net.ipv4.tcp_min_rtt_wlen seconds (300); "
       "4294967295 (~0U) before the first RTT sample"),
    _f("data_segs_in", 152, 4, "segments", "4.6", "segments received that carried data"),
    _f("data_segs_out", 156, 4, "segments", "4.6", "segments sent that carried data"),
    _f("delivery_rate", 160, 8, "bytes/s", "4.9", "most recent delivery-rate sample"),
    _f("busy_time", 168, 8, "us", "4.10", "time spent with data in flight"),
    _f("rwnd_limited", 176, 8, "us", "4.10", "time sending was limited by the peer's window"),
    _f("sndbuf_limited", 184, 8, "us", "4.10", "time sending was limited by our send buffer"),
    _f("delivered", 192, 4, "segments", "4.18", "segments delivered, retransmits included"),
    _f("delivered_ce", 196, 4, "segments", "4.18", "delivered segments the peer echoed as CE"),
    _f("bytes_sent", 200, 8, "bytes", "4.19", "bytes sent, retransmits included"),
    _f("bytes_retrans", 208, 8, "bytes", "4.19", "bytes retransmitted"),
    _f("dsack_dups", 216, 4, "count", "4.19",
       "duplicate-SACK blocks received (spurious retransmits)"),
    _f("reord_seen", 220, 4, "count", "4.19", "reordering events seen"),
    _f("rcv_ooopack", 224, 4, "packets", "5.4", "packets received out of order"),
    _f("snd_wnd", 228, 4, "bytes", "5.4", "receive window the peer advertised, after scaling"),
    _f("rcv_wnd", 232, 4, "bytes", "6.2", "receive window we advertised, after scaling"),
    _f("rehash", 236, 4, "count", "6.2", "path rehash attempts (PLB or timeouts)"),
    _f("total_rto", 240, 2, "count", "6.7", "retransmission timeouts, SYN timeouts included"),
    _f("total_rto_recoveries", 242, 2, "count", "6.7", "recoveries started by a timeout"),
    _f("total_rto_time", 244, 4, "ms", "6.7",
       "total time spent in RTO recovery over the connection's life, the current one "
       "included (a sum, not a time since)"),
    _f("received_ce", 248, 4, "segments", "6.18", "CE-marked segments received"),
    _f("delivered_e1_bytes", 252, 4, "bytes", "6.18",
       "bytes delivered with ECT(1), as the peer reports (AccECN)"),
    _f("delivered_e0_bytes", 256, 4, "bytes", "6.18",
       "bytes delivered with ECT(0), as the peer reports (AccECN)"),
    _f("delivered_ce_bytes", 260, 4, "bytes", "6.18",
       "bytes delivered with CE, as the peer reports (AccECN)"),
    _f("received_e1_bytes", 264, 4, "bytes", "6.18", "bytes received with ECT(1) (AccECN)"),
    _f("received_e0_bytes", 268, 4, "bytes", "6.18", "bytes received with ECT(0) (AccECN)"),
    _f("received_ce_bytes", 272, 4, "bytes", "6.18", "bytes received with CE (AccECN)"),
    _f("accecn_fail_mode", 276, 2, "flags", "6.18",
       "AccECN failures: 1 ACE send, 2 ACE receive, 4 option send, 8 option receive",
       until="7.0"),
    _f("accecn_opt_seen", 278, 2, "enum", "6.18",
       "AccECN option seen: 0 no, 1 empty, 2 with counters, 3 broken", until="7.0"),
    _f("ecn_mode", 276, 4, "enum", "7.0",
       "ECN in use: 0 none, 1 RFC 3168, 2 AccECN, 3 negotiation pending", (0, 2)),
    _f("accecn_opt_seen", 276, 4, "enum", "7.0",
       "AccECN option seen: 0 no, 1 empty, 2 with counters, 3 broken", (2, 2)),
    _f("accecn_fail_mode", 276, 4, "flags", "7.0",
       "AccECN failures: 1 ACE send, 2 ACE receive, 4 option send, 8 option receive", (4, 4)),
    _f("options2", 276, 4, "flags", "7.0", "more negotiated options and features", (8, 24)),
)

#: Bytes of struct tcp_info this table covers; more from the kernel land in ``TcpInfo.extra``.
TCP_INFO_KNOWN_SIZE: Final = max(f.end for f in TCP_INFO_FIELDS)

#: Every field name once, in table order: the attributes of TcpInfo.
FIELD_NAMES: Final[tuple[str, ...]] = tuple(dict.fromkeys(f.name for f in TCP_INFO_FIELDS))

# Bytes whose meaning depends on the kernel version, not only on the returned length.
_RESHAPED: Final = tuple((f.offset, f.end) for f in TCP_INFO_FIELDS if f.until is not None)


def _versioned(field: TcpInfoField) -> bool:
    return any(field.offset < end and start < field.end for start, end in _RESHAPED)


#: The running kernel's (major, minor), which picks the layout of reshaped bytes.
RUNNING_KERNEL: Final = _platform.RUNNING_KERNEL


def tcp_info_fields(kernel: tuple[int, int] | None = RUNNING_KERNEL) -> tuple[TcpInfoField, ...]:
    """Return the fields as laid out by ``kernel`` (default: the running one), offset order.

    A field is decoded when the kernel returned all of its bytes; only bytes that changed
    meaning between versions (276-279 in 7.0) also depend on the version. With ``kernel=None``
    those bytes are left undecoded.
    """
    chosen = []
    for f in TCP_INFO_FIELDS:
        if _versioned(f):
            if kernel is None or kernel < _version(f.kernel):
                continue
            if f.until is not None and kernel >= _version(f.until):
                continue
        chosen.append(f)
    return tuple(chosen)


# --- the view


_STATES: Final[tuple[TcpState | int, ...]] = tuple(
    TcpState(n) if n in TcpState._value2member_map_ else n for n in range(256)
)
_LITTLE: Final = sys.byteorder == "little"
_FORMATS: Final = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _getter_source(f: TcpInfoField, shared: bool) -> str:
    # A shared view reads a batch's buffer from its _off; one that owns its bytes reads at
    # constant offsets.
    at = (f"self._off + {f.offset}" if f.offset else "self._off") if shared else str(f.offset)
    if f.name == "state":
        return f"_STATES[self._buf[{at}]]"
    value = f"self._buf[{at}]" if f.size == 1 else f"_U{f.size}(self._buf, {at})[0]"
    if f.bits is None:
        return value
    first, width = f.bits
    if not _LITTLE:  # big-endian compilers allocate bitfields from the most significant bit
        first = 8 * f.size - first - width
    mask = (1 << width) - 1
    return f"({value} >> {first}) & {mask}" if first else f"{value} & {mask}"


_GETTERS: dict[tuple[TcpInfoField, bool], property] = {}


def _getters(fields: Iterable[TcpInfoField], shared: bool) -> dict[str, property]:
    """Return one property per field, compiling the ones not compiled yet.

    Each getter reads at constant offsets, with no table lookup when read; each (field, shared)
    getter is compiled once and reused by every class.
    """
    missing = [f for f in fields if (f, shared) not in _GETTERS]
    if missing:
        namespace: dict[str, Any] = {
            "_STATES": _STATES,
            **{f"_U{size}": struct.Struct("=" + fmt).unpack_from
               for size, fmt in _FORMATS.items()},
        }
        source = "".join(f"def {f.name}(self):\n    return {_getter_source(f, shared)}\n"
                         for f in missing)
        exec(source, namespace)  # source built from the constant table above
        for f in missing:
            _GETTERS[f, shared] = property(namespace[f.name])
    return {f.name: _GETTERS[f, shared] for f in fields}


class TcpInfo:
    """The kernel's TCP_INFO for one socket, decoded by the length the kernel returned.

    One read-only attribute per field of ``TCP_INFO_FIELDS`` (``rtt``, ``snd_cwnd``,
    ``retransmits``, ``last_data_recv``, ``bytes_acked``, ...); a field the kernel did not
    return is None. ``state`` is a TcpState. ``size`` is the byte count the kernel returned,
    ``raw`` those bytes, ``extra`` any bytes beyond the known layout (a newer kernel).
    On a LISTEN socket ``accept_queue`` and ``accept_backlog`` give the accept-queue length
    and limit. Build one from bytes (e.g. an INET_DIAG_INFO attribute) with ``from_bytes``.
    """

    # The bytes live in _buf (bytes, or a memoryview of a listing's native tcp_info blob) from
    # offset _off: a batch's views share one buffer, which costs one allocation per socket
    # instead of two (measured: copying each entry out doubled the per-socket cost of
    # poll_tcp_info).
    # The slots are _BufferView's: the full view of a getsockopt (_FULL) is its bytes itself
    # (a ctypes.Structure), which no slot of a base may lay out differently.
    __slots__ = ()
    _buf: bytes | memoryview
    _off: int
    #: Set per generated subclass: the length it decodes (for views that own their bytes, the
    #: length of those bytes) and the kernel layout it follows.
    _size: int
    _kernel: tuple[int, int] | None = None

    if TYPE_CHECKING:
        state: TcpState | None
        ca_state: int | None
        retransmits: int | None
        probes: int | None
        backoff: int | None
        options: int | None
        snd_wscale: int | None
        rcv_wscale: int | None
        delivery_rate_app_limited: int | None
        fastopen_client_fail: int | None
        rto: int | None
        ato: int | None
        snd_mss: int | None
        rcv_mss: int | None
        unacked: int | None
        sacked: int | None
        lost: int | None
        retrans: int | None
        fackets: int | None
        last_data_sent: int | None
        last_ack_sent: int | None
        last_data_recv: int | None
        last_ack_recv: int | None
        pmtu: int | None
        rcv_ssthresh: int | None
        rtt: int | None
        rttvar: int | None
        snd_ssthresh: int | None
        snd_cwnd: int | None
        advmss: int | None
        reordering: int | None
        rcv_rtt: int | None
        rcv_space: int | None
        total_retrans: int | None
        pacing_rate: int | None
        max_pacing_rate: int | None
        bytes_acked: int | None
        bytes_received: int | None
        segs_out: int | None
        segs_in: int | None
        notsent_bytes: int | None
        min_rtt: int | None
        data_segs_in: int | None
        data_segs_out: int | None
        delivery_rate: int | None
        busy_time: int | None
        rwnd_limited: int | None
        sndbuf_limited: int | None
        delivered: int | None
        delivered_ce: int | None
        bytes_sent: int | None
        bytes_retrans: int | None
        dsack_dups: int | None
        reord_seen: int | None
        rcv_ooopack: int | None
        snd_wnd: int | None
        rcv_wnd: int | None
        rehash: int | None
        total_rto: int | None
        total_rto_recoveries: int | None
        total_rto_time: int | None
        received_ce: int | None
        delivered_e1_bytes: int | None
        delivered_e0_bytes: int | None
        delivered_ce_bytes: int | None
        received_e1_bytes: int | None
        received_e0_bytes: int | None
        received_ce_bytes: int | None
        accecn_fail_mode: int | None
        accecn_opt_seen: int | None
        ecn_mode: int | None
        options2: int | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("TcpInfo comes from tcp_info(), poll_tcp_info() or TcpInfo.from_bytes()")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *,
                   kernel: tuple[int, int] | None = RUNNING_KERNEL) -> TcpInfo:
        """Decode raw struct tcp_info bytes of any length (getsockopt, INET_DIAG_INFO).

        Fields beyond ``len(data)`` are None; bytes beyond the known layout are kept in
        ``extra``. ``kernel`` (default: the running one) picks the layout of bytes whose meaning
        changed between versions; pass the producing host's version for captured bytes.
        """
        # Called once per socket by host-wide dumps (INET_DIAG_INFO): keep the common case to
        # a length check and one object.
        if kernel == RUNNING_KERNEL and len(data) == _FULL_SIZE and not isinstance(data, str):
            return _FULL_FROM(data)  # a ctypes copy of any buffer's bytes
        raw = data if type(data) is bytes else bytes(data)
        view = _NEW(_class_for(len(raw), kernel, False))
        view._buf = raw
        return view

    @property
    def size(self) -> int:
        """Bytes the kernel returned (280 on 6.18; 104 on 2.6-era kernels)."""
        return self._size

    @property
    def raw(self) -> bytes:
        """The bytes as the kernel returned them."""
        # bytes() of a bytes slice is that slice; a listing's views read a native blob.
        return bytes(self._buf[self._off:self._off + self._size])

    @property
    def extra(self) -> bytes:
        """Bytes beyond the layout this version knows (empty unless the kernel is newer)."""
        known = min(self._size, TCP_INFO_KNOWN_SIZE)
        return bytes(self._buf[self._off + known:self._off + self._size])

    @property
    def kernel(self) -> tuple[int, int] | None:
        """The kernel version whose layout decoded the version-dependent bytes."""
        return self._kernel

    @property
    def accept_queue(self) -> int | None:
        """On a LISTEN socket: connections waiting in the accept queue; otherwise None."""
        return self.unacked if self.state == TcpState.LISTEN else None

    @property
    def accept_backlog(self) -> int | None:
        """On a LISTEN socket: the accept-queue limit (listen backlog); otherwise None."""
        return self.sacked if self.state == TcpState.LISTEN else None

    def as_dict(self) -> dict[str, object]:
        """Return every field (None where not returned) for JSON; state as its label."""
        out: dict[str, object] = {"size": self.size}
        for name in FIELD_NAMES:
            value = getattr(self, name)
            out[name] = value.label if isinstance(value, TcpState) else value
        out["extra"] = self.extra.hex()
        return out

    def __repr__(self) -> str:
        state = self.state
        shown = [f"state={state.label if isinstance(state, TcpState) else state}",
                 f"size={self.size}"]
        for name in _REPR_FIELDS:
            value = getattr(self, name)
            if value is not None:
                shown.append(f"{name}={value}")
        if self.extra:
            shown.append(f"extra={len(self.extra)} bytes")
        return f"TcpInfo({', '.join(shown)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TcpInfo):
            return NotImplemented
        return self.raw == other.raw and self._kernel == other._kernel

    def __hash__(self) -> int:
        return hash(self.raw)

    def __reduce__(self) -> tuple[Any, tuple[bytes, tuple[int, int] | None]]:
        return (_restore, (self.raw, self._kernel))


_REPR_FIELDS: Final = ("rtt", "rttvar", "rto", "snd_cwnd", "retransmits", "probes", "unacked",
                       "lost", "total_retrans", "last_data_recv", "last_ack_recv",
                       "bytes_acked", "bytes_received", "notsent_bytes")

_NEW = object.__new__


def _restore(raw: bytes, kernel: tuple[int, int] | None) -> TcpInfo:
    return TcpInfo.from_bytes(raw, kernel=kernel)


_CLASSES: dict[tuple[int, tuple[int, int] | None, int], type[_BufferView]] = {}
_BY_LENGTH: dict[tuple[int, tuple[int, int] | None, bool], type[_BufferView]] = {}
_CLASSES_LOCK = threading.Lock()


def _class_for(size: int, kernel: tuple[int, int] | None, shared: bool) -> type[_BufferView]:
    """Return the TcpInfo subclass that decodes ``size`` bytes laid out by ``kernel``.

    Fields the kernel did not return are plain ``None`` class attributes, so no attribute read
    checks a length. ``shared`` views read a batch's buffer from their ``_off``; the others own
    their bytes and read at constant offsets (one attribute load and one addition less per
    field read, and one less store per view). Classes are keyed by the fields present, not the
    length, so arbitrary lengths given to from_bytes make at most one class per field.
    """
    cls = _BY_LENGTH.get((size, kernel, shared))
    if cls is not None:  # the hot path: from_bytes per netlink entry, every batch
        return cls
    present = tuple(f for f in tcp_info_fields(kernel) if f.end <= size)
    # A batch holds one length (the kernel's), which its shared views take from the class.
    key = (len(present), kernel, size if shared else -1)
    with _CLASSES_LOCK:
        cls = _CLASSES.get(key)
        if cls is None:
            cls = _CLASSES[key] = _new_class(present, kernel, size, shared)
        if len(_BY_LENGTH) < 4096:  # bounded: past it, odd lengths take the slower lookup
            _BY_LENGTH[size, kernel, shared] = cls
    return cls


def shared_view_class(size: int, kernel: tuple[int, int] | None) -> type[_BufferView]:
    """Return the TcpInfo class of views reading ``size`` bytes in a buffer shared by many.

    Each view reads at its ``_off`` in a batch's bytes or a listing's tcp_info blob, laid out
    by ``kernel``.

    For the host-wide listing's decoder (host/records.py), which builds its views inline.
    """
    return _class_for(size, kernel, True)


def _new_class(present: tuple[TcpInfoField, ...], kernel: tuple[int, int] | None, size: int,
               shared: bool) -> type[_BufferView]:
    body: dict[str, Any] = dict.fromkeys(FIELD_NAMES)
    body.update(_getters(present, shared))
    body["__slots__"] = ()
    body["__module__"] = __name__
    body["__qualname__"] = "TcpInfo"
    body["__doc__"] = TcpInfo.__doc__
    body["_kernel"] = kernel
    if shared:
        body["_size"] = size
    else:
        body["_off"] = 0  # shadows the base's slot: these views start at 0
        body["_size"] = property(_own_size)
    return type("TcpInfo", (_BufferView,), body)


class _BufferView(TcpInfo):
    """A TcpInfo reading its bytes in ``_buf`` from ``_off``: its own, or a batch's or listing's."""

    __slots__ = ("_buf", "_off")


#: Sets a shared view's offset (the slot's member descriptor): host/records.py calls it through
#: map() for a listing's views, with no Python frame per socket.
set_view_offset: Final[Callable[[TcpInfo, int], None]] = _BufferView.__dict__["_off"].__set__


_C_TYPES: Final = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32,
                   8: ctypes.c_uint64}


def _read_only(view: TcpInfo, name: str, value: object) -> None:
    raise AttributeError(f"TcpInfo is read-only: cannot set {name!r}")


def _struct_extra(view: TcpInfo) -> bytes:
    return bytes(cast(Any, view))[TCP_INFO_KNOWN_SIZE:]


def _struct_class(kernel: tuple[int, int] | None) -> type[TcpInfo]:
    """Return the view of a whole ``TCP_INFO_KNOWN_SIZE`` struct that is its bytes.

    A ``ctypes.Structure`` laid out from the field table (never a C header's struct tcp_info):
    each plain field is read by ctypes at C level, with no Python frame per attribute, where a
    ``_BufferView``'s getter is a Python function (about 900 instructions a read). ``state``
    (a TcpState) and the bit fields are Python getters over their byte. tcp_info() and
    from_bytes() make it with one ``from_buffer_copy`` of the returned bytes.
    """
    size = TCP_INFO_KNOWN_SIZE
    present = tuple(f for f in tcp_info_fields(kernel) if f.end <= size)
    units: dict[tuple[int, int], list[TcpInfoField]] = {}
    for f in present:
        units.setdefault((f.offset, f.size), []).append(f)
    fields: list[tuple[str, Any]] = []
    getters: list[str] = []
    at = 0
    for (offset, width), members in sorted(units.items()):
        if offset < at:  # pragma: no cover - a table edit
            raise ImportError(f"tcp_info fields overlap at byte {offset}")
        if offset > at:
            fields.append((f"_gap{at}", ctypes.c_uint8 * (offset - at)))
        (only, *more) = members
        if not more and only.bits is None and only.name != "state":
            fields.append((only.name, _C_TYPES[width]))
        else:
            unit = f"_u{offset}"
            fields.append((unit, _C_TYPES[width]))
            for f in members:
                getters.append(f"def {f.name}(self):\n    return "
                               + _unit_source(f, f"self.{unit}") + "\n")
        at = offset + width
    if size > at:
        fields.append(("_tail", ctypes.c_uint8 * (size - at)))
    namespace: dict[str, Any] = {"_STATES": _STATES}
    exec("".join(getters), namespace)  # source built from the constant table above
    names = {f.name for f in present}
    body: dict[str, Any] = {n: None for n in FIELD_NAMES if n not in names}
    body.update({f.name: property(namespace[f.name]) for f in present if f.name in namespace})
    body.update(_pack_=1, _fields_=fields, __slots__=(), __module__=__name__,
                __qualname__="TcpInfo", __doc__=TcpInfo.__doc__, _kernel=kernel, _size=size,
                raw=property(bytes), extra=property(_struct_extra), __setattr__=_read_only)
    cls = type("TcpInfo", (TcpInfo, ctypes.Structure), body)
    # Checked here, once: every plain field where the table puts it, the whole struct's size.
    for f in present:
        member = cls.__dict__.get(f.name)
        where = (getattr(member, "offset", f.offset), getattr(member, "size", f.size))
        if where != (f.offset, f.size):  # pragma: no cover - a table edit
            raise ImportError(f"tcp_info field {f.name} laid out at {where}")
    if ctypes.sizeof(cls) != size:  # pragma: no cover - a table edit
        raise ImportError(f"the tcp_info struct view is {ctypes.sizeof(cls)} bytes, not {size}")
    return cls


def _unit_source(f: TcpInfoField, value: str) -> str:
    """Return the expression of field ``f`` (state, a bit field) read from its unit ``value``."""
    if f.name == "state":
        return f"_STATES[{value}]"
    if f.bits is None:
        return value
    first, width = f.bits
    if not _LITTLE:  # big-endian compilers allocate bitfields from the most significant bit
        first = 8 * f.size - first - width
    mask = (1 << width) - 1
    return f"({value} >> {first}) & {mask}" if first else f"{value} & {mask}"


def _own_size(view: TcpInfo) -> int:
    return len(view._buf)


# --- reading sockets


def _unsupported() -> UnsupportedPlatformError:
    return UnsupportedPlatformError(
        0, "TCP_INFO is decoded with Linux's struct tcp_info layout; this platform has another"
    )


_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


class _Buffers(threading.local):
    """Per-thread spare batch buffers: no ffi.new of the batch buffer on the hot path."""

    #: Batches up to this many sockets keep their buffer for the next call (8 MiB at 512 B a
    #: socket, so a 10k-socket sweep reuses it); a larger one is freed when the call returns,
    #: not held for the thread's life.
    KEEP = 16384

    def __init__(self) -> None:
        self.spare: tuple[int, Any, Any, Any] | None = None

    def take(self, n: int) -> tuple[int, Any, Any, Any]:
        """Return (capacity, batch, batch view, lens) for ``n`` sockets, owned by the caller.

        The thread's spare set is handed out and its slot emptied, so a signal handler that
        polls again in the middle of this call gets buffers of its own, never these.
        """
        spare = self.spare
        if spare is not None and spare[0] >= n:
            self.spare = None
            return spare
        capacity = max(n, 64)
        # Not zeroed: the C core writes every byte it reports through lens, and zeroing
        # megabytes per call showed in the 10k-socket benchmark.
        batch = _new_uncleared("unsigned char[]", capacity * lib.PSO_TCPI_CAP)
        return capacity, batch, ffi.buffer(batch), ffi.new("int[]", capacity)

    def give_back(self, buffers: tuple[int, Any, Any, Any]) -> None:
        """Keep ``buffers`` for the next call unless they are large."""
        if buffers[0] <= self.KEEP:
            self.spare = buffers


_BUFFERS = _Buffers()


def _new_one() -> tuple[Any, Any]:
    buf = _new_uncleared("unsigned char[]", lib.PSO_TCPI_CAP)
    return buf, ffi.buffer(buf)


#: tcp_info's buffers for the C path, owned per call as keepalive's are: a call pops one (or
#: makes one) and puts it back after copying its bytes out, so a signal handler's nested call
#: never fills the buffer being read (one per thread did: 4% of reads were another socket's).
_ONE: list[tuple[Any, Any]] = []
_take_one = _ONE.pop
_give_one = _ONE.append
_native_one = lib.pso_tcp_info
_native_poll = lib.pso_tcp_info_poll
#: socket.socket.fileno, C-level over many sockets; TypeError for any other object, which
#: sends that batch down the per-entry path (filenos_of).
_any_fileno: Callable[[SocketLike], int] = socket.socket.fileno  # type: ignore[assignment]
_ffi_new = ffi.new
_ffi_unpack = ffi.unpack
_socket_fileno = socket.socket.fileno
_CAP: Final[int] = lib.PSO_TCPI_CAP
_SOL_TCP: Final = int(socket.IPPROTO_TCP)
_TCP_INFO: Final[int] = getattr(socket, "TCP_INFO", -1)


def tcp_info(sock: SocketLike) -> TcpInfo:
    """Return the kernel's TCP_INFO for ``sock`` (a socket, anything with fileno(), an fd).

    A UDP or Unix socket raises OSError (ENOPROTOOPT / EOPNOTSUPP), a closed descriptor
    OSError(EBADF), a pipe OSError(ENOTSOCK); a wrong argument type raises TypeError. An
    object whose ``fileno()`` raises ValueError (a closed file object) is OSError(EBADF), as
    in poll_tcp_info; so is an object closed by another thread during the call (its number
    may have been taken by another socket). An int descriptor is the caller's to keep open.
    """
    # Benchmarked against the stdlib's getsockopt + struct.unpack of three fields, so: one
    # syscall, one bytes object, one view. For a socket.socket, CPython's own getsockopt is the
    # cheapest way to that bytes object (measured ~0.1 us less than fileno() + a cffi call +
    # copying out of the native buffer); anything else goes through the C core.
    if type(sock) is _FAST_TYPE:
        ask = _ask[0]
        try:
            data = sock.getsockopt(_SOL_TCP, _TCP_INFO, ask)
        except OSError as err:
            raise _failure(-(err.errno or errno.EIO), sock.fileno()) from None
        n = len(data)
        if n != ask:
            _learn_size(n)
    else:
        data = _raw(sock)
        n = len(data)
    if n == _FULL_SIZE:
        return _FULL_FROM(data)
    view = _NEW(_class_for(n, RUNNING_KERNEL, False))
    view._buf = data
    return view


def _raw(sock: SocketLike) -> bytes:
    """Return the TCP_INFO bytes of any socket-like, read through the C core."""
    fd = fileno_of(sock)
    try:
        buf, buf_view = _take_one()
    except IndexError:
        buf, buf_view = _new_one()
    n = _native_one(fd, buf)
    data: bytes = buf_view[:n] if n > 0 else b""
    _give_one((buf, buf_view))
    # Checked first: what the call reached (or failed on) may be another socket.
    if replaced(sock, fd):
        raise closed_during_call(fd, "tcp_info")
    if n < 0:
        raise _failure(n, fd)
    return data


# What tcp_info asks the kernel for. The kernel always returns min(asked, its struct size), the
# same for every TCP socket, and CPython's getsockopt shrinks its bytes object when less comes
# back (measured +0.15 us): once the size is known, ask for exactly that.
_ask = [_CAP]


def _learn_size(n: int) -> None:
    if 0 < n < _CAP:
        _ask[0] = n


def poll_tcp_info(socks: Iterable[SocketLike]) -> list[TcpInfo | OSError]:
    """Return TCP_INFO for every socket in ``socks`` in ONE native call, in order.

    Each entry is a TcpInfo or the OSError for that socket (closed descriptor, not TCP, not a
    socket): one bad socket never fails the batch. An entry that is not socket-like at all
    (no fileno(), not an int) is a programming error, not a socket condition: TypeError naming
    its index, before any syscall. An object whose ``fileno()`` raises ValueError (a closed
    file object) gets OSError(EBADF) in its place, as tcp_info raises for it. The views of one
    batch share one buffer (``raw`` copies out), so keeping one result keeps the batch's bytes
    (about 280 per socket) alive.

    The native call runs without the GIL: an object that another thread closed meanwhile
    (whose number a new socket may have taken) gets OSError(EBADF), never that socket's data.
    An int descriptor is the caller's own number: keep it open until the call returns.
    """
    if not PSO_HAS_TCP_INFO:
        raise _unsupported()
    if type(socks) is not tuple:  # a snapshot: the caller's list may change during the call
        socks = tuple(socks)
    try:
        # C-level when every entry is a socket.socket (or subclass), the common case; a closed
        # one gives -1, which fails with EBADF in its place.
        fds = list(map(_socket_fileno, socks))
        bad: dict[int, OSError] = {}
        every_socket = True
    except TypeError:
        fds, bad = filenos_of(socks, "poll_tcp_info")
        every_socket = False
    n = len(fds)
    owned = _BUFFERS.take(n)
    try:
        _, batch, batch_view, lens_out = owned
        same = _ffi_new("int *")
        used = _native_poll(_ffi_new("int[]", fds), n, batch, lens_out, same)
        if used < 0:
            raise os_error(int(used), "reading TCP_INFO for a batch")
        # One length for every entry (the common case): no look at the lengths at all.
        size = same[0]
        lens = None if size > 0 else _ffi_unpack(lens_out, n)
        data = batch_view[0:used]
    finally:
        _BUFFERS.give_back(owned)
    # Which objects still hold the descriptor their entry was read from: one C-level pass.
    if every_socket:
        moved = ([i for i, s in enumerate(socks) if _socket_fileno(s) != fds[i]]
                 if list(map(_socket_fileno, socks)) != fds else [])
    else:
        moved = [i for i, s in enumerate(socks) if i not in bad and replaced(s, fds[i])]
    out = _same_views(data, size, used) if lens is None else _views(data, lens, used, fds, bad)
    return _mark_closed(out, moved, fds) if moved else out


def _mark_closed(out: list[TcpInfo | OSError], moved: list[int], fds: list[int],
                 what: str = "poll_tcp_info") -> list[TcpInfo | OSError]:
    for i in moved:
        out[i] = closed_during_call(fds[i], what)
    return out


def _views(data: bytes, lens: list[int], used: int, fds: list[int],
           bad: dict[int, OSError]) -> list[TcpInfo | OSError]:
    new = _NEW
    out: list[TcpInfo | OSError] = []
    append = out.append
    start = 0
    for i, length in enumerate(lens):
        if length < 0:
            append(bad[i] if i in bad else _failure(length, fds[i]))
            continue
        view = new(_FULL_SHARED if length == TCP_INFO_KNOWN_SIZE
                   else _class_for(length, RUNNING_KERNEL, True))
        view._buf = data
        view._off = start
        start += length
        append(view)
    return out


def _failure(rc: int, fd: int) -> OSError:
    if not PSO_HAS_TCP_INFO:
        return _unsupported()
    if -rc in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
        return os_error(rc, f"reading TCP_INFO of fd {fd}: not a TCP socket")
    return os_error(rc, f"reading TCP_INFO of fd {fd}")


PSO_HAS_TCP_INFO: Final = _platform.HAS_TCP_INFO
_FULL_SIZE: Final = TCP_INFO_KNOWN_SIZE
_FULL: Final = _struct_class(RUNNING_KERNEL)
_FULL_FROM: Final[Callable[[Any], TcpInfo]] = _FULL.from_buffer_copy  # type: ignore[attr-defined]
_FULL_SHARED: Final = _class_for(TCP_INFO_KNOWN_SIZE, RUNNING_KERNEL, True)
# tcp_info's fast path: CPython's socket.socket, where TCP_INFO is Linux's (elsewhere every
# call goes through the C core, which reports the platform as unsupported).
_FAST_TYPE: Final = socket.socket if PSO_HAS_TCP_INFO else None


# --- compiled readers: a chosen few fields, one getsockopt, one unpack


class TcpInfoReader(Protocol):
    """A callable made by ``tcp_info_reader``: ``reader(sock)`` -> a tuple of its fields.

    ``fields`` are the names it returns, in order; ``size`` the bytes it asks the kernel for
    (just enough for those fields). ``reader.from_bytes(data)`` decodes the same fields from
    bytes already read (e.g. ``Connection.info.raw``).
    """

    fields: tuple[str, ...]
    size: int

    def __call__(self, sock: SocketLike, /) -> tuple[Any, ...]:
        """Return the fields of ``sock``'s TCP_INFO (None where the kernel did not return one)."""
        ...

    def from_bytes(self, data: bytes | bytearray | memoryview, /) -> tuple[Any, ...]:
        """Return the fields decoded from raw struct tcp_info bytes (None beyond their end)."""
        ...


def _field_expr(f: TcpInfoField, var: str) -> str:
    if f.name == "state":
        return f"_STATES[{var}]"
    if f.bits is None:
        return var
    first, width = f.bits
    if not _LITTLE:
        first = 8 * f.size - first - width
    mask = (1 << width) - 1
    return f"({var} >> {first} & {mask})" if first else f"({var} & {mask})"


def tcp_info_reader(*fields: str) -> TcpInfoReader:
    """Compile a reader of the named TCP_INFO fields: ``reader(sock)`` returns their tuple.

    ``tcp_info_reader("state", "rtt", "retransmits")(sock)`` is ``(TcpState.ESTABLISHED,
    52, 0)``: one getsockopt asking for just the bytes those fields need and one unpack of
    just those fields, with offsets, sizes and bit masks resolved here, once. A field the
    kernel did not return (an older kernel's shorter struct) is None, as in ``TcpInfo``.
    Names are ``TCP_INFO_FIELDS``' names; an unknown one raises InvalidConfigError. Errors as
    in ``tcp_info``: OSError for a closed descriptor, a UDP or Unix socket or a pipe,
    TypeError for something that is not socket-like.
    """
    if not fields:
        raise InvalidConfigError("fields", fields, "one or more TCP_INFO field names")
    layout = {f.name: f for f in tcp_info_fields(RUNNING_KERNEL)}
    chosen: list[TcpInfoField | None] = []
    for name in fields:
        if not isinstance(name, str):
            raise TypeError(f"tcp_info_reader: field names are str, not {type(name).__name__}")
        if name not in FIELD_NAMES:
            raise InvalidConfigError("field", name, ", ".join(FIELD_NAMES))
        # Known, but laid out otherwise on this kernel (bytes 276-279): never returned here.
        chosen.append(layout.get(name))
    units = sorted({(f.offset, f.size) for f in chosen if f is not None})
    size = max((off + sz for off, sz in units), default=0)
    fmt = "="
    at = 0
    for off, sz in units:
        fmt += (f"{off - at}x" if off > at else "") + _FORMATS[sz]
        at = off + sz
    var = {unit: f"v{i}" for i, unit in enumerate(units)}
    exprs = ", ".join("None" if f is None else _field_expr(f, var[f.offset, f.size])
                      for f in chosen)
    unpacked = ", ".join(var.values())
    # The fast path mirrors tcp_info's: CPython's getsockopt for a socket (asking for exactly
    # `size` bytes, so the kernel copies and CPython allocates no more), the C core for
    # anything else (the unbound method refuses it with TypeError). No length check: a shorter
    # struct (an older kernel) fails the unpack, and only then is each field checked. Built
    # from the constant table above, so exec sees no caller text.
    body = ("    try:\n"
            f"        {unpacked}, = _unpack(data)\n"
            "    except _StructError:\n"
            "        return _short(data)\n"
            f"    return ({exprs},)\n") if units else f"    return ({exprs},)\n"
    source = (
        "def read(sock):\n"
        "    try:\n"
        f"        data = _getsockopt(sock, {_SOL_TCP}, {_TCP_INFO}, {max(size, 1)})\n"
        "    except TypeError:\n"
        "        data = _raw(sock)\n"
        "    except OSError as err:\n"
        "        raise _failure(-(err.errno or _EIO), sock.fileno()) from None\n"
        + body
    )
    known = tuple(f for f in chosen)

    def short(data: bytes) -> tuple[Any, ...]:
        # An older kernel's shorter struct: each field that fits, None for the rest.
        return tuple(None if f is None or f.end > len(data) else _decode(f, data) for f in known)

    namespace: dict[str, Any] = {
        "_getsockopt": _getsockopt if PSO_HAS_TCP_INFO else _no_getsockopt,
        "_StructError": struct.error, "_failure": _failure, "_EIO": errno.EIO, "_raw": _raw,
        "_STATES": _STATES, "_short": short,
        "_unpack": struct.Struct(fmt).unpack_from if units else None,
    }
    # from_bytes decodes bytes already read (an INET_DIAG_INFO payload, a capture) with the
    # very body that read() runs after its getsockopt.
    source += "def from_bytes(data):\n" + body
    exec(source, namespace)  # source built from the constant field table
    read = namespace["read"]
    read.fields = tuple(fields)
    read.size = size
    read.from_bytes = namespace["from_bytes"]
    read.__doc__ = f"Return ({', '.join(fields)}) of a socket's TCP_INFO (tcp_info_reader)."
    read.__qualname__ = read.__name__ = "tcp_info_reader"
    return cast(TcpInfoReader, read)


def _no_getsockopt(sock: object, *args: object) -> bytes:
    # Where TCP_INFO is not Linux's, every read goes through the C core, which says so.
    raise TypeError


_getsockopt = socket.socket.getsockopt


def _decode(f: TcpInfoField, data: bytes) -> Any:
    (value,) = struct.unpack_from("=" + _FORMATS[f.size], data, f.offset)
    if f.name == "state":
        return _STATES[value]
    if f.bits is None:
        return value
    first, width = f.bits
    if not _LITTLE:
        first = 8 * f.size - first - width
    return value >> first & ((1 << width) - 1)


# --- a persistent poller: a fixed set of sockets read again and again


class TcpInfoPoller:
    """Read TCP_INFO for a fixed set of sockets, again and again, each time in ONE native call.

    ``poll_tcp_info(socks)`` for a set that does not change: the descriptors are looked up
    once, here, and kept in a native array; each ``poll()`` returns what ``poll_tcp_info``
    would (a TcpInfo or the OSError per socket, in order). After every native call one C-level
    pass checks that each object still holds the descriptor it was read from: an object closed
    since this poller was made, or during the call (its number possibly taken by another
    socket), gets OSError(EBADF), never the other socket's data. An int descriptor is the
    caller's own number: keep it open while the poller is used. Made with a socket that is
    already closed (or not socket-like), the poller raises as poll_tcp_info would.
    """

    __slots__ = ("_bad", "_every_socket", "_fd_array", "_fds", "_socks")

    def __init__(self, socks: Iterable[SocketLike]) -> None:
        self._socks = tuple(socks)
        try:
            self._fds = list(map(_any_fileno, self._socks))
            self._bad: dict[int, OSError] = {}
            self._every_socket = True
        except TypeError:
            self._fds, self._bad = filenos_of(self._socks, "poll_tcp_info")
            self._every_socket = False
        self._fd_array = _ffi_new("int[]", self._fds)

    def __len__(self) -> int:
        return len(self._fds)

    @property
    def sockets(self) -> tuple[SocketLike, ...]:
        """The sockets this poller reads, in the order of its results."""
        return self._socks

    def poll(self) -> list[TcpInfo | OSError]:
        """Return TCP_INFO for every socket, in order: a TcpInfo or that socket's OSError."""
        if not PSO_HAS_TCP_INFO:
            raise _unsupported()
        fds = self._fds
        n = len(fds)
        owned = _BUFFERS.take(n)
        try:
            _, batch, batch_view, lens_out = owned
            same = _ffi_new("int *")
            used = _native_poll(self._fd_array, n, batch, lens_out, same)
            if used < 0:
                raise os_error(int(used), "reading TCP_INFO for a batch")
            size = same[0]
            lens = None if size > 0 else _ffi_unpack(lens_out, n)
            data = batch_view[0:used]
        finally:
            _BUFFERS.give_back(owned)
        socks = self._socks
        if self._every_socket:
            moved = ([i for i, s in enumerate(socks) if _any_fileno(s) != fds[i]]
                     if list(map(_any_fileno, socks)) != fds else [])
        else:
            moved = [i for i, s in enumerate(socks)
                     if i not in self._bad and replaced(s, fds[i])]
        if lens is None:
            out = _same_views(data, size, used)
        else:
            out = _views(data, lens, used, fds, self._bad)
        return _mark_closed(out, moved, fds, _POLLER_CALL) if moved else out


_POLLER_CALL: Final = "TcpInfoPoller.poll or since the poller was made"


def _same_views(data: bytes, size: int, used: int) -> list[TcpInfo | OSError]:
    """Return the views of a batch whose entries all have the kernel's one size."""
    cls = _FULL_SHARED if size == TCP_INFO_KNOWN_SIZE else _class_for(size, RUNNING_KERNEL, True)
    new = _NEW
    out: list[TcpInfo | OSError] = []
    append = out.append
    for start in range(0, used, size):
        view = new(cls)
        view._buf = data
        view._off = start
        append(view)
    return out

