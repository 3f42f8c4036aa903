"""Network namespaces and containers: discovery, attribution, looking inside, the thread invariant.

Real namespaces made here (``ip netns add`` with unique names, ``unshare -n``), real processes
holding real sockets inside them, real cgroup v2 directories; compared with ``ss`` run inside the
same namespace. Root-only tests are marked and skip with a reason without root (CI is root).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import io
import json
import os
import pathlib
import pwd
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pytest
from helpers import run_cli
from netns import have_netns
from sockpiles import SS_STATES, Pile
from unpriv import pysockopt_test_user
from waiting import wait_for

import pysockopt
import pysockopt.host.containers as cmod  # container naming (namespaces.py re-exports it)
import pysockopt.host.entering as entmod  # entering and reading (likewise)
from pysockopt import (
    CGROUP_PATTERNS,
    Container,
    InvalidConfigError,
    NetNamespace,
    NetnsGoneError,
    NetnsPermissionError,
    Severity,
    TcpState,
    connections,
    container_from_cgroup,
    diagnose,
    for_each_netns,
    namespaces,
    state_counts,
)
from pysockopt._core import ffi, lib, new_sink
from pysockopt.host.diagnosis import host_facts

# The modules, not the functions pysockopt.host re-exports under the same names (an import
# statement would find those); mypy resolves the import statement to the modules themselves.
if TYPE_CHECKING:
    import pysockopt.host.connections as conns_module
    import pysockopt.host.namespaces as nsmod
else:
    conns_module = importlib.import_module("pysockopt.host.connections")
    nsmod = importlib.import_module("pysockopt.host.namespaces")


#: ioctl on a socket that opens the network namespace it lives in (linux/sockios.h).
SIOCGSKNS = 0x894C


def own_inode() -> int:
    """The calling thread's namespace: what no call may ever change."""
    return os.stat("/proc/thread-self/ns/net").st_ino


@contextlib.contextmanager
def unchanged_namespace() -> Iterator[None]:
    """Fail if the block leaves the calling thread in another network namespace."""
    before = own_inode()
    try:
        yield
    finally:
        assert own_inode() == before, "the calling thread was left in another namespace"


# --- container attribution from cgroup paths (no root needed)

HEX = "0123456789abcdef" * 4
HEX2 = "fedcba9876543210" * 4
POD = "5f9d6a2b-8c1e-4f3a-9b7d-2e4c6a8f0b1d"
POD_ = POD.replace("-", "_")

#: (cgroup path, runtime, id, pod uid, name): one case per row of CGROUP_PATTERNS at least.
CASES = [
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/"
     f"cri-containerd-{HEX}.scope", "containerd", HEX, POD, None),
    (f"/kubepods.slice/kubepods-pod{POD_}.slice/cri-containerd-{HEX}.scope",
     "containerd", HEX, POD, None),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/"
     f"crio-{HEX}.scope", "cri-o", HEX, POD, None),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/"
     f"docker-{HEX}.scope", "docker", HEX, POD, None),
    (f"/kubepods/burstable/pod{POD}/crio-{HEX}", "cri-o", HEX, POD, None),
    (f"/kubepods/besteffort/pod{POD}/{HEX}", "cri", HEX, POD, None),
    (f"/kubepods/pod{POD}/{HEX}", "cri", HEX, POD, None),
    (f"/system.slice/docker-{HEX}.scope", "docker", HEX, None, None),
    (f"/system.slice/docker-{HEX}.scope/init.scope", "docker", HEX, None, None),
    (f"/docker/{HEX}", "docker", HEX, None, None),
    (f"/machine.slice/libpod-{HEX}.scope", "podman", HEX, None, None),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{HEX}.scope",
     "podman", HEX, None, None),
    (f"/libpod_parent/libpod-{HEX}", "podman", HEX, None, None),
    ("/lxc.payload.web01", "lxc", "web01", None, "web01"),
    ("/lxc.payload.web01/system.slice/nginx.service", "lxc", "web01", None, "web01"),
    ("/lxc/web01", "lxc", "web01", None, "web01"),
    ("/machine.slice/systemd-nspawn@build01.service/payload", "systemd-nspawn", "build01",
     None, "build01"),
    (r"/machine.slice/machine-qemu\x2d1\x2dvm01.scope", "systemd-machined", "qemu-1-vm01",
     None, "qemu-1-vm01"),
    ("/system.slice/nginx.service", "systemd", "nginx.service", None, "nginx.service"),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/podcast.service", "systemd",
     "podcast.service", None, "podcast.service"),
]

NOT_CONTAINERS = [
    "/", "/init.scope", "/user.slice/user-1000.slice/session-3.scope",
    f"/system.slice/docker-{HEX[:12]}.scope",  # not a 64-hex id
    f"/system.slice/crio-conmon-{HEX}.scope", "/machine.slice",
    f"/system.slice/libpod-conmon-{HEX}.scope",
]


@pytest.mark.parametrize(("path", "runtime", "cid", "pod", "name"), CASES)
def test_cgroup_path_names_its_container(path: str, runtime: str, cid: str, pod: str | None,
                                          name: str | None) -> None:
    assert container_from_cgroup(path) == Container(runtime, cid, pod, name)


@pytest.mark.parametrize("path", NOT_CONTAINERS)
def test_cgroup_paths_of_no_container(path: str) -> None:
    assert container_from_cgroup(path) is None


def test_every_pattern_row_has_a_case_and_its_example_matches_it() -> None:
    rows_hit = set()
    for path, *_ in CASES:
        found = cmod._match(path)
        assert found is not None, path
        rows_hit.add(found[0])
    missing = [CGROUP_PATTERNS[i].regex for i in range(len(CGROUP_PATTERNS)) if i not in rows_hit]
    assert not missing, f"rows without a test case: {missing}"
    for index, row in enumerate(CGROUP_PATTERNS):
        found = cmod._match(row.example)
        assert found is not None and found[0] == index, row
        container = container_from_cgroup(row.example)
        assert container is not None and container.runtime == row.runtime, row


def test_short_id() -> None:
    assert Container("docker", HEX).short_id == HEX[:12]
    assert Container("lxc", "web01").short_id == "web01"


def test_proc_cgroup_text_v2_first_then_v1() -> None:
    text = (f"12:memory:/docker/{HEX2}\n9:name=systemd:/system.slice/docker-{HEX2}.scope\n"
            f"0::/system.slice/docker-{HEX}.scope\n")
    assert cmod._cgroup_paths(text)[0] == f"/system.slice/docker-{HEX}.scope"
    assert cmod._cgroup_paths("garbage\n\n0::/\n") == ["/"]


