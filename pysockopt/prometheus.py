"""Prometheus metrics for the host's TCP sockets: a collector for ``prometheus_client``.

``SocketCollector`` is a custom collector (``prometheus_client`` is the optional extra
``pip install 'pysockopt[prometheus]'``; this module imports it only when a scrape or an
exporter needs it). ``describe()`` names every metric without looking at the host, so
registering the collector costs no dump; each ``collect()`` takes one scan, a ``Sample``: one
sock_diag dump of every socket that is not a listener (counted in C, see csrc/tally.h), one small
dump of the listeners, the host ``Counters``, and the diagnosis rules run on the few sockets a
rule reads one by one, the rules that need an interval against the previous scrape's sample.
No label is per connection: listeners are per address and port, owners are the top N
command names plus ``other``, TIME_WAIT destinations the top N plus ``other``.

``METRICS`` is the table of every metric (name, type, labels, meaning); docs/prometheus.md is
generated from it. ``exposition()`` returns one scrape in the text format, ``write_textfile()``
writes it for node_exporter's textfile collector (atomically), and ``serve()`` runs the HTTP
endpoint the ``pysockopt exporter`` command starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, NamedTuple

from . import _host
from ._core import lib
from ._format import label
from ._serving import DEFAULT_CACHE_SECONDS
from .errors import InvalidConfigError
from .host import look
from .host.closed import LIFETIME_BUCKETS, CloseFeed, CloseTotals, Verdict
from .host.look import Scan, ScanOptions
from .host.model import Thresholds
from .host.monotonic import Carried
from .host.namespaces import (
    NetNamespace,
    NetnsArg,
    current_namespace,
    for_each_netns,
    resolve,
)
from .host.owners import OwnerCache
from .host.sample import Sample
from .tcpinfo import TcpState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import HistogramMetricFamily
    from prometheus_client.metrics_core import Metric as _Family
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "METRICS",
    "MISSING_CLIENT",
    "Metric",
    "SocketCollector",
    "exposition",
    "serve",
    "write_textfile",
]

#: What ``pysockopt exporter`` says (exit status 2) when the extra is not installed.
MISSING_CLIENT: Final = ("prometheus_client is not installed: "
                         "pip install 'pysockopt[prometheus]'")

# --- the metric table


class Metric(NamedTuple):
    """One metric the collector exports: its full name, type, labels and meaning.

    ``name`` is the exposed name (counters end in ``_total``); ``type`` is ``gauge``,
    ``counter`` or ``histogram``; ``labels`` are always present, ``optional`` only with an
    exporter option (``port`` with ``--ports``); ``when`` says when the metric is absent.
    ``per_netns``: with ``--all-netns`` the metric gets a ``netns`` label first (every metric
    but the scrape's own, the host-wide ones and the closed-connection log's). ``host_wide``:
    the kernel counts it for the whole host, so every namespace reads the same value: with
    ``--all-netns`` it is exported once, unlabelled.
    """

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    optional: tuple[str, ...] = ()
    when: str = ""
    per_netns: bool = True
    host_wide: bool = False

    @property
    def family(self) -> str:
        """The name prometheus_client's metric families take (without ``_total``)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name


#: node_exporter's spelling of each state (node_tcp_connection_states{state}).
STATE_LABELS: Final[Mapping[TcpState, str]] = {
    TcpState.ESTABLISHED: "established", TcpState.SYN_SENT: "syn_sent",
    TcpState.SYN_RECV: "syn_recv", TcpState.FIN_WAIT1: "fin_wait1",
    TcpState.FIN_WAIT2: "fin_wait2", TcpState.TIME_WAIT: "time_wait",
    TcpState.CLOSE: "close", TcpState.CLOSE_WAIT: "close_wait",
    TcpState.LAST_ACK: "last_ack", TcpState.LISTEN: "listen", TcpState.CLOSING: "closing",
}

#: /proc/net/netstat ``TcpExt:`` counters, exported as ``pysockopt_netstat_tcpext_<snake>_total``
#: (``ListenOverflows`` -> ``..._listen_overflows_total``: promtool wants snake case): every
#: one a look reads (_host.TCP_EXT_FIELDS, the one table of them).
TCP_EXT_COUNTERS: Final[Mapping[str, str]] = _host.TCP_EXT_FIELDS
#: /proc/net/snmp ``Tcp:`` counters, exported as ``pysockopt_netstat_tcp_<snake>_total``: every
#: one a look reads but CurrEstab, a gauge (``pysockopt_netstat_tcp_curr_estab``).
TCP_COUNTERS: Final[Mapping[str, str]] = MappingProxyType(
    {k: v for k, v in _host.SNMP_TCP_FIELDS.items() if k != "CurrEstab"})
