"""What a user without root sees: a leak held by a root process must not become "no problems"."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from helpers import run_cli
from netns import NetnsPair
from sockpiles import Pile
from unpriv import NOBODY, as_unprivileged

import pysockopt
from pysockopt import Diagnosis, TcpState, diagnose
from pysockopt.host.render import render_diagnosis  # noqa: F401  # imported before the drop

pytestmark = pytest.mark.root  # dropping to another user needs root; skipped without it


def _diagnose() -> Diagnosis:
    d = diagnose()
    return dataclasses.replace(d, counts=dict(d.counts))  # a mappingproxy does not pickle


def test_the_helper_really_drops_privileges() -> None:
    assert as_unprivileged(lambda: (os.getuid(), os.geteuid(), os.getgroups())) == (
        NOBODY, NOBODY, [])
    with pytest.raises(PermissionError):
        as_unprivileged(lambda: os.listdir("/proc/1/fd"))


def test_root_process_leak_is_found_by_uid_and_what_was_not_seen_is_said(
        netns_pair: NetnsPair) -> None:
    # A client-side leak held by this (root) process, spread over three endpoints, five each:
    # only grouping by owner finds it, and a normal user cannot see the owner.
    piles: list[Pile] = []

    def leak() -> None:
        for _ in range(3):
            pile = Pile()
            piles.append(pile)
            pile.leaked_clients(5)

    netns_pair.in_ns("a", leak)
    try:
        d = as_unprivileged(_diagnose, netns=netns_pair.a)
        status, text = as_unprivileged(lambda: run_cli("diagnose"), netns=netns_pair.a)
        js_status, js = as_unprivileged(lambda: run_cli("diagnose", "--json"), netns=netns_pair.a)
        as_root = netns_pair.in_ns("a", diagnose)
    finally:
        for pile in piles:
            pile.close()

    assert d.counts[TcpState.CLOSE_WAIT] == 15
    assert not d.ok and not d.complete
    (f,) = [f for f in d.findings if f.code == "CLOSE_WAIT_PILE"]
    ev = {e.name: e.value for e in f.evidence}
    assert ev["grouped_by"] == "uid (owner not visible)" and ev["uid"] == 0
    assert ev["close_wait"] == 15 and f.processes == ()
    assert "held by uid 0" in f.summary and "not visible" in f.summary
    assert [str(u) for u in d.unseen] == ["owners of 15 sockets not visible without root"]

    assert status == 1 and "No problems found" not in text
    assert "owners of 15 sockets not visible without root" in text
    assert js_status == 1
    data = json.loads(js)
    assert data["complete"] is False and data["ok"] is False
    assert data["unseen"] == [{"what": "owners", "sockets": 15,
                               "reason": "not visible without root"}]

    # Root sees the process itself, and has nothing left unseen.
    (r,) = [f for f in as_root.findings if f.code == "CLOSE_WAIT_PILE"]
    assert r.processes and r.processes[0].pid == os.getpid() and as_root.complete


def test_unprivileged_processes_of_skips_what_it_may_not_read() -> None:
    with Pile() as pile:
        (client,) = pile.leaked_clients(1)
        inode = os.fstat(client.fileno()).st_ino
        # Another user's process is skipped, not an error; the socket has no visible owner.
        assert as_unprivileged(lambda: pysockopt.processes_of([inode])) == {inode: ()}
        assert pysockopt.processes_of([inode])[inode][0].pid == os.getpid()
