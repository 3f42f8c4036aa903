/* sockdiag.h: host-wide TCP socket enumeration through NETLINK_SOCK_DIAG, with /proc/net/tcp*
 * as the fallback. Included as C and read as the cffi cdef, so: declarations and integer
 * #defines only, no include guards, no other preprocessor.
 *
 * I/O and parsing are separate: pso_sd_dump() talks to the kernel and feeds every datagram to
 * pso_sd_parse(); tests can feed pso_sd_parse() and pso_proc_parse() any bytes. Both append to
 * one pso_sd_sink, which counts sockets per state and, when asked, keeps one pso_conn record
 * per socket (and the INET_DIAG_INFO payloads in one blob). */

/* Kernel state numbers are below this (TCP_BOUND_INACTIVE is 13 today). */
#define PSO_SD_NSTATES 16

/* pso_sd_query.ext bits: which extensions the kernel should attach to full sockets. */
#define PSO_SD_EXT_INFO 1
#define PSO_SD_EXT_SKMEMINFO 2

/* pso_conn.flags */
#define PSO_CONN_WQUEUE_UNKNOWN 1

/* pso_sd_parse / pso_proc_parse return values besides -errno. */
#define PSO_SD_MORE 0
#define PSO_SD_DONE 1

/* What to enumerate. family: AF_INET, AF_INET6 or 0 for both (see pso_sd_dump: one dump of
 *   both families where the kernel allows it, else one per family);
 * states: bitmask of 1 << state (SYN_RECV also brings the kernel's request sockets, which
 *   both sources label SYN_RECV; the /proc parser ignores bit NEW_SYN_RECV);
 * port: -1 for any, else sockets whose local OR remote port is this one (kernel bytecode). */
struct pso_sd_query {
    int family;
    uint32_t states;
    int port;
    int ext;
};

/* One socket, as the kernel reported it. Addresses are in network byte order (IPv4 in the
 * first 4 bytes, the rest zero); ports in host order. Layout is fixed: Python unpacks an array
 * of these with struct (see connections.py _RECORD). */
struct pso_conn {
    uint8_t src[16];
    uint8_t dst[16];
    uint64_t cookie;      /* the kernel's socket cookie (SO_COOKIE); 0 from /proc: unknown */
    uint32_t expires_ms;  /* until the timer fires; 0 without a timer */
    uint32_t rqueue;      /* LISTEN: accept-queue length */
    uint32_t wqueue;      /* LISTEN: backlog */
    uint32_t uid;
    uint32_t inode;
    uint32_t info_off;    /* INET_DIAG_INFO payload: offset into the sink's info blob */
    int32_t drops;        /* SKMEMINFO drops (listener overflows); -1 when not reported */
    uint16_t sport;
    uint16_t dport;
    uint16_t info_len;    /* 0: no INET_DIAG_INFO for this socket */
    uint8_t family;
    uint8_t state;
    uint8_t timer;        /* 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe */
    uint8_t retrans;
    uint8_t flags;        /* PSO_CONN_* */
    uint8_t pad;
};

/* The request that dumps both families in one walk of the kernel's tables: the original
 * tcp_diag request (nlmsg_type 18, struct inet_diag_req), which the kernel answers with
 * AF_UNSPEC (net/ipv4/inet_diag.c inet_diag_dump_compat), its replies of the same type. */
#define PSO_SD_TCPDIAG_GETSOCK 18

/* Default receive timeout per datagram of a dump, and the first receive buffer's size. */
#define PSO_SD_TIMEOUT_MS 10000
#define PSO_SD_RECV_SIZE 65536

/* Where results accumulate, one per call (Python makes one per listing): everything a call
 * reports besides its return value is here, never in per-thread state. Zero it (or
 * pso_sd_sink_init), set keep, then dump or parse any number of times; free with
 * pso_sd_sink_free. counts[] is always filled; conns[] and info[] only when keep is 1.
 * seq: the netlink sequence number replies must carry (0: any).
 * Settings (0: the default): recv_size, the first receive buffer's size (grown to fit a
 * larger datagram); timeout_ms, how long to wait for each datagram before -ETIMEDOUT;
 * split, 1 to dump a query for both families one family at a time even where one dump would
 * do; unspec_type, the nlmsg_type of the one-dump request (0: PSO_SD_TCPDIAG_GETSOCK; a seam
 * for tests, which set a type the kernel refuses to drive the fallback).
 * Outcome: failed_step, the PSO_SD_STEP_* of a failed dump (0 otherwise); bad_line, the line
 * pso_proc_parse refused; interrupted, 1 once a reply carried NLM_F_DUMP_INTR (the kernel's
 * tables changed during the dump: what was read may be inconsistent; the caller retries);
 * dumps, the dump requests the last pso_sd_dump sent; unspec_refused, the -errno with which
 * the kernel refused its one-dump request (the per-family dumps then ran), else 0. */