#: /proc/net/sockstat ``TCP:`` fields exported as gauges (``mem`` in bytes, from pages);
#: orphan, alloc and mem are host-wide (_host.SOCKSTAT_HOST_WIDE).
SOCKSTAT_GAUGES: Final[Mapping[str, tuple[str, str]]] = {
    "inuse": ("pysockopt_sockstat_tcp_inuse", "TCP sockets in use (sockstat inuse)"),
    "orphan": ("pysockopt_sockstat_tcp_orphan",
               "TCP sockets no process holds any more (sockstat orphan)"),
    "tw": ("pysockopt_sockstat_tcp_tw", "TCP sockets in TIME_WAIT (sockstat tw)"),
    "alloc": ("pysockopt_sockstat_tcp_alloc", "TCP sockets allocated (sockstat alloc)"),
    "mem": ("pysockopt_sockstat_tcp_mem_bytes",
            "memory TCP uses, in bytes (sockstat mem pages x page size)"),
}
_HOST_WIDE: Final = ("Host-wide: the kernel counts it for the whole host, so every namespace "
                     "reads the same value; with --all-netns it is exported once, without a "
                     "netns label.")

_LISTENER: Final = ("address", "port")
_WORD: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake(kernel_name: str) -> str:
    """Return a kernel counter name in snake case (``TCPSynRetrans``: ``tcp_syn_retrans``)."""
    return _WORD.sub("_", kernel_name).lower()


def counter_metric(table: str, kernel_name: str) -> str:
    """Return the metric name of a TcpExt or Tcp counter (``"TcpExt", "ListenDrops"``)."""
    return f"pysockopt_netstat_{table.lower()}_{snake(kernel_name)}_total"
_DUMPED: Final = "Absent when the socket dump failed (see pysockopt_scrape_errors_total)."
_LOGGED: Final = ("Absent while the closed-connection log cannot be opened (the scrape counts "
                  "an error in pysockopt_scrape_errors_total and says why).")
_CLOSED_SCOPE: Final = ("Counted since the collector's first scrape, from the kernel's "
                        "destroy announcements (see docs/closed.md), read between scrapes and "
                        "joined with the scrapes' own looks (no look of its own); with "
                        "--all-netns summed over every namespace followed.")
#: The port labels pysockopt_tcp_closed_connections_total may ever use (then "other").
CLOSE_PORTS: Final = 64
#: The verdict label's values (pysockopt.host.closed.Verdict).
VERDICTS: Final = tuple(v.value for v in Verdict)


