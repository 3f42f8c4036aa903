# Types for the compiled cffi module pysockopt._native (built from csrc/). Each C function
# returns 0 or -errno unless its comment in csrc/*.h says otherwise.
from typing import Any

# cffi's FFI object and cdata values are untyped; Any stays confined to the binding layer.
ffi: Any

class _Lib:
    # keepalive.h
    PSO_KA_KEEPIDLE: int
    PSO_KA_KEEPINTVL: int
    PSO_KA_KEEPCNT: int
    PSO_KA_USER_TIMEOUT: int
    PSO_KA_SO_KEEPALIVE: int
    PSO_KA_NOPTIONS: int
    PSO_HAS_TCP_KEEPIDLE: int
    PSO_HAS_TCP_KEEPINTVL: int
    PSO_HAS_TCP_KEEPCNT: int
    PSO_HAS_TCP_USER_TIMEOUT: int
    pso_ka_levels: Any
    pso_ka_optnames: Any
    def pso_keepalive_set(self, fd: int, req: Any, /) -> int: ...
    def pso_keepalive_set_verify(self, fd: int, req: Any, out: Any, /) -> int: ...
    def pso_keepalive_read(self, fd: int, out: Any, /) -> int: ...
    def pso_keepalive_failed_option(self) -> int: ...
    def pso_keepalive_failed_while_setting(self) -> int: ...

    # tcpinfo.h (issue 4)
    PSO_TCPI_CAP: int
    PSO_HAS_TCP_INFO: int
    def pso_tcp_info(self, fd: int, /) -> int: ...
    def pso_tcp_info_buffer(self) -> Any: ...
    def pso_tcp_info_batch(self, fds: Any, n: int, buf: Any, lens: Any, /) -> int: ...
    def pso_bench_getsockopt_loop(self, fds: Any, n: int, buf: Any, /) -> int: ...

    # errno table (issue 3)

    # sockdiag.h (issue 5)


lib: _Lib
