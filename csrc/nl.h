/* nl.h: the one netlink plumbing that sock_diag dumps (sockdiag.c), SOCK_DESTROY answers
 * (remote.c) and any later subscriber share, as libmnl keeps it: send, receive and one walker
 * that checks every header and calls back once per message. Included as C and read as the
 * cffi cdef, so: declarations and integer #defines only, no include guards, no other
 * preprocessor. */

/* What pso_nl_walk and its callbacks return besides -errno: go on with the next message (and,
 * at the end of the datagram, the next datagram), or stop here. */
#define PSO_NL_MORE 0
#define PSO_NL_DONE 1

/* One message as the walker hands it to a callback. type, flags and seq from its header;
 * payload / len: the bytes after the header (len never reaches past the datagram); error: for
 * type NLMSG_ERROR (2) the kernel's answer, 0 (an ack) or -errno, and for NLMSG_DONE (3) the
 * dump's status, 0 or -errno (the walker already refused any value out of the kernel's
 * range), else 0. */
struct pso_nl_msg {
    uint16_t type;
    uint16_t flags;
    uint32_t seq;
    const uint8_t *payload;
    size_t len;
    int error;
};

/* Walks the messages of one datagram (buf, len). Every header is checked against what is left
 * (-EBADMSG when it lies); seq, when not 0, is what every message must carry (-EBADMSG
 * otherwise); alignment steps are computed in size_t, so no nlmsg_len wraps them.
 * NLMSG_NOOP is skipped and NLMSG_OVERRUN is -ENOBUFS; every other message goes to
 * on_msg(msg, arg), which returns PSO_NL_MORE to go on, PSO_NL_DONE or -errno to end the walk
 * with that value (any other value ends it with -EBADMSG). NLMSG_DONE (its flags may carry
 * NLM_F_DUMP_INTR too) ends the walk after its callback: with its status when that is
 * -errno, else PSO_NL_DONE. Returns PSO_NL_MORE at the end of the datagram, PSO_NL_DONE, or
 * -errno; -EBADMSG for an empty datagram. Never reads past len. */
int pso_nl_walk(const uint8_t *buf, size_t len, uint32_t seq,
                int (*on_msg)(const struct pso_nl_msg *msg, void *arg), void *arg);

/* Sets fd's receive timeout (SO_RCVTIMEO) to timeout_ms (> 0). Returns 0 or -errno. */
int pso_nl_set_timeout(int fd, int timeout_ms);

/* Sends len bytes of msg to the kernel on fd, retrying EINTR. Returns 0, or -errno (-EIO when
 * the datagram went out short). */
int pso_nl_send(int fd, const uint8_t *msg, size_t len);

/* Receives the next datagram from the kernel on fd into *buf (*cap bytes, malloc'd; NULL /
 * 0 to start): measured first (MSG_PEEK | MSG_TRUNC, as libnetlink does) and *buf grown to
 * fit, so a datagram larger than the buffer is read whole; datagrams not sent by the kernel
 * (nl_pid != 0) are dropped unread. Retries EINTR. Returns 0 with *got set, or -errno:
 * -ETIMEDOUT when the receive timeout passed, -ENOMEM, -EMSGSIZE. The caller frees *buf. */
int pso_nl_recv(int fd, uint8_t **buf, size_t *cap, size_t *got);