def _table() -> tuple[Metric, ...]:
    m = [
        Metric("pysockopt_tcp_sockets", "gauge", ("state",),
               "TCP sockets per state, states spelled as node_exporter does; every state is "
               "present, 0 included. With --ports, also one series per listed local port "
               "(the host-wide series then carry port=\"\").", ("port",), _DUMPED),
        Metric("pysockopt_tcp_listen_queue_length", "gauge", _LISTENER,
               "Connections waiting for accept() on a listener (ss Recv-Q); sockets sharing "
               "an address and port (SO_REUSEPORT) are summed."),
        Metric("pysockopt_tcp_listen_backlog", "gauge", _LISTENER,
               "A listener's accept-queue limit: listen(backlog) capped by "
               "net.core.somaxconn (ss Send-Q).", when="Absent where /proc gave no backlog."),
        Metric("pysockopt_tcp_listen_drops_total", "counter", _LISTENER,
               "Connection attempts a listener dropped because its queue was full (sock_diag "
               "SKMEMINFO drops, ss -tm d), summed over the listeners sharing the address and "
               "port (SO_REUSEPORT); a listener that closes keeps its count in the sum while "
               "the exporter runs, so the series never goes down.",
               when="Absent where /proc gave no drop count."),
        Metric("pysockopt_tcp_close_wait_owner_sockets", "gauge", ("owner",),
               "CLOSE_WAIT sockets by the command name of the process holding them: the top "
               "owners (--top), the rest as owner=\"other\", sockets no visible process holds "
               "as owner=\"unknown\".", when="Absent when there is no CLOSE_WAIT socket."),
        Metric("pysockopt_tcp_time_wait_destination_sockets", "gauge",
               ("source", "destination"),
               "TIME_WAIT sockets on ephemeral local ports (net.ipv4.ip_local_port_range) per "
               "local address and remote endpoint: the top destinations (--top), the rest as "
               "source=\"other\",destination=\"other\". Each (source, destination) pair can "
               "hold at most pysockopt_tcp_ephemeral_ports ports.",
               when="Absent when there is none."),
        Metric("pysockopt_tcp_ephemeral_ports", "gauge", (),
               "Size of net.ipv4.ip_local_port_range: local ports for outgoing connections.",
               when="Absent when the sysctl is unreadable."),
        Metric("pysockopt_tcp_established_keepalive_sockets", "gauge", (),
               "ESTABLISHED sockets with the keepalive timer pending (SO_KEEPALIVE on, idle).",
               when=_DUMPED),
        Metric("pysockopt_tcp_idle_no_keepalive_sockets", "gauge", (),
               "ESTABLISHED sockets with no timer pending (so no keepalive) that received "
               "nothing, not even an ACK, for pysockopt_tcp_idle_threshold_seconds: "
               "half-open suspects (the IDLE_NO_KEEPALIVE rule).", when=_DUMPED),
        Metric("pysockopt_tcp_idle_threshold_seconds", "gauge", (),
               "The idle time pysockopt_tcp_idle_no_keepalive_sockets counts from "
               "(Thresholds.idle_seconds)."),
    ]
    for name, meaning in TCP_EXT_COUNTERS.items():
        m.append(Metric(counter_metric("TcpExt", name), "counter", (),
                        f"/proc/net/netstat TcpExt {name}: {meaning}.",
                        when="Absent where the kernel has no such counter."))
    for name, meaning in TCP_COUNTERS.items():
        m.append(Metric(counter_metric("Tcp", name), "counter", (),
                        f"/proc/net/snmp Tcp {name}: {meaning}.",
                        when="Absent where the kernel has no such counter."))
    m.append(Metric("pysockopt_netstat_tcp_curr_estab", "gauge", (),
                    f"/proc/net/snmp Tcp CurrEstab: {_host.SNMP_TCP_FIELDS['CurrEstab']}.",
                    when="Absent where the kernel has no such counter."))
    for key, (name, meaning) in SOCKSTAT_GAUGES.items():
        wide = key in _host.SOCKSTAT_HOST_WIDE
        m.append(Metric(name, "gauge", (), f"/proc/net/sockstat: {meaning}."
                        + (f" {_HOST_WIDE}" if wide else ""),
                        when="Absent where sockstat is unreadable.", per_netns=not wide,
                        host_wide=wide))
    m += [
        Metric("pysockopt_nf_conntrack_entries", "gauge", (),
               "Connection-tracking entries in use (net.netfilter.nf_conntrack_count).",
               when="Absent where conntrack is not loaded."),
        Metric("pysockopt_nf_conntrack_entries_limit", "gauge", (),
               "Connection-tracking table size (net.netfilter.nf_conntrack_max; another "
               f"namespace sees the host's, read-only). {_HOST_WIDE}",
               when="Absent where conntrack is not loaded.", per_netns=False, host_wide=True),
        Metric("pysockopt_tcp_closed_connections_total", "counter", ("port", "verdict"),
               "TCP connections closed, by port and verdict (why it ended as its final "
               "tcp_info proves it: " + ", ".join(VERDICTS) + "). The port is a local or "
               "remote port that is a listener's or in --ports, else \"other\"; at most "
               f"{CLOSE_PORTS} port labels ever (later ports count as \"other\"): at most "
               f"{CLOSE_PORTS + 1} x {len(VERDICTS)} series. {_CLOSED_SCOPE}",
               when=_LOGGED, per_netns=False),
        Metric("pysockopt_tcp_connection_lifetime_seconds", "histogram", (),
               "Lifetime of the TCP connections closed: from the first look that saw it to "
               "its close; a connection born and gone between two looks counts at the upper "
               "bound (the time since the previous look). Closes of unknown lifetime are "
               f"left out. {_CLOSED_SCOPE}", when=_LOGGED, per_netns=False),
        Metric("pysockopt_tcp_closed_bytes_acked_total", "counter", (),
               "Bytes the peers acknowledged on the connections closed (final tcp_info "
               f"bytes_acked). {_CLOSED_SCOPE}", when=_LOGGED, per_netns=False),
        Metric("pysockopt_tcp_closed_bytes_received_total", "counter", (),
               "Bytes received on the connections closed (final tcp_info bytes_received). "
               f"{_CLOSED_SCOPE}", when=_LOGGED, per_netns=False),
        Metric("pysockopt_tcp_closed_retransmits_total", "counter", (),
               "Segments retransmitted on the connections closed (final tcp_info "
               f"total_retrans). {_CLOSED_SCOPE}", when=_LOGGED, per_netns=False),
        Metric("pysockopt_tcp_close_events_lost_total", "counter", (),
               "Closes the log missed: announcements the kernel dropped (its buffer was "
               "full) or sockets a look saw that vanished unannounced, whichever is larger. "
               f"{_CLOSED_SCOPE}", when=_LOGGED, per_netns=False),
        Metric("pysockopt_finding", "gauge", ("code", "severity"),
               "1 for each diagnosis finding active now (codes as in docs/diagnose.md, "
               "severity info, warning or critical); a code that is absent is not firing. "
               "The rules that need an interval (CLOSE_WAIT_GROWING, RETRANSMITS_RISING...) "
               "compare this scrape with the previous one, so they are absent from a "
               "collector's first scrape."),
        Metric("pysockopt_netns_info", "gauge", ("netns", "container_runtime",
                                                  "container_id", "container_name"),
               "1 per network namespace scanned: what its processes' cgroups say about the "
               "container (empty where none). The netns label is the ip netns name, else "
               "\"inode N\".", when="Only with --all-netns.", per_netns=False),
        Metric("pysockopt_owner_lookup_incomplete", "gauge", (),
               "CLOSE_WAIT and other flagged sockets whose owning process this scrape could "
               "not name because the walk of /proc/*/fd stopped at its deadline "
               "(owner_deadline, --owner-deadline); they count as owner=\"unknown\". The "
               "walk runs at most once per scrape (every namespace's owners come from it) "
               "and only when a socket it has not seen before needs an owner.",
               per_netns=False),
        Metric("pysockopt_scrape_duration_seconds", "gauge", (),
               "How long this scrape's scan took (every namespace's, with --all-netns).",
               per_netns=False),
        Metric("pysockopt_scrape_errors_total", "counter", (),
               "Parts of scans that failed since the collector started (the dump, the "
               "counters, the owner lookup, the diagnosis, a namespace that is gone or may "
               "not be entered, a textfile that could not be written); a failed part's "
               "metrics are left out of that scrape.",
               per_netns=False),
    ]
    return tuple(m)


