/* events.h: the sock_diag destroy broadcast, one TCP socket's last word (what `ss -E` reads).
 * Included as C and read as the cffi cdef, so: declarations and integer #defines only, no
 * include guards, no other preprocessor.
 *
 * A subscriber is a NETLINK_SOCK_DIAG socket bound to the multicast groups
 * SKNLGRP_INET_TCP_DESTROY (1) and SKNLGRP_INET6_TCP_DESTROY (3). The kernel sends each TCP
 * socket it frees (state at free, cookie, tcp_info by its own length) to the subscribers of
 * that socket's network namespace only; the subscriber stays in the namespace it was created
 * in, whichever thread reads it. Each event is one SOCK_DIAG_BY_FAMILY message with seq 0:
 * pso_sd_parse() decodes it into a pso_sd_sink like a dump's reply (there is no NLMSG_DONE). */

struct pso_sd_sink;

/* The multicast groups (linux/sock_diag.h SKNLGRP_*), bound as nl_groups bit 1 << (group-1). */
#define PSO_EV_GROUP_TCP 1
#define PSO_EV_GROUP_TCP6 3
/* The receive buffer asked for by default: 8 MiB holds ~20k events of ~400 bytes (measured
 * truesize per event on 6.18 is about 1 KiB, so ~8k queued events before a drop). */
#define PSO_EV_RCVBUF 8388608
/* One event datagram is ~ 400 bytes; the read buffer holds any datagram the kernel sends
 * (an skb of NLMSG_GOODSIZE). */
#define PSO_EV_BUF 65536

/* Failure steps of pso_ev_open / pso_ev_setup. */
#define PSO_EV_STEP_SOCKET 1
#define PSO_EV_STEP_BIND 2
#define PSO_EV_STEP_RCVBUF 3

/* What pso_ev_setup did: the receive buffer the kernel granted (getsockopt SO_RCVBUF, the
 * kernel's doubled figure) and whether SO_RCVBUFFORCE was allowed (root: past rmem_max). */
struct pso_ev_setup {
    int rcvbuf;
    int forced;
    int step;
};

/* Subscribes fd, an AF_NETLINK NETLINK_SOCK_DIAG socket, to the TCP destroy groups of its
 * namespace and asks for rcvbuf bytes of receive buffer (0: PSO_EV_RCVBUF): SO_RCVBUFFORCE,
 * then SO_RCVBUF (capped at net.core.rmem_max) when that is refused (not CAP_NET_ADMIN).
 * Returns 0 or -errno (out->step says which step). */
int pso_ev_setup(int fd, int rcvbuf, struct pso_ev_setup *out);

/* Opens a subscriber in the calling thread's network namespace (socket + pso_ev_setup),
 * close-on-exec. Returns the descriptor, or -errno (out->step says which step). */
int pso_ev_open(int rcvbuf, struct pso_ev_setup *out);

/* What one pso_ev_drain read. */
struct pso_ev_drained {
    uint64_t datagrams;  /* datagrams read */
    uint64_t overflows;  /* recv said ENOBUFS: the buffer overflowed since the last read */
    int bad;             /* pso_sd_parse's -errno for the first datagram it refused, else 0 */
    uint64_t refused;    /* datagrams refused by the parser (skipped, counted) */
};

/* Reads every datagram waiting on fd without blocking (MSG_DONTWAIT), at most max of them
 * (0: no limit), into sink (keep 1, seq 0) with pso_sd_parse, through buf (cap bytes: at least
 * PSO_EV_BUF). EINTR is retried; ENOBUFS is counted in out->overflows and reading goes on; a
 * datagram the parser refuses is counted and skipped, the rest still read. Returns 0 once
 * nothing more waits (or max were read), or -errno of recvmsg (-EBADF, ...), -ENOMEM. */
int pso_ev_drain(int fd, struct pso_sd_sink *sink, uint8_t *buf, size_t cap, uint64_t max,
                 struct pso_ev_drained *out);

/* The number of datagrams the kernel dropped on fd since it was opened because its receive
 * buffer was full (SO_MEMINFO's SK_MEMINFO_DROPS, counted per dropped event by
 * netlink_overrun). Returns 0 with *drops set, or -errno (-ENOPROTOOPT before 4.6). */
int pso_ev_drops(int fd, uint64_t *drops);

/* The sockets of a dump the closed-connection log follows: for each record of sink whose
 * state is in states (bit 1 << state) and whose timer is not TIME_WAIT (3: a timewait socket
 * keeps its full socket's cookie, and that one was already announced), writes its cookie and
 * inode to out[2 * k] and out[2 * k + 1], at most cap records. Returns how many were written
 * (the records held past cap are not), or -EINVAL (NULL sink or out with cap > 0). Reads only
 * the sink's records: call it before a tally compacts them. */
int64_t pso_ev_cookies(const struct pso_sd_sink *sink, uint32_t states, uint64_t *out,
                       size_t cap);
