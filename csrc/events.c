/* events.c: the TCP destroy broadcast of sock_diag (see events.h). */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>

#include "sockdiag.h"
#include "events.h"

#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif
#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif
#define MEMINFO_DROPS 8   /* SK_MEMINFO_DROPS */
#define MEMINFO_VARS 9    /* SK_MEMINFO_VARS (kernel 4.18; 8 before, without backlog) */

static int fail(struct pso_ev_setup *out, int step, int rc)
{
    out->step = step;
    return rc;
}

int pso_ev_setup(int fd, int rcvbuf, struct pso_ev_setup *out)
{
    struct pso_ev_setup ignored;
    if (out == NULL)
        out = &ignored;
    memset(out, 0, sizeof *out);
    if (fd < 0)
        return fail(out, PSO_EV_STEP_BIND, -EBADF);
    if (rcvbuf < 0)
        return fail(out, PSO_EV_STEP_RCVBUF, -EINVAL);
    int want = rcvbuf ? rcvbuf : PSO_EV_RCVBUF;
    /* The buffer first: events that arrive between the bind and a smaller buffer's growth
     * would be dropped for nothing. FORCE passes rmem_max but needs CAP_NET_ADMIN. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) == 0) {
        out->forced = 1;
    } else if (errno == EPERM) {
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want) != 0)
            return fail(out, PSO_EV_STEP_RCVBUF, -errno);
    } else {
        return fail(out, PSO_EV_STEP_RCVBUF, -errno);
    }
    socklen_t len = sizeof out->rcvbuf;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &out->rcvbuf, &len) != 0)
        return fail(out, PSO_EV_STEP_RCVBUF, -errno);
    struct sockaddr_nl sa = {
        .nl_family = AF_NETLINK,
        .nl_groups = (1u << (PSO_EV_GROUP_TCP - 1)) | (1u << (PSO_EV_GROUP_TCP6 - 1)),
    };
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return fail(out, PSO_EV_STEP_BIND, -errno);
    return 0;
}

int pso_ev_open(int rcvbuf, struct pso_ev_setup *out)
{
    struct pso_ev_setup ignored;
    if (out == NULL)
        out = &ignored;
    memset(out, 0, sizeof *out);
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        return fail(out, PSO_EV_STEP_SOCKET, -errno);
    int rc = pso_ev_setup(fd, rcvbuf, out);
    if (rc != 0) {
        close(fd);  /* nothing was sent on it: its close cannot lose anything */
        return rc;
    }
    return fd;
}

int pso_ev_drain(int fd, struct pso_sd_sink *sink, uint8_t *buf, size_t cap, uint64_t max,
                 struct pso_ev_drained *out)
{
    if (sink == NULL || buf == NULL || out == NULL || cap < PSO_EV_BUF)
        return -EINVAL;
    while (max == 0 || out->datagrams + out->refused < max) {
        struct sockaddr_nl from;
        socklen_t fromlen = sizeof from;
        ssize_t got = recvfrom(fd, buf, cap, MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == ENOBUFS) {  /* reported once per overflow; the queue is still there */
                out->overflows++;
                continue;
            }
            return -errno;
        }
        /* Only the kernel (port 0) multicasts these; anything else is not an event. */
        if (fromlen < sizeof from || from.nl_pid != 0 || got == 0) {
            out->refused++;
            continue;
        }
        /* Each event is a datagram of its own: the parser must never think the stream done. */
        sink->done = 0;
        sink->seq = 0;
        int rc = pso_sd_parse(buf, (size_t)got, sink);
        if (rc == -ENOMEM)
            return rc;
        if (rc < 0) {
            if (out->bad == 0)
                out->bad = rc;
            out->refused++;
            continue;
        }
        out->datagrams++;
    }
    return 0;
}

int pso_ev_drops(int fd, uint64_t *drops)
{
    if (drops == NULL)
        return -EINVAL;
    uint32_t mem[MEMINFO_VARS];
    memset(mem, 0, sizeof mem);
    socklen_t len = sizeof mem;
    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0)
        return -errno;
    if (len < (MEMINFO_DROPS + 1) * sizeof(uint32_t))
        return -EPROTO;
    *drops = mem[MEMINFO_DROPS];
    return 0;
}

int64_t pso_ev_cookies(const struct pso_sd_sink *sink, uint32_t states, uint64_t *out,
                       size_t cap)
{
    if (sink == NULL || (out == NULL && cap > 0))
        return -EINVAL;
    size_t k = 0;
    for (size_t i = 0; i < sink->nconns && k < cap; i++) {
        const struct pso_conn *c = &sink->conns[i];
        if (c->state >= 32 || !(states & (1u << c->state)) || c->timer == 3 || !c->cookie)
            continue;
        out[2 * k] = c->cookie;
        out[2 * k + 1] = c->inode;
        k++;
    }
    return (int64_t)k;
}