#: Every metric the collector exports, in exposition order.
METRICS: Final[tuple[Metric, ...]] = _table()
_BY_NAME: Final = {m.name: m for m in METRICS}


# --- the collector


class SocketCollector:
    """A ``prometheus_client`` collector of the host's TCP sockets (see ``METRICS``).

    ``ports``: local ports that also get per-port state series (at most 64);
    ``top``: how many CLOSE_WAIT owners and TIME_WAIT destinations get their own series
    (the rest is summed as ``other``); ``thresholds``: the diagnosis thresholds behind
    ``pysockopt_finding`` and the idle-connection count. ``netns``: look into that network
    namespace instead of the caller's (as ``connections(netns=)`` takes it). A name, path or
    pid must name a namespace now, and is looked up again at every scrape: a namespace
    deleted and created again under the same name (``ip netns del NS; ip netns add NS``) is
    followed; while it is missing, each scrape counts one error in
    ``pysockopt_scrape_errors_total`` and exports only the scrape's own metrics. A
    NetNamespace names that one namespace (its inode): once it is gone, every scrape counts
    an error. ``all_netns``: every namespace on the host, each series labelled ``netns``
    (entering others needs root). ``on_error``: called with a one-line message for each
    failed part of a scrape (unescaped: a namespace name may hold any character).
    ``scrapes`` counts the scans taken. The collector keeps each namespace's last sample:
    the rules that need an interval compare the next scrape with it (none on the first).
    ``owner_deadline``: seconds the walk of /proc/*/fd for socket owners may take per
    scrape (None: no limit); owners it did not reach are "unknown" and counted in
    ``pysockopt_owner_lookup_incomplete``. Owners found are kept between scrapes: the walk
    runs only for sockets not seen before, once per scrape for every namespace.
    Register it with ``prometheus_client.REGISTRY.register(SocketCollector())``.
    """

    def __init__(self, *, ports: Iterable[int] = (), top: int = 5,
                 thresholds: Thresholds | None = None, netns: NetnsArg = None,
                 all_netns: bool = False,
                 on_error: Callable[[str], object] | None = None,
                 owner_deadline: float | None = 5.0) -> None:
        plist = tuple(ports)
        for p in plist:
            if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 65535:
                raise InvalidConfigError("ports", p, "local ports 1..65535")
        if len(set(plist)) > lib.PSO_TALLY_MAX_PORTS:
            raise InvalidConfigError("ports", len(plist),
                                     f"at most {lib.PSO_TALLY_MAX_PORTS} ports")
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 100:
            raise InvalidConfigError("top", top, "1..100")
        th = Thresholds() if thresholds is None else thresholds
        if not isinstance(th, Thresholds):
            raise TypeError(f"thresholds must be a Thresholds, not {type(th).__name__}")
        if not isinstance(all_netns, bool):
            raise InvalidConfigError("all_netns", all_netns, "True or False")
        if all_netns and netns is not None:
            raise InvalidConfigError("netns", netns, "None with all_netns=True")
        if owner_deadline is not None and (
                isinstance(owner_deadline, bool) or not isinstance(owner_deadline, (int, float))
                or not 0 < owner_deadline <= 3600):
            raise InvalidConfigError("owner_deadline", owner_deadline,
                                     "seconds, > 0 and <= 3600, or None")
        self._options = ScanOptions("rules", ports=tuple(sorted(set(plist))), top=top,
                                    thresholds=th)
        self._owners = OwnerCache(owner_deadline)
        if netns is not None:
            resolve(netns)  # it must exist now; each scrape opens it again by what was given
        self._netns = netns
        self._all = all_netns
        self._on_error = on_error
        self._errors = 0
        self._last: dict[int, Sample] = {}  # the previous scrape's sample per namespace inode
        self._carried = _Carry()  # the _total series, never going down
        # The closed-connection log: driven by the scans' looks (no look of its own), its
        # subscriber made in each namespace at the first scan there and kept between scrapes.
        self._feed: CloseFeed | None = None
        self._lock = threading.Lock()
        self.scrapes = 0

    def describe(self) -> Iterator[_Family]:
        """Name every metric without looking at the host (registration takes no dump)."""
        yield from self._families(None)

    def collect(self) -> Iterator[_Family]:
        """Take one scan (of each namespace, with all_netns) and yield every metric family."""
        with self._lock:  # concurrent scrapes each take their own scan, one at a time
            start = time.monotonic()
            self._owners.new_look()  # one walk of /proc/*/fd at most, for every namespace
            scans: list[tuple[NetNamespace | None, Scan]] = []
            failed: list[str] = []
            feed = self._closes()
            # Namespaces not looked at this time that may still be there (refused, or not
            # even listed): their carried totals are kept for the scrape that sees them again,
            # and so are the closed-connection subscribers of those refused.
            missed: set[str] | None = set()
            refused: set[int] = set()
            if self._all:
                last = self._last
                found = for_each_netns(
                    lambda ns: look.scan(self._options, ns, last, self._owners, feed))
                scans = [(ns, scan) for ns, scan in found.results]
                # A namespace that vanished meanwhile is gone, not an error; one we may not
                # enter is (the exporter should run as root to see them all).
                failed += [s.message for s in found.skipped if s.reason != "vanished"]
                missed = {_netns_label(s.netns) for s in found.skipped
                          if s.reason != "vanished"}
                refused = {s.netns.inode for s in found.skipped if s.reason != "vanished"}
                if found.unseen:  # namespaces that only other users' processes hold: missed
                    missed = None  # which ones is not known: forget none
                    from .host.namespaces import NamespaceList

                    failed += NamespaceList(unseen=found.unseen).notes
            else:
                try:
                    scans = [(None, look.scan(self._options, self._netns, self._last,
                                              self._owners, feed))]
                except (OSError, InvalidConfigError) as err:
                    # Not there now (deleted, or not yet created again), or not enterable:
                    # this scrape has only its own metrics, and says why.
                    failed.append(f"{_entering(self._netns)}: {err}")
            for ns, scan in scans:
                where = f" (netns {ns.label})" if self._all and ns is not None else ""
                failed += [f"{message}{where}" for message in scan.errors]
            scans = self._carry(scans, missed)
            # A namespace not scanned now (gone, or made again: a new inode) is no longer
            # followed, unless it was only refused this time; one that appears is subscribed
            # to by its first scan.
            feed.keep([scan.inode for _, scan in scans] + sorted(refused))
            failed += [feed.errors[scan.inode] for _, scan in scans
                       if scan.inode in feed.errors]
            closes = feed.stats.totals() if feed.netns else None
            # The next scrape's time rules compare with these (a namespace not scanned now
            # is forgotten: when it comes back, its first scrape has no interval).
            self._last = {scan.inode: scan.sample for _, scan in scans
                          if scan.sample is not None}
            self.scrapes += 1
            self._errors += len(failed)
            errors = self._errors
            incomplete = self._owners.incomplete
            seconds = time.monotonic() - start
        if self._on_error is not None:
            for message in failed:
                self._on_error(message)
        yield from self._families(scans, errors, seconds, incomplete, closes)

    def _closes(self) -> CloseFeed:
        """Return the closed-connection log the scans drive (made at the first scrape, kept)."""
        if self._feed is None:
            self._feed = CloseFeed(ports=self._options.ports, owners=self._owners,
                                   max_ports=CLOSE_PORTS)
            # Between scrapes (a minute apart, say) its subscribers are read on a thread
            # of its own: a buffer read only at scrapes would overflow.
            self._feed.start_reader()
        return self._feed

    def close(self) -> None:
        """Close the closed-connection log the scrapes keep (a later scrape opens it again)."""
        with self._lock:
            if self._feed is not None:
                self._feed.close()
                self._feed = None

    def _carry(self, scans: list[tuple[NetNamespace | None, Scan]],
               missed: Iterable[str] | None = (),
               ) -> list[tuple[NetNamespace | None, Scan]]:
        return self._carried(scans, _netns_label if self._all else lambda _: "", missed)

    def count_error(self) -> None:
        """Count one failure outside a scan (a textfile not written) in the errors counter."""
        with self._lock:
            self._errors += 1

    def _families(self, scans: Sequence[tuple[NetNamespace | None, Scan]] | None,
                  errors: int = 0, seconds: float = 0.0,
                  incomplete: int = 0,
                  closes: CloseTotals | None = None) -> Iterator[_Family]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        ports = bool(self._options.ports)
        fams: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        histograms: dict[str, HistogramMetricFamily] = {}
        for m in METRICS:
            labels = (["netns"] if self._all and m.per_netns else []) + list(m.labels) + (
                list(m.optional) if ports else [])
            if m.type == "histogram":
                histograms[m.name] = HistogramMetricFamily(m.family, m.help, labels=labels)
                continue
            cls = CounterMetricFamily if m.type == "counter" else GaugeMetricFamily
            fams[m.name] = cls(m.family, m.help, labels=labels)
        if scans is not None:
            once: set[str] = set()  # host-wide metrics already given by an earlier scan
            for ns, scan in scans:
                prefix = [_netns_label(ns)] if self._all else []
                _fill(fams, scan, self._options, prefix, once)
                if self._all:
                    c = ns.container if ns is not None else None
                    fams["pysockopt_netns_info"].add_metric(
                        [prefix[0], label(c.runtime) if c else "", label(c.id) if c else "",
                         label(c.name or "") if c else ""], 1)
            if closes is not None:
                _fill_closes(fams, histograms, closes)
            fams["pysockopt_owner_lookup_incomplete"].add_metric([], incomplete)
            fams["pysockopt_scrape_duration_seconds"].add_metric([], seconds)
            fams["pysockopt_scrape_errors_total"].add_metric([], errors)
        for m in METRICS:
            if m.name == "pysockopt_netns_info" and not self._all:
                continue
            fam = histograms[m.name] if m.name in histograms else fams[m.name]
            if scans is None or fam.samples:
                yield fam


