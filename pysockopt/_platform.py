"""What this platform has: the one module the rest of pysockopt asks.

The build (csrc/build_ffi.py) picks the C units by platform; this module answers from what
the C core it built says about itself (its ``PSO_HAS_*`` constants, and which units are
there at all), so no other module tests ``sys.platform`` or probes ``lib`` for a feature.
Only kernel behaviour that no C constant can report (what an accepted socket inherits) is
decided from the platform's name, here.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Final

from ._core import lib

__all__ = [
    "CLONE_NEWNET",
    "HAS_NETNS",
    "HAS_PIDFD",
    "HAS_SOCK_DIAG",
    "HAS_TCP_INFO",
    "HAS_TCP_KEEPCNT",
    "HAS_TCP_KEEPIDLE",
    "HAS_TCP_KEEPINTVL",
    "HAS_TCP_USER_TIMEOUT",
    "KEEPALIVE_INHERITED_BY_ACCEPT",
    "LINUX",
    "RUNNING_KERNEL",
]

#: The running system is Linux (the kernel the C core's Linux-only units were built for).
LINUX: Final = sys.platform.startswith("linux")

#: getsockopt(TCP_INFO) is there (Linux; the C core returns -ENOSYS elsewhere).
HAS_TCP_INFO: Final = bool(lib.PSO_HAS_TCP_INFO)
#: The per-socket keepalive options the build host's headers define.
HAS_TCP_KEEPIDLE: Final = bool(lib.PSO_HAS_TCP_KEEPIDLE)
HAS_TCP_KEEPINTVL: Final = bool(lib.PSO_HAS_TCP_KEEPINTVL)
HAS_TCP_KEEPCNT: Final = bool(lib.PSO_HAS_TCP_KEEPCNT)
HAS_TCP_USER_TIMEOUT: Final = bool(lib.PSO_HAS_TCP_USER_TIMEOUT)

#: NETLINK_SOCK_DIAG dumps (csrc/sockdiag.c, built on Linux only).
HAS_SOCK_DIAG: Final = hasattr(lib, "pso_sd_dump")
#: Jobs inside another network namespace (csrc/netns.c, Linux only).
HAS_NETNS: Final = hasattr(lib, "pso_netns_run")
#: pidfd_open / pidfd_getfd syscall numbers known to the build (the kernel may still lack
#: them: the calls then fail with ENOSYS).
HAS_PIDFD: Final = bool(getattr(lib, "PSO_HAS_PIDFD", 0))

#: setns(2)'s nstype for a network namespace, from the C core (csrc/netns.h); 0 where there
#: are no namespaces.
CLONE_NEWNET: Final[int] = int(getattr(lib, "PSO_CLONE_NEWNET", 0))

#: Whether sockets accepted from a listener inherit its keepalive options and
#: TCP_USER_TIMEOUT (Linux and FreeBSD copy the listener's socket into the child; macOS does
#: not inherit the TCP_KEEP* options). The tests check it on the running kernel.
KEEPALIVE_INHERITED_BY_ACCEPT: Final = sys.platform.startswith(("linux", "freebsd"))


def _running_kernel() -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", os.uname().release) if LINUX else None
    return (int(match[1]), int(match[2])) if match else None


#: The running Linux kernel's (major, minor); None elsewhere or when unreadable.
RUNNING_KERNEL: Final = _running_kernel()
