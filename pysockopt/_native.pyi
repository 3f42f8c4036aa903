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
    def pso_keepalive_set(self, fd: int, req: Any, out: Any, /) -> int: ...
    def pso_keepalive_set_verify(self, fd: int, req: Any, out: Any, /) -> int: ...
    def pso_keepalive_read(self, fd: int, out: Any, /) -> int: ...
    def pso_keepalive_set_many(self, fds: Any, n: int, req: Any, rcs: Any, failed: Any,
                               /) -> int: ...

    # tcpinfo.h
    PSO_TCPI_CAP: int
    PSO_HAS_TCP_INFO: int
    def pso_tcp_info(self, fd: int, buf: Any, /) -> int: ...
    def pso_tcp_info_batch(self, fds: Any, n: int, buf: Any, lens: Any, /) -> int: ...
    def pso_tcp_info_poll(self, fds: Any, n: int, buf: Any, lens: Any, same: Any, /) -> int: ...
    def pso_bench_getsockopt_loop(self, fds: Any, n: int, buf: Any, /) -> int: ...

    # errno table: errnotab.h, defined by code generated at build time
    pso_errno_table: Any
    pso_errno_count: int

    # sockdiag.h
    PSO_SD_NSTATES: int
    PSO_SD_EXT_INFO: int
    PSO_SD_EXT_SKMEMINFO: int
    PSO_CONN_WQUEUE_UNKNOWN: int
    PSO_SD_MORE: int
    PSO_SD_DONE: int
    PSO_SD_STEP_SOCKET: int
    PSO_SD_STEP_SEND: int
    PSO_SD_STEP_RECV: int
    PSO_SD_STEP_PARSE: int
    PSO_SD_STEP_KERNEL: int
    PSO_SD_TIMEOUT_MS: int
    PSO_SD_RECV_SIZE: int
    PSO_SD_TCPDIAG_GETSOCK: int
    def pso_sd_sink_init(self, sink: Any, keep: int, /) -> None: ...
    def pso_sd_sink_free(self, sink: Any, /) -> None: ...
    def pso_sd_sink_rearm(self, sink: Any, seq: int, /) -> None: ...
    def pso_sd_build_request(self, q: Any, family: int, seq: int, buf: Any, cap: int,
                             /) -> int: ...
    def pso_sd_parse(self, buf: Any, len: int, sink: Any, /) -> int: ...
    def pso_sd_sink_mark(self, sink: Any, mark: Any, /) -> None: ...
    def pso_sd_sink_rollback(self, sink: Any, mark: Any, /) -> None: ...
    def pso_sd_dump(self, q: Any, sink: Any, /) -> int: ...

    # sockdiag_records.h
    def pso_sd_take_info(self, sink: Any, len: Any, /) -> Any: ...
    def pso_sd_info_free(self, info: Any, /) -> None: ...
    PSO_SD_ADDR_SIZE: int
    def pso_sd_intern_addresses(self, sink: Any, idx: Any, out: Any, sum: Any, /) -> int: ...
    def pso_sd_column(self, sink: Any, first: int, count: int, offset: int, width: int,
                      out: Any, /) -> int: ...
    def pso_sd_idx_column(self, idx: Any, n: int, first: int, count: int, which: int,
                          out: Any, /) -> int: ...
    def pso_sd_addr_table_free(self, table: Any, /) -> None: ...
    def pso_sd_recv_dump(self, fd: int, sink: Any, /) -> int: ...
    def pso_proc_parse(self, text: Any, len: int, family: int, q: Any, sink: Any, /) -> int: ...
    # tally.h
    PSO_TALLY_MAX_PORTS: int
    PSO_TALLY_MAX_PICKS: int
    PSO_TALLY_MAX_INFO: int
    PSO_TALLY_ANY_TIMER: int
    def pso_tally(self, sink: Any, spec: Any, out: Any, /) -> int: ...
    def pso_tally_free(self, t: Any, /) -> None: ...

    # nl.h
    PSO_NL_MORE: int
    PSO_NL_DONE: int
    def pso_nl_walk(self, buf: Any, len: int, seq: int, on_msg: Any, arg: Any, /) -> int: ...
    def pso_nl_set_timeout(self, fd: int, timeout_ms: int, /) -> int: ...
    def pso_nl_send(self, fd: int, msg: Any, len: int, /) -> int: ...
    def pso_nl_recv(self, fd: int, buf: Any, cap: Any, got: Any, /) -> int: ...

    # netns.h
    PSO_CLONE_NEWNET: int
    PSO_NETNS_STEP_THREAD: int
    PSO_NETNS_STEP_SETNS: int
    PSO_NETNS_STEP_SOCKET: int
    def pso_netns_run(self, nsfd: int, job: Any, arg: Any, step: Any, /) -> int: ...
    def pso_netns_socket(self, nsfd: int, domain: int, type: int, protocol: int, step: Any,
                         /) -> int: ...
    def pso_netns_dump(self, nsfd: int, q: Any, sink: Any, step: Any, /) -> int: ...
    def pso_netns_read_files(self, nsfd: int, files: Any, n: int, step: Any, /) -> int: ...
    def pso_netns_read(self, nsfd: int, path: Any, buf: Any, cap: int, len: Any, /) -> int: ...

    # remote.h
    PSO_SOCK_DESTROY: int
    PSO_HAS_PIDFD: int
    def pso_pidfd_open(self, pid: int, /) -> int: ...
    def pso_pidfd_getfd(self, pidfd: int, targetfd: int, expected_inode: int, /) -> int: ...
    def pso_sock_destroy(self, reqs: Any, n: int, results: Any, /) -> int: ...
    def pso_netns_sock_destroy(self, nsfd: int, reqs: Any, n: int, results: Any, step: Any,
                               /) -> int: ...
    def pso_destroy_parse_answer(self, buf: Any, len: int, seq: int, answer: Any, /) -> int: ...
    def pso_destroy_build_request(self, req: Any, seq: int, buf: Any, cap: int, /) -> int: ...

    # tcpstate.h
    PSO_TCP_ESTABLISHED: int
    PSO_TCP_SYN_SENT: int
    PSO_TCP_SYN_RECV: int
    PSO_TCP_FIN_WAIT1: int
    PSO_TCP_FIN_WAIT2: int
    PSO_TCP_TIME_WAIT: int
    PSO_TCP_CLOSE: int
    PSO_TCP_CLOSE_WAIT: int
    PSO_TCP_LAST_ACK: int
    PSO_TCP_LISTEN: int
    PSO_TCP_CLOSING: int
    PSO_TCP_NEW_SYN_RECV: int
    PSO_TCP_BOUND_INACTIVE: int
    PSO_TIMER_NONE: int
    PSO_TIMER_RETRANSMIT: int
    PSO_TIMER_KEEPALIVE: int
    PSO_TIMER_TIME_WAIT: int
    PSO_TIMER_ZERO_WINDOW: int
    # events.h
    PSO_EV_GROUP_TCP: int
    PSO_EV_GROUP_TCP6: int
    PSO_EV_RCVBUF: int
    PSO_EV_BUF: int
    PSO_EV_STEP_SOCKET: int
    PSO_EV_STEP_BIND: int
    PSO_EV_STEP_RCVBUF: int
    def pso_ev_setup(self, fd: int, rcvbuf: int, out: Any, /) -> int: ...
    def pso_ev_open(self, rcvbuf: int, out: Any, /) -> int: ...
    def pso_ev_drain(self, fd: int, sink: Any, buf: Any, cap: int, max: int, out: Any,
                     /) -> int: ...
    def pso_ev_drops(self, fd: int, drops: Any, /) -> int: ...


lib: _Lib