class _Carry:
    """Keep every ``_total`` the collector emits from going down while it runs.

    ``pysockopt_tcp_listen_drops_total`` sums the SO_REUSEPORT listeners of an address and
    port: a listener that restarts has its count carried forward (per socket cookie, under
    the series' own labels: a namespace made again under the same name carries on). The
    kernel's counters of a namespace made again under the same name (``--netns NAME``
    follows it) start from 0: the old namespace's last values are carried (per inode).
    A namespace gone is forgotten; one not looked at this time (``missed``: refused, or
    None when which ones were missed is not known) keeps what it carried.
    """

    def __init__(self) -> None:
        self._drops: Carried[tuple[str, str, int]] = Carried()
        self._counters: Carried[tuple[str, str]] = Carried()

    def __call__(self, scans: list[tuple[NetNamespace | None, Scan]],
                 label_of: Callable[[NetNamespace | None], str],
                 missed: Iterable[str] | None = (),
                 ) -> list[tuple[NetNamespace | None, Scan]]:
        out = []
        labels = set()
        for ns, scan in scans:
            where = label_of(ns)
            labels.add(where)
            members: dict[tuple[str, int], dict[int, int]] = {}
            for c in scan.listeners:
                if c.drops is not None:
                    members.setdefault((c.local_address, c.local_port), {})[
                        c.cookie or -c.inode] = c.drops
            drops = {key: self._drops.total((where, *key), counts)
                     for key, counts in members.items()}
            totals = {}
            hc = scan.counters
            for table, values, names in (("TcpExt", hc.tcp_ext, TCP_EXT_COUNTERS),
                                         ("Tcp", hc.tcp, TCP_COUNTERS)):
                for name in names:
                    value = values.get(name)
                    if value is not None:
                        metric = counter_metric(table, name)
                        totals[metric] = self._counters.total((where, metric),
                                                              {scan.inode: value})
            out.append((ns, dataclasses.replace(scan, listen_drops=drops,
                                                counter_totals=totals)))
        if scans and missed is not None:  # a failed scrape forgets nothing
            labels.update(missed)
            self._drops.forget(lambda key: key[0] in labels)
            self._counters.forget(lambda key: key[0] in labels)
        return out


