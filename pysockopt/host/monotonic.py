"""Counters summed over members that come and go, kept from ever going down.

A ``_total`` the exporter sums over several sockets (the SO_REUSEPORT listeners of one address
and port) would go down when one of them closes, and a kernel counter of a namespace made
again under the same name starts from 0: Prometheus reads a decrease as a reset and counts
what is left as new. ``Carried`` remembers each member's last count (a listener by its socket
cookie, a namespace by its inode) and carries a departed member's count forward, as
``Sample.rates`` does per socket, so the total only grows while the process runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

__all__ = ["Carried"]

K = TypeVar("K", bound=Hashable)


class Carried(Generic[K]):
    """Per key, a total that never decreases: the members' counts now plus departed ones'.

    ``total(key, counts)`` takes each present member's count (member -> count) and returns
    the key's total. A member gone since the last call has its last count carried; a member
    whose count went down (a reused identity, a wrapped counter) carries its earlier count
    too, and counts on from there. ``forget(keep)`` drops the keys ``keep`` says no to.
    """

    def __init__(self) -> None:
        self._last: dict[K, dict[int, int]] = {}
        self._carried: dict[K, int] = {}

    def total(self, key: K, counts: Mapping[int, int]) -> int:
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

    def forget(self, keep: Callable[[K], bool]) -> None:
        """Drop every key for which ``keep(key)`` is false (a namespace no longer scanned)."""
        for key in [k for k in self._last if not keep(k)]:
            del self._last[key]
            self._carried.pop(key, None)