def test_names_read_from_disk_where_runtimes_keep_them(tmp_path: pathlib.Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docker" / HEX).mkdir(parents=True)
    (tmp_path / "docker" / HEX / "config.v2.json").write_text(json.dumps({"Name": "/web"}))
    (tmp_path / "pods" / f"shop_cart-7d9f_{POD}").mkdir(parents=True)
    podman = tmp_path / "containers.json"
    podman.write_text(json.dumps([{"id": HEX2, "names": ["db"]}]))
    monkeypatch.setattr(cmod, "_DOCKER_CONTAINERS", str(tmp_path / "docker"))
    monkeypatch.setattr(cmod, "_POD_LOGS", str(tmp_path / "pods"))
    monkeypatch.setattr(cmod, "_PODMAN_CONTAINERS", str(podman))
    assert cmod._named(Container("docker", HEX)).name == "web"
    assert cmod._named(Container("podman", HEX2)).name == "db"
    assert cmod._named(Container("containerd", HEX, POD)).name == "shop/cart-7d9f"
    assert cmod._named(Container("docker", HEX2)).name is None  # no config: no name


# --- bad input (no root needed)


@pytest.mark.parametrize("bad", [True, 1.5, b"x", object()])
def test_netns_of_the_wrong_type(bad: object) -> None:
    with unchanged_namespace(), pytest.raises(TypeError):
        state_counts(netns=bad)  # type: ignore[arg-type]  # the wrong type on purpose


@pytest.mark.parametrize("bad", ["", ".", "..", "a\0b", 0, -5])
def test_netns_values_that_name_nothing(bad: str | int) -> None:
    with unchanged_namespace(), pytest.raises(InvalidConfigError):
        state_counts(netns=bad)


def test_paths_that_are_not_network_namespaces() -> None:
    for path in ("/etc/hostname", "/proc/self/ns/mnt", "/tmp"):
        with unchanged_namespace(), pytest.raises(InvalidConfigError, match="network namespace"):
            connections(netns=path)


def test_fifos_devices_and_other_files_are_refused_unopened(tmp_path: pathlib.Path) -> None:
    # A FIFO would block open() for good, and opening a device can act: only nsfs files are
    # ever opened. A reader stuck in open() of the FIFO would let this writer's non-blocking
    # open succeed (and free it): that is how the test sees an open that must not happen.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = threading.Event()
    opened: list[int] = []

    def watch() -> None:
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody has it open for reading
                done.wait(0.02)
                continue
            opened.append(fd)
            os.close(fd)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with unchanged_namespace(), pytest.raises(
                InvalidConfigError, match="not a network namespace but a FIFO"):
            state_counts(netns=str(fifo))
    finally:
        done.set()
        watcher.join()
    assert not opened, "the FIFO was opened"
    for path, kind in (("/dev/null", "a character device"), ("/dev/zero", "a character device"),
                       ("/tmp", "a directory"), ("/etc/hostname", "a regular file"),
                       ("/proc/self/ns/mnt", "a mnt namespace")):
        with unchanged_namespace(), pytest.raises(InvalidConfigError) as caught:
            connections(netns=path)
        assert isinstance(caught.value, nsmod.NotANetnsError)
        assert caught.value.kind == kind and caught.value.path == path


def test_cli_netns_that_is_a_fifo_or_a_terminal(tmp_path: pathlib.Path) -> None:
    # In a session of its own, so /dev/tty is no terminal of the child's: before the check it
    # came back as a bare ENXIO from open(); the FIFO hung until killed.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in ((str(fifo), "a FIFO"), ("/dev/tty", "a character device")):
        r = subprocess.run([sys.executable, "-m", "pysockopt", "states", "--netns", path],
                           capture_output=True, text=True, timeout=30, start_new_session=True,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 2, r.stderr
        assert f"pysockopt states: --netns {path}: not a network namespace ({kind})" in r.stderr


def test_names_paths_and_pids_that_do_not_exist() -> None:
    with unchanged_namespace(), pytest.raises(FileNotFoundError, match="ip netns list"):
        state_counts(netns=f"pso-none-{uuid.uuid4().hex[:8]}")
    with unchanged_namespace(), pytest.raises(FileNotFoundError):
        state_counts(netns="/run/netns/pso-none-at-all")
    with unchanged_namespace(), pytest.raises(ProcessLookupError):
        state_counts(netns=2**22 + 12345)  # above pid_max's ceiling: never a process


def test_own_namespace_needs_no_privilege() -> None:
    # Any way of naming the caller's own namespace is the plain call: no thread, no setns.
    with unchanged_namespace():
        me = nsmod.current_namespace()
        assert os.getpid() in me.pids
        for arg in (me, os.getpid(), "/proc/thread-self/ns/net", f"/proc/{os.getpid()}/ns/net"):
            assert all(c.netns is None for c in connections(netns=arg))
            assert nsmod.resolve(arg) is None
        assert namespaces()[0].inode == own_inode()


def test_native_entry_errors_leave_the_thread_alone() -> None:
    q = ffi.new("struct pso_sd_query *", (0, 0xFFF, -1, 0))
    sink = ffi.new("struct pso_sd_sink *")
    lib.pso_sd_sink_init(sink, 0)
    step = ffi.new("int *")
    fd = os.open("/etc/hostname", os.O_RDONLY)
    try:
        with unchanged_namespace():
            assert lib.pso_netns_dump(fd, q, sink, step) == -22  # EINVAL: not a namespace
            assert step[0] == lib.PSO_NETNS_STEP_SETNS
            assert lib.pso_netns_dump(-1, q, sink, step) == -9  # EBADF
            assert lib.pso_netns_dump(fd, ffi.NULL, sink, step) == -22
            buf = ffi.new("uint8_t[]", 16)
            n = ffi.new("size_t *")
            assert lib.pso_netns_read(fd, b"/proc/thread-self/net/tcp", buf, 16, n) == -22
    finally:
        os.close(fd)
        lib.pso_sd_sink_free(sink)


def test_native_look_reads_and_dumps_in_one_trip_and_stops_at_a_failed_dump() -> None:
    step = ffi.new("int *")
    fd = os.open("/etc/hostname", os.O_RDONLY)
    try:
        with unchanged_namespace():
            assert lib.pso_netns_look(fd, ffi.NULL, 0, ffi.NULL, 0, step) == -22  # not a netns
            assert step[0] == lib.PSO_NETNS_STEP_SETNS
            assert lib.pso_netns_look(-1, ffi.NULL, 0, ffi.NULL, 0, step) == -9  # EBADF
            assert lib.pso_netns_look(fd, ffi.NULL, 1, ffi.NULL, 0, step) == -22  # no files
            assert lib.pso_netns_look(fd, ffi.NULL, 0, ffi.NULL, 1, step) == -22  # no dumps
    finally:
        os.close(fd)
    if os.geteuid() != 0:
        return  # entering even one's own namespace needs CAP_SYS_ADMIN
    with Pile() as pile:
        pile.established(3)
        q = ffi.new("struct pso_sd_query *", (0, 1 << TcpState.ESTABLISHED, pile.port, 0))
        sink = new_sink(False)
        reqs = ffi.new("struct pso_netns_dump_req[]", 3)
        reqs[0].q, reqs[0].sink, reqs[0].tries = q, sink, 4
        reqs[1].q, reqs[1].sink = ffi.NULL, sink  # fails: the one after it never runs
        reqs[2].q, reqs[2].sink = q, sink
        path = ffi.new("char[]", b"/proc/thread-self/net/tcp")
        buf = ffi.new("uint8_t[]", 1 << 20)
        files = ffi.new("struct pso_netns_file[]", 1)
        files[0].path, files[0].buf, files[0].cap = path, buf, 1 << 20
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            with unchanged_namespace():
                assert lib.pso_netns_look(own, files, 1, reqs, 3, step) == 0
        finally:
            os.close(own)
        assert step[0] == 0 and files[0].rc == 0 and files[0].len > 0
        assert b"local_address" in ffi.buffer(buf, files[0].len)[:]
        assert (reqs[0].rc, reqs[1].rc, reqs[2].rc) == (0, -22, -errno.ECANCELED)
        assert reqs[1].step == lib.PSO_SD_STEP_SEND
        assert sink.counts[TcpState.ESTABLISHED] == 6  # both ends of 3 pairs, dumped once


def test_native_socket_errors_name_their_step() -> None:
    step = ffi.new("int *")
    fd = os.open("/etc/hostname", os.O_RDONLY)
    try:
        with unchanged_namespace():
            assert lib.pso_netns_socket(fd, socket.AF_INET, socket.SOCK_STREAM, 0, step) == -22
            assert step[0] == lib.PSO_NETNS_STEP_SETNS
            assert lib.pso_netns_socket(-1, socket.AF_INET, socket.SOCK_STREAM, 0, step) == -9
            assert step[0] == lib.PSO_NETNS_STEP_SETNS
            assert lib.pso_netns_run(fd, ffi.NULL, ffi.NULL, step) == -22
    finally:
        os.close(fd)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        # Entering one's own namespace needs CAP_SYS_ADMIN too, so only root gets to socket().
        if os.geteuid() == 0:
            rc = lib.pso_netns_socket(own, socket.AF_INET, socket.SOCK_STREAM, 9999, step)
            assert rc < 0 and step[0] == lib.PSO_NETNS_STEP_SOCKET
    finally:
        os.close(own)

# --- four real namespaces, with real processes holding real sockets

#: Runs inside a namespace: makes its sockets, prints "PID PORT", holds them until stdin closes.
HOLDER = textwrap.dedent("""
    import os, socket, struct, sys, time
    kind, n = sys.argv[1], int(sys.argv[2])
    os.system("ip link set lo up")
    def state(s):
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4 if kind == "queue" else 128)
    port = listener.getsockname()[1]
    held, servers = [listener], []
    for _ in range(n):
        c = socket.socket()
        if kind == "queue":  # nobody ever accepts: the queue fills (backlog 4 holds 5)
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            held.append(c)
            continue
        c.connect(("127.0.0.1", port))
        s, _ = listener.accept()
        held += [c, s]
        servers.append(s)
        if kind == "close_wait":  # the peer closed; this process never does: CLOSE_WAIT
            c.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + 10
    def ready():
        if kind == "close_wait":
            return all(state(s) == 8 for s in servers)
        if kind == "queue":  # tcpi_unacked (offset 24) of a listener: its accept queue
            info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            return struct.unpack_from("I", info, 24)[0] >= 5
        return True
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    print(os.getpid(), port, flush=True)
    sys.stdin.read()
""")


@dataclass
class Holder:
    proc: subprocess.Popen[str]
    pid: int
    port: int

    def stop(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)  # our own child, by its pid
            self.proc.wait(timeout=10)


def start_holder(prefix: list[str], kind: str, n: int) -> Holder:
    proc = subprocess.Popen([*prefix, sys.executable, "-c", HOLDER, kind, str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2:
        proc.kill()
        proc.wait()
        raise AssertionError(f"holder {kind} did not start")
    return Holder(proc, int(line[0]), int(line[1]))


@dataclass
class World:
    pile: str      # ip netns name: a CLOSE_WAIT pile held by a process inside
    queue: str     # ip netns name: a listener whose accept queue is full
    clean: str     # ip netns name: a few healthy connections
    holders: dict[str, Holder]

    @property
    def unnamed_pid(self) -> int:
        """The process of the fourth namespace, made with unshare -n: known only by pid."""
        return self.holders["unnamed"].pid

    def inode(self, key: str) -> int:
        return os.stat(f"/proc/{self.holders[key].pid}/ns/net").st_ino


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    reason = have_netns()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:8]
    w = World(f"pso-pile-{tag}", f"pso-queue-{tag}", f"pso-clean-{tag}", {})
    made: list[str] = []
    try:
        for name in (w.pile, w.queue, w.clean):
            subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
            made.append(name)
        w.holders["pile"] = start_holder(["ip", "netns", "exec", w.pile], "close_wait", 15)
        w.holders["queue"] = start_holder(["ip", "netns", "exec", w.queue], "queue", 8)
        w.holders["clean"] = start_holder(["ip", "netns", "exec", w.clean], "established", 3)
        w.holders["unnamed"] = start_holder(["unshare", "-n"], "established", 2)
        yield w
    finally:
        for h in w.holders.values():
            h.stop()
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def ss_state_counts(prefix: list[str]) -> Counter[TcpState]:
    out = subprocess.run([*prefix, "ss", "-tanH"], check=True, capture_output=True,
                         text=True).stdout
    return Counter(SS_STATES[line.split()[0]] for line in out.splitlines() if line.strip())


def _prefix(world: World, key: str) -> tuple[list[str], str | int]:
    """(command prefix that runs ss inside, the netns= value) for each of the four."""
    if key == "unnamed":
        return ["nsenter", f"--net=/proc/{world.unnamed_pid}/ns/net"], world.unnamed_pid
    name: str = getattr(world, key)
    return ["ip", "netns", "exec", name], name


@pytest.mark.root
def test_namespaces_finds_all_four(world: World) -> None:
    with unchanged_namespace():
        found = namespaces()
    by_inode = {ns.inode: ns for ns in found}
    assert len(by_inode) == len(found), "each namespace once"
    by_name = {ns.name: ns for ns in found if ns.name}
    for key in ("pile", "queue", "clean"):
        ns = by_name[getattr(world, key)]
        assert ns.inode == world.inode(key)
        assert ns.path == f"/run/netns/{ns.name}"
        assert world.holders[key].pid in ns.pids
    unnamed = by_inode[world.inode("unnamed")]
    assert unnamed.name is None and unnamed.pids == (world.unnamed_pid,)
    assert unnamed.path == f"/proc/{world.unnamed_pid}/ns/net"
    assert found[0].inode == own_inode() and os.getpid() in found[0].pids


@pytest.mark.root
@pytest.mark.parametrize("key", ["pile", "queue", "clean", "unnamed"])
@pytest.mark.parametrize("source", ["netlink", "proc"])
def test_state_counts_match_ss_inside(world: World, key: str,
                                      source: Literal["netlink", "proc"]) -> None:
    prefix, arg = _prefix(world, key)
    with unchanged_namespace():
        ours = state_counts(netns=arg, source=source)
    assert ours == dict(ss_state_counts(prefix))
    assert ours, "the namespace has sockets"
    assert ours != state_counts(), "and they are not the caller's"


@pytest.mark.root
def test_refused_netlink_inside_falls_back_to_proc_inside(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_proc = state_counts(netns=world.pile, source="proc")

    calls = []

    def refused(*args: object) -> OSError:
        calls.append(args)
        return OSError(13, "sock_diag refused in there (seam)")  # a dump's failure in the trip

    monkeypatch.setattr(conns_module, "_run_in", refused)
    with unchanged_namespace():
        assert state_counts(netns=world.pile) == from_proc  # /proc, read inside
    assert calls, "the seam was not on the path"
    assert from_proc == dict(ss_state_counts(["ip", "netns", "exec", world.pile]))

    def not_root(*args: object) -> None:
        raise NetnsPermissionError(1, "entering needs CAP_SYS_ADMIN (seam)")

    monkeypatch.setattr(conns_module, "_run_in", not_root)
    with unchanged_namespace(), pytest.raises(NetnsPermissionError):
        state_counts(netns=world.pile)  # no /proc fallback can help: it must enter too


@pytest.mark.root
def test_connections_carry_their_namespace(world: World) -> None:
    ns = next(n for n in namespaces() if n.name == world.pile)
    with unchanged_namespace():
        args: tuple[NetNamespace | str | int, ...] = (
            ns, world.pile, f"/run/netns/{world.pile}", world.holders["pile"].pid)
        for arg in args:
            conns = connections(netns=arg)
            assert conns and {c.netns for c in conns} == {ns}
            assert Counter(c.state for c in conns)[TcpState.CLOSE_WAIT] == 15
            assert all(c.as_dict()["netns"] == ns.inode for c in conns)
    mine = connections()
    assert all(c.netns is None for c in mine)
    assert not {c.inode for c in conns if c.inode} & {c.inode for c in mine}


@pytest.mark.root
def test_sysctls_and_proc_files_are_read_inside(world: World) -> None:
    subprocess.run(["ip", "netns", "exec", world.clean, "sysctl", "-qw",
                    "net.ipv4.tcp_keepalive_time=1234"], check=True)
    with unchanged_namespace():
        inside = host_facts(netns=world.clean)
        outside = host_facts()
    assert inside.keepalive is not None and inside.keepalive.idle == 1234
    assert outside.keepalive is not None and outside.keepalive.idle != 1234
    with nsmod.opened(world.clean) as target:
        assert target is not None
        tcp, big = nsmod.read_files(target, ["/proc/thread-self/net/tcp", "/proc/no/such"])
        assert isinstance(tcp, bytes) and isinstance(big, FileNotFoundError)
        # 3 pairs and a listener, and the header line.
        assert len(tcp.splitlines()) == 1 + 7
        buf = ffi.new("uint8_t[]", 8)
        n = ffi.new("size_t *")
        assert lib.pso_netns_read(target.fd, b"/proc/thread-self/net/tcp", buf, 8, n) == -105
        assert n[0] == 8  # ENOBUFS: the first 8 bytes, and the file holds more



@pytest.mark.root
def test_native_socket_is_made_inside(world: World) -> None:
    step = ffi.new("int *")
    with unchanged_namespace(), nsmod.opened(world.clean) as target:
        assert target is not None
        fd = lib.pso_netns_socket(target.fd, socket.AF_INET, socket.SOCK_STREAM, 0, step)
        assert fd >= 0 and step[0] == 0
        with socket.socket(fileno=fd) as sock:
            assert not os.get_inheritable(fd)
            nsfd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)  # the namespace the socket lives in
            try:
                assert os.fstat(nsfd).st_ino == os.fstat(target.fd).st_ino != own_inode()
            finally:
                os.close(nsfd)

@pytest.mark.root
def test_read_files_grows_past_the_first_buffer(world: World) -> None:
    big = pathlib.Path(pysockopt._native.__file__)
    assert big.stat().st_size > 2 * entmod._FIRST_CAP
    with unchanged_namespace(), nsmod.opened(world.clean) as target:
        (data,) = nsmod.read_files(target, [str(big)])
    assert data == big.read_bytes()


def test_cli_names_what_is_wrong_with_netns() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status, _ = _cli("states", "--netns", f"pso-none-{uuid.uuid4().hex[:8]}")
    assert status == 2 and "no network namespace named" in err.getvalue()
    with contextlib.redirect_stderr(err):
        status, _ = _cli("conns", "--netns", "/etc/hostname")
    assert status == 2 and "network namespace" in err.getvalue()
    with contextlib.redirect_stderr(io.StringIO()):
        status, _ = _cli("diagnose", "--netns", "x", "--all-netns")
    assert status == 2  # one or the other


@pytest.mark.root
@pytest.mark.slow  # 50 rounds of calls into the namespace: 2.5 to 6.6 s measured
def test_no_descriptor_or_thread_is_left_behind(world: World) -> None:
    ns = next(n for n in namespaces() if n.name == world.pile)
    gone = NetNamespace(ns.inode + 10**6, ns.path, ns.name)

    def census() -> tuple[set[str], set[str]]:
        return set(os.listdir("/proc/self/fd")), set(os.listdir("/proc/self/task"))

    state_counts(netns=ns)  # anything lazily opened once is open now
    before = census()
    with unchanged_namespace():
        for _ in range(50):
            state_counts(netns=ns)
            connections(netns=world.pile, source="proc")
            host_facts(netns=ns)
            for bad in ("/etc/hostname", gone, "pso-none-such"):
                with pytest.raises((InvalidConfigError, FileNotFoundError)):
                    state_counts(netns=bad)
    # Nothing of ours left behind. Compared as sets of what is new: a thread or descriptor of an
    # earlier test may end meanwhile (seen once: 2 threads before, 1 after). A joined native
    # thread can stay listed in /proc/self/task for a moment after pthread_join returned (the
    # kernel wakes the joiner before it reaps the task), so a new task must go away by itself.
    assert census()[0] - before[0] == set()
    wait_for(lambda: not census()[1] - before[1], 2.0, "the native threads reaped")


@pytest.mark.root
def test_diagnose_every_namespace(world: World) -> None:
    with unchanged_namespace():
        result = for_each_netns(lambda ns: diagnose(netns=ns))
    by_inode = {ns.inode: d for ns, d in result.results}
    pile = by_inode[world.inode("pile")]
    codes = {f.code: f for f in pile.problems}
    assert "CLOSE_WAIT_PILE" in codes
    finding = codes["CLOSE_WAIT_PILE"]
    assert finding.netns is not None and finding.netns.name == world.pile
    assert pile.netns == finding.netns
    assert [p.pid for p in finding.processes] == [world.holders["pile"].pid]
    assert f"netns {world.pile}" not in json.dumps(finding.as_dict())  # JSON: the inode
    assert finding.as_dict()["netns"] == world.inode("pile")
    queue = by_inode[world.inode("queue")]
    # The full queue, and the SYNs it dropped meanwhile (LISTEN_DROPS), all on that listener.
    assert "ACCEPT_QUEUE_FULL" in {f.code for f in queue.problems}
    assert {f.code for f in queue.problems} <= {"ACCEPT_QUEUE_FULL", "LISTEN_DROPS"}
    for f in queue.problems:
        assert f.netns is not None and f.netns.name == world.queue
        assert f.port == world.holders["queue"].port
    for key in ("clean", "unnamed"):
        d = by_inode[world.inode(key)]
        assert d.ok and not [f for f in d.findings if f.sockets or f.severity > Severity.INFO]
    # Every finding names the namespace it was found in (the caller's own: None).
    for ns, d in result.results:
        where = None if ns.inode == own_inode() else ns
        assert all(f.netns == where for f in d.findings)
        assert d.netns == where


def _cli(*args: str) -> tuple[int, str]:
    with unchanged_namespace():
        return run_cli(*args)


@pytest.mark.root
def test_cli_diagnose_all_netns_groups_by_namespace(world: World) -> None:
    status, text = _cli("diagnose", "--all-netns")
    assert status == 1
    blocks = {b.split("\n", 1)[0]: b for b in text.split("== ")[1:]}
    pile = next(b for head, b in blocks.items() if head.startswith(f"netns {world.pile} "))
    head = pile.split("\n", 1)[0]
    assert f"inode {world.inode('pile')}" in head
    assert f"pids {world.holders['pile'].pid}" in head
    assert "CLOSE_WAIT_PILE" in pile and f"(pid {world.holders['pile'].pid})" in pile
    queue = next(b for head, b in blocks.items() if head.startswith(f"netns {world.queue} "))
    assert "ACCEPT_QUEUE_FULL" in queue and "CLOSE_WAIT_PILE" not in queue
    clean = next(b for head, b in blocks.items() if head.startswith(f"netns {world.clean} "))
    assert "No problems found." in clean
    unnamed = next(b for head, b in blocks.items()
                   if head.startswith(f"netns inode {world.inode('unnamed')}"))
    assert f"pids {world.unnamed_pid}" in unnamed.split("\n", 1)[0]
    assert "this namespace" in next(h for h in blocks if str(own_inode()) in h)

    status, text = _cli("diagnose", "--all-netns", "--json")
    data = json.loads(text)
    assert status == 1 and data["ok"] is False
    entry = next(e for e in data["namespaces"] if e["netns"]["name"] == world.pile)
    assert entry["netns"]["inode"] == world.inode("pile")
    assert world.holders["pile"].pid in entry["netns"]["pids"]
    assert [f["code"] for f in entry["diagnosis"]["findings"] if f["severity"] != "info"] == [
        "CLOSE_WAIT_PILE"]
    assert entry["diagnosis"]["netns"]["name"] == world.pile


@pytest.mark.root
def test_cli_states_conns_and_netns_list(world: World) -> None:
    expected = ss_state_counts(["nsenter", f"--net=/proc/{world.unnamed_pid}/ns/net"])
    status, text = _cli("states", "--netns", str(world.unnamed_pid), "--json")
    data = json.loads(text)
    assert status == 0 and len(data["namespaces"]) == 1
    assert data["namespaces"][0]["states"]["total"] == sum(expected.values())
    assert data["namespaces"][0]["netns"]["pids"] == [world.unnamed_pid]

    status, text = _cli("conns", "--netns", world.queue, "--state", "listen")
    assert status == 0 and text.startswith(f"== netns {world.queue} (inode ")
    assert f"127.0.0.1:{world.holders['queue'].port}" in text

    status, text = _cli("states", "--all-netns")
    assert status == 0 and f"== netns {world.clean} " in text

    status, text = _cli("netns", "--json")
    rows = {r["inode"]: r for r in json.loads(text)["namespaces"]}
    assert rows[world.inode("unnamed")]["sockets"] == sum(expected.values())
    assert rows[world.inode("pile")]["name"] == world.pile
    status, text = _cli("netns")
    assert status == 0 and world.queue in text and str(world.inode("unnamed")) in text


@pytest.mark.root
def test_vanished_namespace_is_skipped_with_a_note(world: World) -> None:
    doomed = start_holder(["unshare", "-n"], "established", 1)
    try:
        ns = next(n for n in namespaces() if doomed.pid in n.pids)
    finally:
        doomed.stop()
    with unchanged_namespace(), pytest.raises(NetnsGoneError):
        state_counts(netns=ns)
    with unchanged_namespace(), pytest.raises(ProcessLookupError):
        state_counts(netns=doomed.pid)
    clean = next(n for n in namespaces() if n.name == world.clean)
    with unchanged_namespace():
        result = for_each_netns(lambda n: state_counts(netns=n), [ns, clean])
    assert [n for n, _ in result.results] == [clean]
    assert [(s.netns, s.reason) for s in result.skipped] == [(ns, "vanished")]
    assert result.complete  # nothing left there to see
    assert any("vanished" in note for note in result.notes)


@pytest.mark.root
def test_pid_reused_or_remounted_name_is_not_the_namespace(world: World) -> None:
    # A NetNamespace whose inode no longer matches its paths is gone, whatever now sits there.
    real = next(n for n in namespaces() if n.name == world.clean)
    stale = NetNamespace(real.inode + 10**6, real.path, real.name, real.pids)
    with unchanged_namespace(), pytest.raises(NetnsGoneError):
        connections(netns=stale)


# --- as an unprivileged user


#: Imports everything first (the interpreter may live where the user cannot read), then drops
#: root for good and reports what each call did, and the thread's namespace around each.
CHILD = textwrap.dedent("""
    import io, json, os, sys
    import pysockopt, pysockopt.cli, pysockopt.cli.netns
    from pysockopt import NetnsPermissionError, for_each_netns, namespaces, state_counts, diagnose
    from pysockopt.cli import main
    import argparse, textwrap, collections, encodings.ascii, encodings.utf_8, locale
    pysockopt.cli.build_parser()  # argparse reads gettext files: before giving up root
    uid, gid, name, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    def me():
        return os.stat("/proc/thread-self/ns/net").st_ino
    report = {"start": me()}
    for label, arg in (("name", name), ("path", "/run/netns/" + name)):
        try:
            state_counts(netns=arg)
            report[label] = "no error"
        except NetnsPermissionError as err:
            report[label] = str(err)
        report[label + "_after"] = me()
    try:
        state_counts(netns=pid)
        report["pid"] = "no error"
    except NetnsPermissionError as err:
        report["pid"] = str(err)
    report["pid_after"] = me()
    found = namespaces()
    report["listed"] = [n.name for n in found]
    report["unseen"] = found.unseen
    result = for_each_netns(lambda ns: diagnose(netns=ns))
    report["looked_at"] = [ns.inode for ns, _ in result.results]
    report["refused"] = [s.netns.name for s in result.refused]
    report["notes"] = list(result.notes)
    by_pid = pysockopt.NetNamespace(os.stat("/run/netns/" + name).st_ino,
                                    f"/proc/{pid}/ns/net", None, (pid,))
    result = for_each_netns(lambda ns: state_counts(netns=ns), [by_pid])
    report["ptrace_notes"] = list(result.notes)
    report["ptrace_checks"] = [s.check for s in result.skipped]
    out = io.StringIO()
    report["cli_status"] = main(["diagnose", "--all-netns"], out)
    report["cli"] = out.getvalue()
    report["end"] = me()
    print(json.dumps(report))
""")


def _unprivileged_user() -> pwd.struct_passwd:
    return pysockopt_test_user()  # removed at the end of the session that made it


@pytest.mark.root
def test_unprivileged_user_is_told_what_it_needs(world: World) -> None:
    user = _unprivileged_user()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(user.pw_uid), str(user.pw_gid), world.pile,
         str(world.holders["pile"].pid)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["start"] == own_inode()  # the child starts in our namespace ...
    for key in ("name_after", "path_after", "pid_after", "end"):
        assert r[key] == r["start"]  # ... and no failure ever moved its thread
    assert "CAP_SYS_ADMIN" in r["name"] and "CAP_SYS_ADMIN" in r["path"]
    assert "CAP_SYS_PTRACE" in r["pid"]  # another user's /proc/PID/ns/net: EACCES
    assert r["ptrace_checks"] == ["ptrace"]
    (note,) = r["ptrace_notes"]
    assert "CAP_SYS_PTRACE" in note and "CAP_SYS_ADMIN" not in note
    # As non-root: /run/netns names are listed, other users' processes are not looked at.
    assert {world.pile, world.queue, world.clean} <= set(r["listed"])
    assert r["unseen"] > 0
    assert r["looked_at"] == [own_inode()]  # its own namespace is still diagnosed
    assert {world.pile, world.queue, world.clean} <= set(r["refused"])
    assert any("CAP_SYS_ADMIN" in n for n in r["notes"])
    assert re.search(r"Not looked at: \d+ network namespace\(s\) could not be entered", r["cli"])
    assert "1 network namespace(s) looked at" in r["cli"]


#: Runs the CLI as the unprivileged user from inside a clean namespace: everything it can
#: see is healthy, and the namespaces it cannot enter (a full accept queue among them) must
#: never read as "no problems".
CLI_CHILD = textwrap.dedent("""
    import io, json, os, sys
    import pysockopt, pysockopt.cli, pysockopt.cli.netns
    from pysockopt.cli import main
    import argparse, textwrap, collections, encodings.ascii, encodings.utf_8, locale
    pysockopt.cli.build_parser()
    uid, gid = int(sys.argv[1]), int(sys.argv[2])
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    report = {}
    for args in (["diagnose", "--all-netns"], ["diagnose", "--all-netns", "--json"],
                 ["states", "--all-netns"], ["states", "--all-netns", "--json"],
                 ["conns", "--all-netns"], ["netns"], ["netns", "--json"]):
        out = io.StringIO()
        status = main(args, out)
        report[" ".join(args)] = [status, out.getvalue()]
    print(json.dumps(report))
""")


@pytest.mark.root
def test_unprivileged_all_netns_never_reads_as_no_problems(world: World) -> None:
    user = _unprivileged_user()
    # Three namespaces it cannot enter, made here (not whatever else the host holds): the pile,
    # the full queue and an empty one. Its own (the clean one) it looks at.
    other = f"pso-other-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", other], check=True, capture_output=True)
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", world.clean, sys.executable, "-c", CLI_CHILD,
             str(user.pw_uid), str(user.pw_gid)],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    finally:
        subprocess.run(["ip", "netns", "del", other], capture_output=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    first = re.compile(r"Not looked at: (\d+) network namespace\(s\) could not be entered")

    def refused_first(text: str) -> int:
        """The count of namespaces not entered, which must be the output's first line."""
        m = first.match(text.splitlines()[0])
        assert m, text
        n = int(m.group(1))
        assert n >= 3, text  # at least the pile, the full queue (CRITICAL) and the other one
        return n

    # Each output is checked on its own: other namespaces may come and go between the runs.
    status, text = r["diagnose --all-netns"]
    refused = refused_first(text)
    last = text.splitlines()[-1]
    assert status == 0  # nothing wrong in what could be seen, and the output says just that
    assert last.startswith(f"{refused} network namespace(s) could not be entered"), text
    assert last.endswith(". No problems found in what could be seen "
                         "(1 network namespace(s) looked at)."), text
    assert "0 with problems" not in text

    status, text = r["diagnose --all-netns --json"]
    data = json.loads(text)
    assert status == 0 and data["ok"] is None and data["complete"] is False
    refused = data["not_entered"]
    assert refused >= 3 and len(data["namespaces"]) == 1
    assert data["notes"][0].startswith(f"{refused} network namespace(s) could not be entered")
    assert [s["check"] for s in data["skipped"] if s["reason"] == "permission"] == [
        "setns"] * refused

    for key in ("states --all-netns", "conns --all-netns"):
        status, text = r[key]
        refused = refused_first(text)
        assert status == 0
        assert text.splitlines()[-1].startswith(
            f"Incomplete: {refused} network namespace(s) could not be entered"), text
    data = json.loads(r["states --all-netns --json"][1])
    assert data["complete"] is False and data["not_entered"] >= 3

    status, text = r["netns"]
    refused = refused_first(text)
    assert status == 0
    assert re.match(rf"\d+ network namespace\(s\) listed; {refused} could not be entered "
                    r"\(sockets not counted\)", text.splitlines()[-1]), text
    # Root's processes are not ours to look at: namespaces may be missing, and it says so.
    assert "process(es) could not be read, so more may exist." in text.splitlines()[-1]
    data = json.loads(r["netns --json"][1])
    assert data["complete"] is False and data["not_entered"] >= 3
    assert data["unseen_processes"] > 0
    assert sum(row["sockets"] is None for row in data["namespaces"]) == data["not_entered"]


#: Runs as root of a user namespace of its own (unshare -U -r): euid 0, yet no capability over
#: the processes and namespaces outside it. Reports what each refusal said.
USERNS_CHILD = textwrap.dedent("""
    import json, os, sys
    from pysockopt import NetNamespace, NetnsPermissionError, for_each_netns, state_counts
    name, pid, inode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    def me():
        return os.stat("/proc/thread-self/ns/net").st_ino
    report = {"euid": os.geteuid(), "start": me()}
    for label, arg in (("pid", pid), ("name", name)):
        try:
            state_counts(netns=arg)
            report[label] = "no error"
        except NetnsPermissionError as err:
            report[label] = str(err)
            report[label + "_check"] = err.check
    by_pid = NetNamespace(inode, f"/proc/{pid}/ns/net", None, (pid,))
    by_name = NetNamespace(inode, "/run/netns/" + name, name)
    for label, ns in (("ptrace", by_pid), ("setns", by_name)):
        result = for_each_netns(lambda n: state_counts(netns=n), [ns])
        report[label + "_notes"] = list(result.notes)
        report[label + "_skipped"] = [s.check for s in result.skipped]
    report["end"] = me()
    print(json.dumps(report))
""")


def _unshare_user_works() -> bool:
    return subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True).returncode == 0