def _entering(netns: NetnsArg) -> str:
    if isinstance(netns, NetNamespace):
        return f"network namespace {netns.label}"
    return f"network namespace {netns}"


#: The label of a namespace without a name; a name spelled so gets its first byte escaped.
_UNNAMED: Final = re.compile(r"inode \d+")


def _netns_label(ns: NetNamespace | None) -> str:
    # Unique by construction: an ip netns name is never taken for another namespace's
    # "inode N", and undecodable bytes are \xNN (prometheus_client needs valid UTF-8).
    ns = ns if ns is not None else current_namespace()
    if ns.name is None:
        return ns.label
    return label(ns.name, lambda text: _UNNAMED.fullmatch(text) is not None)


def _fill(fams: Mapping[str, object], scan: Scan, options: ScanOptions,
          prefix: Sequence[str], once: set[str]) -> None:
    def add(name: str, labels: Sequence[str], value: float) -> None:
        if _BY_NAME[name].host_wide:
            if name in once:
                return  # the same value in every namespace: one series, no netns label
            once.add(name)
            fams[name].add_metric([*labels], value)  # type: ignore[attr-defined]
            return
        fams[name].add_metric([*prefix, *labels], value)  # type: ignore[attr-defined]

    ports = bool(options.ports)
    if scan.counts is not None:
        for state, label in STATE_LABELS.items():
            add("pysockopt_tcp_sockets", [label, ""] if ports else [label],
                scan.counts.get(state, 0))
        for port, per in scan.port_counts.items():
            for state, label in STATE_LABELS.items():
                add("pysockopt_tcp_sockets", [label, str(port)], per.get(state, 0))
        if scan.keepalive is not None:
            add("pysockopt_tcp_established_keepalive_sockets", [], scan.keepalive)
        if scan.idle_no_keepalive is not None:
            add("pysockopt_tcp_idle_no_keepalive_sockets", [], scan.idle_no_keepalive)
    queues: dict[tuple[str, int], list[int | None]] = {}
    for c in scan.listeners:
        q = queues.setdefault((c.local_address, c.local_port), [0, 0, 0])
        q[0] = (q[0] or 0) + c.rqueue
        q[1] = None if c.wqueue is None or q[1] is None else q[1] + c.wqueue
        q[2] = None if c.drops is None or q[2] is None else q[2] + c.drops
    for (address, port), (queue, backlog, drops) in sorted(queues.items()):
        where = [address, str(port)]
        add("pysockopt_tcp_listen_queue_length", where, queue or 0)
        if backlog is not None:
            add("pysockopt_tcp_listen_backlog", where, backlog)
        if drops is not None:
            carried = scan.listen_drops or {}
            add("pysockopt_tcp_listen_drops_total", where, carried.get((address, port), drops))
    for owner, n in (scan.close_wait_owners or {}).items():
        add("pysockopt_tcp_close_wait_owner_sockets", [owner], n)
    shown = 0
    for g in scan.time_wait[:options.top]:
        dest = f"[{g.remote_address}]:{g.remote_port}" if g.family == socket.AF_INET6 \
            else f"{g.remote_address}:{g.remote_port}"
        add("pysockopt_tcp_time_wait_destination_sockets", [g.source, dest], g.sockets)
        shown += g.sockets
    if scan.time_wait_total > shown:
        add("pysockopt_tcp_time_wait_destination_sockets", ["other", "other"],
            scan.time_wait_total - shown)
    if scan.ephemeral_ports is not None:
        add("pysockopt_tcp_ephemeral_ports", [], scan.ephemeral_ports)
    add("pysockopt_tcp_idle_threshold_seconds", [], options.thresholds.idle_seconds)
    hc = scan.counters
    for table, values, names in (("TcpExt", hc.tcp_ext, TCP_EXT_COUNTERS),
                                 ("Tcp", hc.tcp, TCP_COUNTERS)):
        for name in names:
            value = values.get(name)
            if value is not None:
                metric = counter_metric(table, name)
                add(metric, [], (scan.counter_totals or {}).get(metric, value))
    if hc.tcp.get("CurrEstab") is not None:
        add("pysockopt_netstat_tcp_curr_estab", [], hc.tcp["CurrEstab"] or 0)
    page = os.sysconf("SC_PAGE_SIZE")
    for key, (name, _) in SOCKSTAT_GAUGES.items():
        value = hc.sockstat.get(key)
        if value is not None:
            add(name, [], value * page if key == "mem" else value)
    count, limit = hc.conntrack_count, hc.conntrack_max
    if count is not None:
        add("pysockopt_nf_conntrack_entries", [], count)
    if limit is not None:
        add("pysockopt_nf_conntrack_entries_limit", [], limit)
    active = sorted({(f.code, f.severity.label) for f in scan.findings or ()})
    for code, severity in active:
        add("pysockopt_finding", [code, severity], 1)


