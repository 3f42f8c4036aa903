"""The exporter under names it did not expect and listeners that come and go (issue 19).

Each test makes its own network namespaces (unique names) and removes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("prometheus_client")  # the test extra installs it

from netns import have_netns
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import pysockopt.prometheus as prom

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def _ip_netns(name: bytes) -> Iterator[bytes]:
    subprocess.run([b"ip", b"netns", b"add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run([b"ip", b"netns", b"del", name], capture_output=True)


def _exposition(collector: prom.SocketCollector) -> str:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return generate_latest(registry).decode("utf-8")


def _series(text: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return [(s.name, tuple(sorted(s.labels.items())))
            for fam in text_string_to_metric_families(text) for s in fam.samples]


@pytest.mark.root
def test_all_netns_with_an_undecodable_name_and_an_inode_lookalike() -> None:
    # Issue 19 items 1 and 8: a name with byte 0xff made every scrape fail (HTTP 500,
    # UnicodeEncodeError in prometheus_client); a name spelled like another namespace's
    # "inode N" label duplicated its series.
    reason = have_netns()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:8].encode()
    holder = subprocess.Popen(["unshare", "--net", "sleep", "120"])  # a namespace, no name
    try:
        inode = 0
        for _ in range(500):
            with contextlib.suppress(OSError):
                inode = os.stat(f"/proc/{holder.pid}/ns/net").st_ino
            if inode and inode != os.stat("/proc/self/ns/net").st_ino:
                break
            os.sched_yield()
        with _ip_netns(b"t3s-odd" + tag + b"\xff"), _ip_netns(f"inode {inode}".encode()):
            text = _exposition(prom.SocketCollector(all_netns=True))
            series = _series(text)
            assert len(series) == len(set(series)), "duplicate series"
            netns = {dict(labels)["netns"] for name, labels in series
                     if name == "pysockopt_netns_info"}
            assert f"t3s-odd{tag.decode()}\\xff" in netns
            assert f"inode {inode}" in netns and f"\\x69node {inode}" in netns
            # --textfile writes it; --json is valid UTF-8 with the name escaped the same way.
            out = subprocess.run([sys.executable, "-m", "pysockopt", "netns", "--json"],
                                 capture_output=True, timeout=120,
                                 env={**os.environ, "PYTHONPATH": ROOT})
            assert out.returncode == 0, out.stderr
            names = {row["name"] for row in json.loads(out.stdout.decode("utf-8"))["namespaces"]}
            assert f"t3s-odd{tag.decode()}\\xff" in names
            human = subprocess.run([sys.executable, "-m", "pysockopt", "netns"],
                                   capture_output=True, timeout=120,
                                   env={**os.environ, "PYTHONPATH": ROOT})
            assert f"t3s-odd{tag.decode()}\\xff".encode() in human.stdout
    finally:
        holder.kill()
        holder.wait()