@pytest.mark.root
def test_refusals_say_which_check_failed_even_as_root(world: World) -> None:
    if not _unshare_user_works():
        pytest.skip("unshare -U -r (a user namespace of its own) does not work here")
    pid = world.holders["pile"].pid
    out = subprocess.run(
        ["unshare", "-U", "-r", sys.executable, "-c", USERNS_CHILD, world.pile, str(pid),
         str(world.inode("pile"))],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["euid"] == 0 and r["end"] == r["start"]
    # Opening /proc/PID/ns/net of a process outside: the ptrace check refused, not a missing
    # root, and the errno is named.
    assert r["pid_check"] == "ptrace"
    assert "another user's process" not in r["pid"] and "needs root" not in r["pid"]
    assert "even as root" in r["pid"] and "EACCES" in r["pid"] and "ptrace" in r["pid"]
    # Opening /run/netns/NAME works; setns then needs CAP_SYS_ADMIN over the namespace's owner.
    assert r["name_check"] == "setns" and "CAP_SYS_ADMIN" in r["name"]
    assert "EPERM" in r["name"] and "run as root" not in r["name"]
    assert r["ptrace_skipped"] == ["ptrace"] and r["setns_skipped"] == ["setns"]
    (ptrace_note,) = r["ptrace_notes"]
    assert "ptrace" in ptrace_note and "CAP_SYS_ADMIN" not in ptrace_note
    (setns_note,) = r["setns_notes"]
    assert "CAP_SYS_ADMIN" in setns_note and "ptrace" not in setns_note


# --- containers from real cgroups


def cgroup2_mounts(mountinfo: bytes | None = None) -> list[str]:
    """Every cgroup2 mount point in ``mountinfo`` (default: /proc/self/mountinfo's bytes).

    A mount point may hold any byte but NUL: the kernel escapes space, tab, newline and
    backslash as octal, and the rest need not be UTF-8 (decoded as os.fsdecode does).
    """
    if mountinfo is None:
        with open("/proc/self/mountinfo", "rb") as f:
            mountinfo = f.read()
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(b" ")
        sep = fields.index(b"-")
        if fields[sep + 1] == b"cgroup2":
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
            found.append(os.fsdecode(point))
    return found


def cgroup2_mount() -> str | None:
    """The first cgroup2 mount point of this process, or None."""
    mounts = cgroup2_mounts()
    return mounts[0] if mounts else None


@pytest.mark.root
def test_cgroup2_mount_reads_any_byte_in_a_mount_point(tmp_path: pathlib.Path) -> None:
    # A real mount in a mount namespace of its own, at a path with a space (escaped as \040 by
    # the kernel) and a byte that is not UTF-8.
    reason = have_netns()
    if reason:
        pytest.skip(reason)
    odd = os.path.join(os.fsencode(tmp_path), b"cg v2 \xff\\x")
    os.mkdir(odd)
    out = subprocess.run(
        [b"unshare", b"-m", b"sh", b"-c",
         b'mount --make-rprivate / && mount -t cgroup2 none "$0" && cat /proc/self/mountinfo', odd],
        capture_output=True, timeout=60)
    if out.returncode != 0:
        pytest.skip(f"cannot mount cgroup2 here: {out.stderr.decode(errors='replace')}")
    assert b"\\040" in out.stdout and b"\xff" in out.stdout  # the kernel's escaping, raw bytes
    assert os.fsdecode(odd) in cgroup2_mounts(out.stdout)
    assert os.path.isdir(cgroup2_mounts(out.stdout)[-1])


@contextlib.contextmanager
def in_cgroup(mount: str, relative: str, pid: int) -> Iterator[None]:
    """Move ``pid`` into the cgroup v2 ``relative`` (made here), and back out afterwards."""
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
        home = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
    parts = relative.strip("/").split("/")
    made = []
    try:
        for i in range(1, len(parts) + 1):
            path = os.path.join(mount, *parts[:i])
            if not os.path.isdir(path):
                os.mkdir(path)
                made.append(path)
        with open(os.path.join(mount, *parts, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        yield
    finally:
        with contextlib.suppress(OSError), open(
                os.path.join(mount, home.lstrip("/"), "cgroup.procs"), "w") as f:
            f.write(str(pid))
        for path in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(path)


@pytest.fixture
def cgroup2() -> str:
    reason = have_netns()
    if reason:
        pytest.skip(reason)
    mount = cgroup2_mount()
    if mount is None or not os.access(mount, os.W_OK):
        pytest.skip("no writable cgroup2 mount in /proc/self/mountinfo")
    return mount


@pytest.mark.root
@pytest.mark.parametrize("kind", ["docker", "kubepods"])
def test_container_attribution_from_real_cgroups(cgroup2: str, kind: str) -> None:
    tag = uuid.uuid4().hex[:8]
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    pod = str(uuid.uuid4())
    relative = {
        "docker": f"pso-test-{tag}/system.slice/docker-{cid}.scope",
        "kubepods": f"pso-test-{tag}/kubepods.slice/kubepods-burstable.slice/"
                    f"kubepods-burstable-pod{pod.replace('-', '_')}.slice/"
                    f"cri-containerd-{cid}.scope",
    }[kind]
    expected = {"docker": Container("docker", cid),
                "kubepods": Container("containerd", cid, pod)}[kind]
    holder = start_holder(["unshare", "-n"], "established", 1)
    try:
        # Not where the runner's cgroup says (a systemd service's names a container), but a
        # plain cgroup made here: no container.
        with in_cgroup(cgroup2, f"pso-test-{tag}/plain", holder.pid):
            before = next(n for n in namespaces() if holder.pid in n.pids)
            assert before.container is None
        with in_cgroup(cgroup2, relative, holder.pid):
            with open(f"/proc/{holder.pid}/cgroup", encoding="utf-8") as f:
                assert f"0::/{relative}\n" in f.read()
            ns = next(n for n in namespaces() if holder.pid in n.pids)
            assert ns.container == expected
            assert nsmod.container_of_pid(holder.pid) == expected
            status, text = _cli("diagnose", "--netns", str(holder.pid))
            assert status == 0  # one healthy connection
            said = f"{expected.runtime} {cid[:12]}" + (f" · pod {pod}" if kind == "kubepods"
                                                       else "")
            assert said in text.split("\n", 1)[0]
            # `pysockopt netns` names the container in the same words as the header.
            status, text = _cli("netns")
            row = next(line for line in text.splitlines() if line.startswith(str(ns.inode)))
            assert status == 0 and said in row
            d = diagnose(netns=holder.pid)
            assert d.netns is not None and d.netns.container == expected
        assert not os.path.exists(os.path.join(cgroup2, f"pso-test-{tag}"))
    finally:
        holder.stop()


def test_public_names_are_exported() -> None:
    for name in ("namespaces", "NetNamespace", "Container", "for_each_netns", "NetnsResults",
                 "NetnsGoneError", "NetnsPermissionError", "CGROUP_PATTERNS"):
        assert name in pysockopt.__all__
    assert issubclass(NetnsPermissionError, PermissionError)
    assert issubclass(NetnsGoneError, FileNotFoundError)


# --- issue 19: names and paths are bytes; a name that is briefly a plain file


@contextlib.contextmanager
def _mounted_netns(path: bytes) -> Iterator[bytes]:
    """A network namespace held only by a bind mount at ``path`` (as Docker keeps its own)."""
    open(path, "wb").close()
    try:
        subprocess.run([b"unshare", b"--net=" + path, b"true"], check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run([b"umount", path], capture_output=True)
    finally:
        os.unlink(path)


@pytest.mark.root
def test_a_mount_at_an_undecodable_path_is_found_and_opened(tmp_path: pathlib.Path) -> None:
    # Issue 19 item 2: mountinfo was decoded with errors="replace", so the path got U+FFFD,
    # could not be opened, and the namespace read as "vanished": never looked at.
    if have_netns():
        pytest.skip(have_netns() or "")
    path = os.fsencode(tmp_path) + b"/odd\xfe" + uuid.uuid4().hex[:6].encode()
    with _mounted_netns(path):
        inode = os.stat(path).st_ino
        [ns] = [n for n in nsmod.namespaces() if n.inode == inode]
        assert os.fsencode(ns.path) == path  # the real bytes, openable
        assert sum(pysockopt.state_counts(netns=ns).values()) == 0
        found = nsmod.for_each_netns(lambda n: 1, [ns])
        assert not found.skipped and [n.inode for n, _ in found.results] == [inode]
        code, text = run_cli("netns", "--json")
        assert code == 0
        [row] = [r for r in json.loads(text)["namespaces"] if r["inode"] == inode]
        assert row["path"].endswith("/odd\\xfe" + path[-6:].decode())  # escaped as text


@pytest.mark.root
def test_a_name_that_is_still_a_plain_file_is_not_ready_not_invalid() -> None:
    # Issue 19 item 8: during `ip netns add/del` the name is briefly a regular file, and
    # netns="NAME" raised NotANetnsError (a ValueError: "out of range").
    if have_netns():
        pytest.skip(have_netns() or "")
    name = f"t3s-{uuid.uuid4().hex[:10]}"
    os.makedirs("/run/netns", exist_ok=True)
    path = f"/run/netns/{name}"
    open(path, "wb").close()
    try:
        with pytest.raises(FileNotFoundError, match="not ready"):
            pysockopt.state_counts(netns=name)
        with pytest.raises(FileNotFoundError, match="not ready"):
            pysockopt.state_counts(netns=path)
    finally:
        os.unlink(path)


def test_first_and_last_line_give_one_count_in_one_wording() -> None:
    # Issue 19 item 10: the first line counted only the setns refusals ("3 could not be
    # entered") and the last every refusal ("5 could not be entered").
    from pysockopt.cli.netns import Grouped

    ns = nsmod.current_namespace()
    checks = ["setns", "setns", "setns", "ptrace", "open"]
    skipped = [nsmod.NetnsSkipped(ns, "permission", "refused", c) for c in checks]
    results: nsmod.NetnsResults[int] = nsmod.NetnsResults((), tuple(skipped), 0)
    grouped: Grouped[int] = Grouped([], skipped, list(results.notes), results.complete,
                                    len(results.refused), 0)
    out = io.StringIO()
    pysockopt.cli.netns.write_notes(out, grouped)
    pysockopt.cli.netns.write_incomplete(out, grouped)
    lines = out.getvalue().splitlines()
    head = "5 network namespace(s) could not be entered"
    assert lines[0].startswith(f"Not looked at: {head}"), lines
    assert lines[-1].startswith(f"Incomplete: {head}"), lines
    assert sum(head in line for line in lines) == 2 and "3 network" not in out.getvalue()
    assert len(results.notes) == 1 and "3: setns" in results.notes[0]
    assert "1: " in results.notes[0] and "ptrace" in results.notes[0]