def _fill_closes(fams: Mapping[str, object], histograms: Mapping[str, HistogramMetricFamily],
                 t: CloseTotals) -> None:
    def add(name: str, labels: Sequence[str], value: float) -> None:
        fams[name].add_metric(labels, value)  # type: ignore[attr-defined]

    for (port, verdict), n in sorted(t.by_port_verdict.items()):
        add("pysockopt_tcp_closed_connections_total", [port, verdict], n)
    buckets = [("+Inf" if bound == float("inf") else repr(bound), n)
               for bound, n in zip(LIFETIME_BUCKETS, t.lifetime_buckets or
                                   (0,) * len(LIFETIME_BUCKETS), strict=True)]
    histograms["pysockopt_tcp_connection_lifetime_seconds"].add_metric(
        [], buckets, t.lifetime_sum)
    add("pysockopt_tcp_closed_bytes_acked_total", [], t.bytes_acked)
    add("pysockopt_tcp_closed_bytes_received_total", [], t.bytes_received)
    add("pysockopt_tcp_closed_retransmits_total", [], t.retransmits)
    add("pysockopt_tcp_close_events_lost_total", [], t.lost)


# --- exposition, textfile, HTTP


def _registry(collector: SocketCollector) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return registry


def exposition(collector: SocketCollector | None = None) -> bytes:
    """Return one scrape of ``collector`` (a new one if None) in the Prometheus text format.

    A collector made here is closed after its scrape (its closed-connection log with it).
    """
    from prometheus_client import generate_latest

    if collector is not None:
        return generate_latest(_registry(collector))
    own = SocketCollector()
    try:
        return generate_latest(_registry(own))
    finally:
        own.close()


