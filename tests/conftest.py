from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pytest
from hypothesis import settings

sys.path.insert(0, __file__.rsplit("/", 1)[0])  # tests/ helpers (netns.py) importable

from netns import NetnsPair, have_netns
from unpriv import remove_test_user

# Hypothesis tests here open real sockets and run real syscalls: on a loaded machine one
# example can take longer than hypothesis's default 200 ms deadline without anything wrong.
settings.register_profile("pysockopt", deadline=None)
settings.load_profile("pysockopt")

#: Fixtures that need root; a test using one is marked ``root`` without saying so itself.
ROOT_FIXTURES = frozenset({"netns_pair"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if ROOT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.root)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave the host as found: the system user the tests made is removed."""
    remove_test_user()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, other users' processes); CI runs as root")


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair: (client, accepted server side)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield client, server
    client.close()
    server.close()


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """Two private network namespaces joined by veth (root only)."""
    reason = have_netns()
    if reason:
        pytest.skip(reason)
    with NetnsPair() as pair:
        yield pair
