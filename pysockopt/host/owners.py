"""Who holds a socket: the processes behind socket inodes, found through /proc/*/fd.

The one module that walks /proc for owners (``walk_owners``, ``processes_of``) and looks up
user names: the diagnosis rules stay free of I/O and ask an ``OwnerBook``, which remembers each
inode it resolved and what could not be seen (``Unseen``).
"""

from __future__ import annotations

import errno
import os
import pwd
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final, NamedTuple

from .._format import count

if TYPE_CHECKING:
    from .connections import Connection

__all__ = [
    "INCOMPLETE", "OwnerBook", "OwnerCache", "Owners", "Process", "Unseen", "Walk",
    "hidden_reason", "processes_of", "shared_owners", "user_label", "walk_fds", "walk_owners",
]


class Process(NamedTuple):
    """A process holding a socket: its pid and command name (/proc/PID/comm)."""

    pid: int
    command: str


# --- one walk of /proc/*/fd


#: Why a process's descriptors may be unreadable without that being our failure: it exited
#: during the walk (ENOENT, ESRCH) or is not ours to inspect (EACCES, EPERM: another user's,
#: when not root). Anything else (EMFILE, ENFILE, ENOMEM) would silently lose owners: raised.
_SKIPPED: Final = frozenset({errno.ENOENT, errno.ESRCH, errno.EACCES, errno.EPERM})
_NOT_OURS: Final = frozenset({errno.EACCES, errno.EPERM})


class Owners(NamedTuple):
    """One walk of /proc/*/fd (``walk_owners``): the processes per socket inode, and more.

    ``found``: inode -> the processes holding it; ``hidden``: how many processes could not be
    inspected (not ours: EACCES, EPERM).
    """

    found: dict[int, tuple[Process, ...]]
    hidden: int


class Walk(NamedTuple):
    """One walk of /proc/*/fd: the pids holding each socket inode it was asked about.

    ``holders``: inode -> pids (every socket inode on the host when the walk was asked for
    all); ``hidden``: processes that could not be inspected (not ours: EACCES, EPERM);
    ``complete``: False when the walk stopped at its deadline (owners then unknown);
    ``rest``: the /proc entries it had not reached then (``walk_fds(after=)`` goes on there).
    """

    holders: dict[int, list[int]]
    hidden: int
    complete: bool
    rest: tuple[str, ...] = ()


