from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, __file__.rsplit("/", 1)[0])  # tests/ helpers (netns.py) importable

from netns import NetnsPair, have_netns


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
