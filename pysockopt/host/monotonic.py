"""Counters summed over members that come and go, kept from ever going down.

A ``_total`` the exporter sums over several sockets (the SO_REUSEPORT listeners of one address
and port) would go down when one of them closes: Prometheus reads a decrease as a reset and
counts what is left as new. ``Carried`` remembers each member's last count (a listener by its
socket cookie) and carries a departed member's count forward, as ``Sample.rates`` does per
socket, so the sum only grows while the process runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["Carried"]


class Carried:
    """Per key, a total that never decreases: the members' counts now plus departed ones'.

    A key is (namespace inode, address, port); a member a listener's socket cookie.
    ``total(key, counts)`` takes each present member's count (member -> count) and returns
    the key's total. A member that is gone since the last call has its last count carried;
    a member whose count went down (it cannot, for a socket cookie; a reused identity)
    carries its earlier count too, and counts on from zero. ``forget(keep)`` drops every key
    whose scope is not in ``keep``.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[int, str, int], dict[int, int]] = {}
        self._carried: dict[tuple[int, str, int], int] = {}

    def total(self, key: tuple[int, str, int], counts: Mapping[int, int]) -> int:
        """Return the key's never-decreasing total, given each present member's count."""
        before = self._last.get(key, {})
        carried = self._carried.get(key, 0)
        for member, last in before.items():
            now = counts.get(member)
            if now is None or now < last:
                carried += last
        self._last[key] = dict(counts)
        self._carried[key] = carried
        return carried + sum(counts.values())

    def forget(self, keep: Iterable[int]) -> None:
        """Drop the keys whose namespace (the key's first element, an inode) is not in ``keep``."""
        wanted = set(keep)
        for key in [k for k in self._last if k[0] not in wanted]:
            del self._last[key]
            self._carried.pop(key, None)