def walk_fds(wanted: Collection[int] | None, deadline: float | None = None, *,
             after: Walk | None = None, until: Collection[int] | None = None,
             first: Collection[int] = ()) -> Walk:
    """Walk every process's descriptors once; the one place /proc/*/fd is read.

    ``wanted``: the socket inodes to look for, None for every socket on the host (what one
    look of several namespaces shares: socket inodes are host-wide). ``deadline``: a
    ``time.monotonic()`` value after which the walk stops (``complete`` False, ``rest`` the
    processes not reached), having read at least one process. ``after``: a walk that
    stopped, to go on with (its holders are added to; ``wanted`` as it was given).
    ``until``: socket inodes whose holders are all the walk is after now: it stops as soon
    as each has one (``complete`` False, ``rest`` as at a deadline). A fresh walk reads the
    pids of ``first`` first (processes that held sockets asked about before: a leaking
    server's next CLOSE_WAIT is found in the first process read), then the
    processes with the fewest descriptors (/proc/PID/fd's size, which counts them since
    Linux 6.2; in /proc's order before): the owner of a new socket is found before the
    host's big holders are read, when it is not one of them. Processes that exit during the
    walk are skipped; any other failure (EMFILE, ENFILE, ENOMEM) raises.
    """
    want = None if wanted is None else {f"socket:[{i}]": i for i in wanted if i}
    if after is not None:
        holders, hidden, names = after.holders, after.hidden, list(after.rest)
    else:
        holders = {} if want is None else {i: [] for i in want.values()}
        hidden = 0
        if want is not None and not want:
            return Walk({}, 0, True)
        # listdir, not scandir: the walk then holds no descriptor of its own between
        # processes, so it works with a single free descriptor (scandir kept one open, and
        # every listdir below failed with EMFILE, which used to be skipped as "not ours").
        early = {str(pid) for pid in first}
        names = sorted((name for name in os.listdir("/proc") if name.isdigit()),
                       key=lambda name: -1 if name in early else _descriptors(name))
    left = None if until is None else {i for i in until if not holders.get(i)}
    for k, name in enumerate(names):
        # At least one process per call: a walk that goes on after its deadline progresses.
        if k and deadline is not None and time.monotonic() > deadline:
            return Walk(holders, hidden, False, tuple(names[k:]))
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
            # Each link read relative to the directory (readlinkat): the kernel resolves
            # /proc/PID/fd once per process, not once per descriptor. One descriptor held.
            dir_fd = os.open(fd_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            if err.errno not in _SKIPPED:
                raise _owner_error(err, fd_dir) from err
            hidden += err.errno in _NOT_OURS
            continue
        hits = []
        try:
            for fd in fds:
                try:
                    target = os.readlink(fd, dir_fd=dir_fd)
                except OSError as err:
                    if err.errno not in _SKIPPED:
                        raise _owner_error(err, f"{fd_dir}/{fd}") from err
                    continue
                if want is not None:
                    inode = want.get(target)
                    if inode is not None:
                        hits.append(inode)
                elif target.startswith("socket:["):
                    hits.append(int(target[8:-1]))
        finally:
            os.close(dir_fd)
        pid = int(name)
        for inode in dict.fromkeys(hits):
            holders.setdefault(inode, []).append(pid)
        if left is not None and hits:
            left.difference_update(hits)
            if not left:  # every socket asked about has a holder now
                return Walk(holders, hidden, False, tuple(names[k + 1:]))
    return Walk(holders, hidden, True)


def _descriptors(name: str) -> int:
    """How many descriptors process ``name`` holds (0 where the kernel does not say)."""
    try:
        return os.stat(f"/proc/{name}/fd").st_size
    except OSError:
        return 0


def walk_owners(inodes: Iterable[int]) -> Owners:
    """Find the processes holding each socket inode, and count the processes we may not see.

    ``processes_of`` with what it leaves out: ``hidden`` > 0 means an inode nobody was found
    for may still be held by a process we could not inspect (another user's, when not root);
    the diagnosis rules say "owner not visible" instead of "nobody". Processes that exit
    during the walk are skipped; any other failure (EMFILE, ENFILE, ENOMEM) raises OSError.
    """
    walk = walk_fds(set(inodes))
    commands: dict[int, str] = {}
    return Owners({inode: _processes(pids, commands) for inode, pids in walk.holders.items()},
                  walk.hidden)


def _processes(pids: Iterable[int], commands: dict[int, str]) -> tuple[Process, ...]:
    out = []
    for pid in pids:
        if pid not in commands:
            commands[pid] = _command(pid)
        out.append(Process(pid, commands[pid]))
    return tuple(out)


def _command(pid: int) -> str:
    path = f"/proc/{pid}/comm"
    try:
        # The name's bytes as they are (undecodable ones kept as surrogates, as os.fsdecode
        # does): output escapes them one way (pysockopt._format.escape).
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read().rstrip("\n")
    except OSError as err:
        if err.errno not in _SKIPPED:
            raise _owner_error(err, path) from err
        return "?"


def _owner_error(err: OSError, path: str) -> OSError:
    return OSError(err.errno, f"{err.strerror} (reading {path} to find socket owners)")


def processes_of(inodes: Iterable[int]) -> dict[int, tuple[Process, ...]]:
    """Map socket inodes to the processes holding them, in one walk of /proc/*/fd.

    This is what makes ``ss -p`` slow, so it is done only for the few sockets a diagnosis
    names. Processes that exit during the walk, and those we may not inspect (other users',
    when not root), are skipped; an inode nobody visible holds maps to an empty tuple.
    Raises OSError for any other failure (EMFILE, ENFILE, ENOMEM), rather than return
    owners that are silently missing.
    """
    return walk_owners(inodes).found


# --- what a diagnosis could not see, and the book of its lookups


class Unseen(NamedTuple):
    """What a diagnosis could not look at: ``Unseen("owners", 15, "not visible without root")``.

    ``str()`` says it as a report does: "owners of 15 sockets not visible without root".
    """

    what: str
    sockets: int
    reason: str

    def __str__(self) -> str:
        return f"{self.what} of {count(self.sockets, 'socket')} {self.reason}"

    def as_dict(self) -> dict[str, object]:
        """Return it for JSON."""
        return {"what": self.what, "sockets": self.sockets, "reason": self.reason}


#: What a socket's owner is when the walk stopped at its deadline before finding it.
INCOMPLETE: Final = "unknown (the owner lookup stopped at its deadline)"


class OwnerCache:
    """Socket owners resolved by at most one walk of /proc/*/fd per look, kept between looks.

    A look (``new_look()``) may cover several namespaces: socket inodes are host-wide, so the
    first inode not yet known starts one walk that records every socket on the host, and
    every later question of the same look is answered from it. Between looks the owners of
    the inodes asked in the previous look are kept, so a long-lived caller (the exporter)
    walks only when a socket it has not seen before is asked about. ``deadline``: seconds a
    walk may take in one look (None: no limit); owners it did not reach are unknown, and
    ``incomplete`` counts those sockets in the current look. A walk that stopped at its
    deadline goes on where it stopped at the next look that needs an owner (what it found
    is kept), so a host whose walk takes longer than the deadline still has every owner
    named after a few looks, each bounded by the deadline. A socket first asked about after
    such a walk began may sit in a process it had already passed: a walk that finished
    without finding it is not taken as "held by nobody", and the next look walks afresh.
    ``walks`` counts the walks started.
    """

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self.walks = 0
        self.incomplete = 0
        self._known: dict[int, tuple[Process, ...]] = {}
        self._asked: set[int] = set()
        self._walk: Walk | OSError | None = None
        self._looks = 0
        self._first: dict[int, int] = {}  # an inode not known yet -> the look that first asked
        self._stopped: Walk | None = None  # a walk that stopped at its deadline
        self._since = 0  # the look the current walk began in
        self._until: float | None = None  # this look's deadline, from its first walk
        self._spent = False  # this look's walk stopped at the deadline

    def new_look(self) -> None:
        """Start a look: forget the last walk and the owners no look asked for lately."""
        self._known = {i: p for i, p in self._known.items() if i in self._asked}
        self._first = {i: n for i, n in self._first.items()
                       if i in self._asked and i not in self._known}
        self._asked = set()
        # A walk stopped at the deadline goes on at the next look; one that stopped because
        # it had found what was asked is not gone on with: a new socket's holder may be a
        # process it had passed, and a fresh walk reads the small processes first again.
        walk = self._walk
        self._stopped = walk if isinstance(walk, Walk) and self._spent else None
        self._walk = None
        self._until = None
        self._spent = False
        self.incomplete = 0
        self._looks += 1

    def known(self, inode: int) -> tuple[Process, ...] | None:
        """Return the owners an earlier lookup found for ``inode``, without walking /proc.

        None when no lookup of this or the previous look found any (the closed-connection
        log names a closed socket's owner only from what was looked up while it lived).
        """
        return self._known.get(inode) or None

    def resolve(self, inodes: Iterable[int]) -> dict[int, tuple[Process, ...] | str]:
        """Map each inode to its processes (() for nobody) or to why it is not known."""
        wanted = [i for i in dict.fromkeys(inodes) if i]
        self._asked.update(wanted)
        out: dict[int, tuple[Process, ...] | str] = {}
        todo = [i for i in wanted if i not in self._known]
        for i in todo:
            self._first.setdefault(i, self._looks)
        if todo:
            self._walk_for(todo)
        walk = self._walk
        commands: dict[int, str] = {}
        for i in wanted:
            known = self._known.get(i)
            if known is not None:
                out[i] = known
            elif isinstance(walk, OSError):
                out[i] = f"unknown ({walk.strerror} while reading /proc)"
            elif walk is not None:
                pids = walk.holders.get(i)
                if pids:
                    out[i] = self._known[i] = _processes(pids, commands)
                elif not walk.complete or self._first.get(i, 0) > self._since:
                    # Not reached yet, or asked only after this walk began (its holder may
                    # be a process the walk had passed): a fresh walk will say.
                    out[i] = INCOMPLETE
                    self.incomplete += 1
                elif walk.hidden:  # held by nobody we can see, and some processes hid
                    out[i] = hidden_reason()
                else:
                    out[i] = self._known[i] = ()
        return out


    def _walk_for(self, todo: list[int]) -> None:
        """Walk (on) until every inode of ``todo`` has a holder, or the look's deadline."""
        for _ in range(2):  # on with the walk there is, then at most one begun now
            walk = self._walk
            if isinstance(walk, OSError) or self._spent:
                return
            found = {} if walk is None else walk.holders
            need = [i for i in todo if not found.get(i)]
            if not need:
                return
            base = walk if walk is not None else self._stopped
            if base is not None and base.complete:
                if all(self._first[i] <= self._since for i in need):
                    return  # that walk saw every process since these sockets were asked
                base = None  # sockets newer than that walk: a walk begun now says
            if self._until is None and self.deadline is not None:
                self._until = time.monotonic() + self.deadline
            try:
                if base is None:
                    self.walks += 1
                    self._since = self._looks
                    # The owners named before first: a leak goes on where it was.
                    first = {p.pid for procs in self._known.values() for p in procs}
                    self._walk = _walk(None, self._until, need, first)
                else:
                    self._walk = walk_fds(None, self._until, after=base, until=need)
            except OSError as err:
                self._walk = err
                return
            self._spent = (not self._walk.complete and self._until is not None
                           and time.monotonic() > self._until)


_SHARED: ContextVar[OwnerCache | None] = ContextVar("pysockopt_owner_cache", default=None)


@contextmanager
def shared_owners(deadline: float | None = None) -> Iterator[OwnerCache]:
    """Let every diagnosis inside the block share one walk of /proc/*/fd.

    ``pysockopt diagnose --all-netns`` diagnoses each namespace in turn; inside this block
    they ask one OwnerCache, so the owners of every namespace come from one walk.
    """
    cache = OwnerCache(deadline)
    token = _SHARED.set(cache)
    try:
        yield cache
    finally:
        _SHARED.reset(token)


class OwnerBook:
    """The owner lookups of one diagnosis: each socket looked up once, and what was not seen.

    A socket whose owner could not be known is remembered with the reason: other users'
    processes are not ours to inspect when not root (the kernel still tells everyone each
    socket's uid), the walk of /proc failed (EMFILE...) or stopped at its deadline.
    ``cache``: the OwnerCache it asks (the one ``shared_owners()`` set, else its own).
    """

    def __init__(self, cache: OwnerCache | None = None) -> None:
        if cache is None:
            cache = _SHARED.get()
        if cache is None:
            cache = OwnerCache()
            cache.new_look()
        self._cache = cache
        self._known: dict[int, tuple[Process, ...]] = {}
        self._unknown: dict[int, str] = {}

    def lookup(self, conns: Iterable[Connection]) -> dict[int, tuple[Process, ...] | None]:
        """Map each socket's inode to its processes: () for nobody, None for "not known"."""
        inodes = [c.inode for c in conns if c.inode]
        todo = [i for i in dict.fromkeys(inodes) if i not in self._known
                and i not in self._unknown]
        if todo:
            for inode, got in self._cache.resolve(todo).items():
                if isinstance(got, str):
                    self._unknown[inode] = got
                else:
                    self._known[inode] = got
        return {i: self._known.get(i) for i in inodes}

    def unseen(self) -> tuple[Unseen, ...]:
        """Return what could not be seen, one entry per reason."""
        reasons = Counter(self._unknown.values())
        return tuple(Unseen("owners", n, reason) for reason, n in sorted(reasons.items()))


def _walk(wanted: Collection[int] | None, deadline: float | None,
          until: Collection[int] | None = None, first: Collection[int] = ()) -> Walk:
    # The seam tests count walks through (tests/test_look.py): every cached lookup starts
    # its walks here (going on with one that stopped is not a new walk).
    return walk_fds(wanted, deadline, until=until, first=first)


def hidden_reason() -> str:
    """Why an owner nobody was found for may still exist: what this process may not see."""
    if os.geteuid() != 0:
        return "not visible without root"
    return "not visible to this process (/proc/PID/fd unreadable)"


def user_label(uid: int) -> str:
    """``uid 0 (root)``, or ``uid 1234`` for a uid with no name here."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, OSError):
        return f"uid {uid}"