struct pso_sd_sink {
    int keep;
    uint32_t seq;
    int done;
    uint64_t counts[PSO_SD_NSTATES];
    uint64_t total;
    struct pso_conn *conns;
    size_t nconns;
    size_t conns_cap;
    uint8_t *info;
    size_t info_len;
    size_t info_cap;
    int recv_size;
    int timeout_ms;
    int split;
    int unspec_type;
    int failed_step;
    int bad_line;
    int interrupted;
    int dumps;
    int unspec_refused;
};

/* What a sink held at one point, so a dump that must be retried can be taken back. */
struct pso_sd_mark {
    uint64_t counts[PSO_SD_NSTATES];
    uint64_t total;
    size_t nconns;
    size_t info_len;
};

void pso_sd_sink_init(struct pso_sd_sink *sink, int keep);
void pso_sd_sink_free(struct pso_sd_sink *sink);
/* Forgets the end-of-dump mark so the sink can take the next dump's replies. */
void pso_sd_sink_rearm(struct pso_sd_sink *sink, uint32_t seq);
/* Records what the sink holds now into mark / drops everything added since, and clears the
 * interrupted flag. */
void pso_sd_sink_mark(const struct pso_sd_sink *sink, struct pso_sd_mark *mark);
void pso_sd_sink_rollback(struct pso_sd_sink *sink, const struct pso_sd_mark *mark);

/* Builds the dump request for q into buf (cap bytes): for family AF_INET or AF_INET6 a
 * SOCK_DIAG_BY_FAMILY request (inet_diag_req_v2); for 0 (AF_UNSPEC) the PSO_SD_TCPDIAG_GETSOCK
 * request (inet_diag_req) that dumps both families at once. Same states, extensions and port
 * bytecode either way. Returns its length or -errno (-EINVAL for a bad query or family,
 * -ENOBUFS if cap is too small). */
int pso_sd_build_request(const struct pso_sd_query *q, int family, uint32_t seq,
                         uint8_t *buf, size_t cap);

/* Parses one datagram of a sock_diag dump reply into sink. Returns PSO_SD_MORE when more
 * datagrams should follow, PSO_SD_DONE at NLMSG_DONE, or -errno: the kernel's error from
 * NLMSG_ERROR, -EBADMSG for a truncated or malformed reply, -ENOMEM. Never reads past len.
 * A message flagged NLM_F_DUMP_INTR sets sink->interrupted and is parsed as usual. */
int pso_sd_parse(const uint8_t *buf, size_t len, struct pso_sd_sink *sink);

/* Runs the dump for q over a fresh NETLINK_SOCK_DIAG socket, reading datagrams until
 * NLMSG_DONE, into sink. When q->family is 0: one PSO_SD_TCPDIAG_GETSOCK dump of both
 * families (one walk of the kernel's tables instead of two); if the kernel refuses it
 * (-EINVAL, -EOPNOTSUPP or -ENOENT: built without it), whatever it added is taken back out of
 * the sink and one SOCK_DIAG_BY_FAMILY dump per family follows (also with sink->split set).
 * Returns 0 or -errno (-ETIMEDOUT when no datagram came within the timeout); on failure
 * sink->failed_step says which step (PSO_SD_STEP_*). An interrupted dump (sink->interrupted)
 * returns 0: the caller decides. */
int pso_sd_dump(const struct pso_sd_query *q, struct pso_sd_sink *sink);

/* The reading half of pso_sd_dump: reads datagrams from fd, a NETLINK_SOCK_DIAG socket a dump
 * request was sent on, into sink (rearmed for the request's seq) until NLMSG_DONE. Each
 * datagram is measured first (MSG_PEEK | MSG_TRUNC) and the buffer grown to fit it; each waits
 * at most sink->timeout_ms (SO_RCVTIMEO on fd). Returns 0 or -errno as pso_sd_dump. */
int pso_sd_recv_dump(int fd, struct pso_sd_sink *sink);

#define PSO_SD_STEP_SOCKET 1
#define PSO_SD_STEP_SEND 2
#define PSO_SD_STEP_RECV 3
#define PSO_SD_STEP_PARSE 4
#define PSO_SD_STEP_KERNEL 5

/* Parses the text of /proc/net/tcp (family AF_INET) or /proc/net/tcp6 (AF_INET6) into sink,
 * keeping the sockets q selects (q->family and q->ext are ignored). Normalises what the file
 * says to what sock_diag would say (timer expiry in ms, retrans by timer kind, uid 0 for
 * request sockets); a LISTEN socket's backlog is not in the file: PSO_CONN_WQUEUE_UNKNOWN;
 * the file has no socket cookie: 0. Returns PSO_SD_DONE, or -EBADMSG for a malformed line
 * (its number in sink->bad_line), -EINVAL for a bad family, -ENOMEM. */
int pso_proc_parse(const char *text, size_t len, int family, const struct pso_sd_query *q,
                   struct pso_sd_sink *sink);
