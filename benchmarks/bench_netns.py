"""Every namespace at once: state_counts and diagnose over 20 namespaces x ~1,000 sockets.

The baseline is what people run today, the shell loop
``for ns in $(ip netns list); do ip netns exec $ns ss -tanH; done`` (its lines counted), run over
the 20 names made here: what ``ip netns list`` prints on a host with only them (on a shared
machine other people's namespaces would otherwise be counted by one side only). Ours is a
discovery of every namespace (``namespaces()``: /proc/*/ns/net, /run/netns, mountinfo) and
``for_each_netns(lambda ns: state_counts(netns=ns), <the same 20>)``. Each namespace is made
here with ``ip netns add`` and holds a holder process with ~500 connected loopback pairs; all
removed at the end. Root only.

By default every namespace shares the kernel's one TCP hash table, and a dump walks all of it
(every bucket, every other namespace's socket) once per address family, for ss and for us
alike: that walk, not the namespace's own 1,000 sockets, is most of a dump's cost. A second
run makes the 20 namespaces from a private parent namespace whose
net.ipv4.tcp_child_ehash_entries gives each its own small table (Linux 5.19+; the host's own
setting is never touched), the configuration for hosts with many namespaces.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

from pysockopt import diagnose, for_each_netns, namespaces, state_counts

from . import _cbuild
from ._harness import compare, report
from .bench_sockdiag import _setns

NAMESPACES = 20
PAIRS = 500  # 2 sockets each, plus the listener: ~1,000 sockets per namespace

HOLDER = r"""
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
addr = listener.getsockname()
held = []
for _ in range(int(sys.argv[1])):
    c = socket.create_connection(addr)
    s, _ = listener.accept()
    held += [c, s]
print(len(held) + 1, flush=True)
sys.stdin.read()
"""

SHELL_LOOP = 'for ns in "$@"; do ip netns exec $ns ss -tanH; done | wc -l'


@contextlib.contextmanager
def population(child_hash: int = 0) -> Iterator[list[str]]:
    """Yield the names of NAMESPACES namespaces with ~1,000 sockets each; remove them after.

    ``child_hash``: made from a private parent namespace with tcp_child_ehash_entries set to
    it, so each gets a TCP hash table of its own (0: the host's shared table).
    """
    tag = uuid.uuid4().hex[:6]
    names: list[str] = []
    procs: list[subprocess.Popen[str]] = []
    parent = f"pso-bn-{tag}-parent"
    maker = ["ip", "netns", "add"]
    try:
        if child_hash:
            subprocess.run(["ip", "netns", "add", parent], check=True, capture_output=True)
            subprocess.run(["ip", "netns", "exec", parent, "sysctl", "-qw",
                            f"net.ipv4.tcp_child_ehash_entries={child_hash}"], check=True)
            # nsenter changes only the network namespace, so the new mount under /run/netns
            # lands in ours (ip netns exec would make it in a private mount namespace).
            maker = ["nsenter", f"--net=/run/netns/{parent}", "ip", "netns", "add"]
        for i in range(NAMESPACES):
            name = f"pso-bn-{tag}-{i:02d}"
            subprocess.run([*maker, name], check=True, capture_output=True)
            names.append(name)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                           capture_output=True)
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", name, sys.executable, "-c", HOLDER, str(PAIRS)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in procs:
            assert p.stdout is not None
            if not p.stdout.readline().strip():
                raise RuntimeError("a holder did not start")
        yield names
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                if p.stdin is not None:
                    p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()  # our own holder, by its Popen (pid)
                p.wait()
        for name in [*names, parent]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _shell_loop(names: list[str]) -> int:
    out = subprocess.run(["bash", "-c", SHELL_LOOP, "loop", *names], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip())


def _ours(names: list[str]) -> int:
    wanted = set(names)
    mine = [ns for ns in namespaces() if ns.name in wanted]
    found = for_each_netns(lambda ns: state_counts(netns=ns), mine)
    return sum(sum(c.values()) for _, c in found.results)


def run() -> None:
    """Print the state_counts ratios and the cost of diagnosing every namespace."""
    if os.geteuid() != 0:
        print("  skipped: needs root (ip netns add, setns)")
        return
    print("-- the host's shared TCP hash table (the default)")
    _measure(0)
    print("-- each namespace with a TCP hash table of its own (tcp_child_ehash_entries=1024)")
    try:
        _measure(1024)
    except subprocess.CalledProcessError as err:
        print(f"  skipped: {err} (tcp_child_ehash_entries needs Linux 5.19)")


def _measure(child_hash: int) -> None:
    label = " (own hash tables)" if child_hash else ""
    with population(child_hash) as names:
        ours = {ns.name: ns for ns in namespaces() if ns.name in names}
        per_ns = [sum(state_counts(netns=ours[n]).values()) for n in names]
        report("namespaces made", f"{len(names)}, {min(per_ns)}..{max(per_ns)} sockets each")
        report("namespaces on the host", str(len(namespaces())))
        report("sockets: shell loop / pysockopt", f"{_shell_loop(names)} / {_ours(names)}")
        compare(f"state_counts in 20 namespaces, discovery included{label}",
                lambda: _shell_loop(names), lambda: _ours(names),
                baseline_label="ip netns exec NS ss -tanH loop", target=0.3, rounds=7)
        mine = [ours[n] for n in names]
        compare(f"state_counts in 20 namespaces, NetNamespace known{label}",
                lambda: _shell_loop(names), lambda: [state_counts(netns=ns) for ns in mine],
                baseline_label="ip netns exec NS ss -tanH loop", rounds=7)

        # The floor: each namespace's dump walks the host-wide hash table (the kernel filters
        # by namespace while it walks), so N namespaces cost N walks whoever asks.
        floor = _cbuild.floor_dump()
        fds = [os.open(f"/run/netns/{n}", os.O_RDONLY) for n in names]
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

        def floor_walks() -> int:
            total = 0
            try:
                for fd in fds:
                    _setns(fd)
                    total += floor(0)
            finally:
                _setns(home)
            return total

        try:
            report("sockets: N floor walks", str(floor_walks()))
            compare(f"state_counts in 20 namespaces, NetNamespace known{label}", floor_walks,
                    lambda: [state_counts(netns=ns) for ns in mine],
                    baseline_label="20 floor dumps (setns + sock_diag dump)", target=1.2,
                    rounds=7)
        finally:
            for fd in [*fds, home]:
                os.close(fd)

        times = []
        for _ in range(3):
            start = time.perf_counter()
            result = for_each_netns(lambda ns: diagnose(netns=ns))
            times.append(time.perf_counter() - start)
        n = len(result.results)
        best = min(times)
        report("diagnose over every namespace", f"{best * 1e3:.0f} ms for {n} namespaces, "
               f"{best / n * 1e3:.1f} ms per namespace (best of 3)")
        start = time.perf_counter()
        for ns in mine:
            diagnose(netns=ns)
        one = (time.perf_counter() - start) / len(mine)
        report("diagnose(netns=ns) per namespace of ~1,000 sockets", f"{one * 1e3:.1f} ms")
        start = time.perf_counter()
        found = namespaces()
        report("namespaces() discovery", f"{(time.perf_counter() - start) * 1e3:.1f} ms for "
               f"{len(found)} namespaces")


if __name__ == "__main__":
    run()
