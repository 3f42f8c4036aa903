/* nl.c: netlink send, receive and the one message walker (see nl.h). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <linux/netlink.h>

#include "nl.h"

/* The kernel's error numbers are 1..4095 (MAX_ERRNO); anything else is a corrupt reply. */
static int is_errno(int negative)
{
    return negative < 0 && negative >= -4095;
}

/* nlmsg_len rounded up to NLMSG_ALIGNTO in size_t: NLMSG_ALIGN computes in 32 bits, where a
 * length of 0xfffffffd or more wraps to a step of 0 (the walk would stand still). */
static size_t align_len(uint32_t len)
{
    return ((size_t)len + NLMSG_ALIGNTO - 1) & ~(size_t)(NLMSG_ALIGNTO - 1);
}

/* Fills m->error for NLMSG_ERROR (the kernel's answer, always there) and NLMSG_DONE (since 4.x
 * the dump's own return value; older kernels may send none, and a positive value is a count,
 * not an error). Returns 0, or -EBADMSG for a missing answer or one out of the kernel's range. */
static int decode_status(struct pso_nl_msg *m)
{
    if (m->type != NLMSG_ERROR && m->type != NLMSG_DONE)
        return 0;
    if (m->len >= sizeof m->error)
        memcpy(&m->error, m->payload, sizeof m->error);
    else if (m->type == NLMSG_ERROR)
        return -EBADMSG;
    if (m->type == NLMSG_DONE && m->error > 0)
        m->error = 0;
    return m->error == 0 || is_errno(m->error) ? 0 : -EBADMSG;
}

int pso_nl_walk(const uint8_t *buf, size_t len, uint32_t seq,
                int (*on_msg)(const struct pso_nl_msg *msg, void *arg), void *arg)
{
    if (on_msg == NULL || (buf == NULL && len > 0))
        return -EINVAL;
    if (len == 0)
        return -EBADMSG; /* the kernel never sends an empty datagram */
    size_t off = 0;
    while (off < len) {
        struct nlmsghdr h;
        if (len - off < sizeof h)
            return -EBADMSG;
        memcpy(&h, buf + off, sizeof h);
        if (h.nlmsg_len < sizeof h || h.nlmsg_len > len - off)
            return -EBADMSG;
        if (seq != 0 && h.nlmsg_seq != seq)
            return -EBADMSG;
        struct pso_nl_msg m = {.type = h.nlmsg_type, .flags = h.nlmsg_flags,
                               .seq = h.nlmsg_seq, .payload = buf + off + NLMSG_HDRLEN,
                               .len = h.nlmsg_len - NLMSG_HDRLEN, .error = 0};
        if (h.nlmsg_type == NLMSG_OVERRUN)
            return -ENOBUFS;
        if (h.nlmsg_type != NLMSG_NOOP) {
            if (decode_status(&m) != 0)
                return -EBADMSG;
            int rc = on_msg(&m, arg);
            if (rc != PSO_NL_MORE)
                return rc == PSO_NL_DONE || is_errno(rc) ? rc : -EBADMSG;
            if (h.nlmsg_type == NLMSG_DONE)
                return m.error != 0 ? m.error : PSO_NL_DONE;
        }
        size_t step = align_len(h.nlmsg_len);
        off += step < len - off ? step : len - off;
    }
    return PSO_NL_MORE;
}

int pso_nl_set_timeout(int fd, int timeout_ms)
{
    if (timeout_ms <= 0)
        return -EINVAL;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ? -errno : 0;
}

int pso_nl_send(int fd, const uint8_t *msg, size_t len)
{
    if (msg == NULL)
        return -EINVAL;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    ssize_t sent;
    do {
        sent = sendto(fd, msg, len, 0, (struct sockaddr *)&kernel, sizeof kernel);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0)
        return -errno;
    return (size_t)sent == len ? 0 : -EIO;
}

/* recvmsg that retries EINTR and reports a receive timeout as -ETIMEDOUT. */
static ssize_t recv_once(int fd, struct msghdr *msg, int flags)
{
    ssize_t got;
    do {
        got = recvmsg(fd, msg, flags);
    } while (got < 0 && errno == EINTR);
    if (got < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
    return got;
}

int pso_nl_recv(int fd, uint8_t **buf, size_t *cap, size_t *got)
{
    if (buf == NULL || cap == NULL || got == NULL || (*buf == NULL && *cap != 0))
        return -EINVAL;
    *got = 0;
    for (;;) {
        struct sockaddr_nl from;
        struct iovec iov = {.iov_base = *buf, .iov_len = 0};
        struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from,
                             .msg_iov = &iov, .msg_iovlen = 1};
        /* The datagram's real length first (as libnetlink's rtnl_recvmsg does), so one
         * larger than the buffer is read whole instead of cut (MSG_TRUNC) or refused. */
        ssize_t want = recv_once(fd, &msg, MSG_PEEK | MSG_TRUNC);
        if (want < 0)
            return (int)want;
        if ((size_t)want > *cap || *buf == NULL) {
            size_t size = (size_t)want > 0 ? (size_t)want : 1;
            uint8_t *grown = realloc(*buf, size);
            if (grown == NULL)
                return -ENOMEM;
            *buf = grown;
            *cap = size;
        }
        iov.iov_base = *buf;
        iov.iov_len = *cap;
        msg.msg_namelen = sizeof from;
        msg.msg_flags = 0;
        ssize_t n = recv_once(fd, &msg, 0);
        if (n < 0)
            return (int)n;
        if (msg.msg_flags & MSG_TRUNC) /* grew between the peek and the read: never */
            return -EMSGSIZE;
        if (msg.msg_namelen >= sizeof from && from.nl_pid != 0)
            continue; /* not from the kernel */
        *got = (size_t)n;
        return 0;
    }
}