def write_textfile(path: str | os.PathLike[str],
                   collector: SocketCollector | None = None) -> None:
    """Write one scrape to ``path`` for node_exporter's textfile collector, atomically.

    The text goes to a temporary file in the same directory (named ``.*.tmp``, which the
    textfile collector ignores), is flushed to disk, made world-readable and renamed over
    ``path``: a reader sees the old file or the new one, never part of one. A failure to
    write raises OSError naming ``path`` and counts in ``collector``'s errors, so the next
    file written shows it.
    """
    target = os.fspath(path)
    if not target.endswith(".prom"):
        raise InvalidConfigError("textfile", target, "a path ending in .prom")
    data = exposition(collector)
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pysockopt.", suffix=".tmp")
    except OSError as err:
        if collector is not None:
            collector.count_error()
        raise _write_error(err, target) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            if collector is not None:
                collector.count_error()
            raise _write_error(err, target) from None
        raise


def _write_error(err: OSError, target: str) -> OSError:
    """Return the failure to write ``target``, naming it (not the temporary file beside it)."""
    code = err.errno or errno.EIO
    return OSError(code, f"{os.strerror(code)} (writing {target})", target)


def serve(host: str, port: int, collector: SocketCollector | None = None, *,
          cache_seconds: float = DEFAULT_CACHE_SECONDS) -> tuple[str, int]:
    """Serve ``/metrics`` on ``host``:``port`` in a daemon thread; return the bound address.

    Bounded as ``pysockopt exporter --listen`` is (the same code): requests that come while a
    scan runs wait for it and share it; a scan answers every request within
    ``cache_seconds`` of its end (0: each request after a scan takes a new one); a request
    whose client has gone (a scraper that timed out and closed) takes no scan and leaves no
    CLOSE_WAIT socket behind. ``port`` 0 takes a free port. ``collector``: a new
    SocketCollector if None.
    """
    if (isinstance(cache_seconds, bool) or not isinstance(cache_seconds, (int, float))
            or not 0 <= cache_seconds <= 3600):
        raise InvalidConfigError("cache_seconds", cache_seconds, "0..3600 seconds")
    from ._serving import Shared
    from ._serving import serve as serve_http

    server = serve_http(host, port, Shared(collector or SocketCollector(), cache_seconds))
    bound = server.server_address
    return str(bound[0]), int(bound[1])
