/* remote.c: another process's sockets: pidfd_getfd duplicates, SOCK_DESTROY requests. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

#include "netns.h"
#include "remote.h"

/* glibc wraps these only from 2.36, and older <sys/syscall.h> may not know the numbers.
 * The generic numbers are shared by every architecture but alpha; take them only where we
 * know they hold. */
#if !defined(SYS_pidfd_open) && defined(__x86_64__)
#define SYS_pidfd_open 434
#endif
#if !defined(SYS_pidfd_getfd) && defined(__x86_64__)
#define SYS_pidfd_getfd 438
#endif

#if defined(SYS_pidfd_open) && defined(SYS_pidfd_getfd)
const int PSO_HAS_PIDFD = 1;
#else
const int PSO_HAS_PIDFD = 0;
#endif

/* An ack is an nlmsgerr echoing our request (~120 bytes) plus extended-ack attributes. */
#define ACK_BUF 8192
/* The kernel answers a SOCK_DESTROY before sendto() returns; this only bounds a broken one. */
#define ACK_TIMEOUT_S 5

/* --- pidfd */

int pso_pidfd_open(int pid)
{
#ifdef SYS_pidfd_open
    if (pid <= 0)
        return -EINVAL;
    long fd = syscall(SYS_pidfd_open, (pid_t)pid, 0u);
    if (fd < 0)
        return -(errno ? errno : EIO);
    /* pidfds are always close-on-exec. */
    return (int)fd;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

int pso_pidfd_getfd(int pidfd, int targetfd, uint64_t expected_inode)
{
#ifdef SYS_pidfd_getfd
    if (pidfd < 0 || targetfd < 0)
        return -EBADF;
    long fd;
    do {
        fd = syscall(SYS_pidfd_getfd, pidfd, targetfd, 0u);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -(errno ? errno : EIO);
    /* The kernel sets O_CLOEXEC on the copy (pidfd_getfd(2)). */
    struct stat st;
    int rc = 0;
    if (fstat((int)fd, &st) != 0)
        rc = -(errno ? errno : EIO);
    else if (!S_ISSOCK(st.st_mode))
        rc = -ENOTSOCK;
    else if (expected_inode != 0 && (uint64_t)st.st_ino != expected_inode)
        rc = -ESTALE; /* the process closed that descriptor and reused its number */
    if (rc != 0) {
        close((int)fd);
        return rc;
    }
    return (int)fd;
#else
    (void)pidfd;
    (void)targetfd;
    (void)expected_inode;
    return -ENOSYS;
#endif
}

/* --- SOCK_DESTROY */

int pso_destroy_build_request(const struct pso_destroy_req *r, uint32_t seq, uint8_t *buf,
                              size_t cap)
{
    size_t total = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct inet_diag_req_v2));
    if (r == NULL || buf == NULL || (r->family != AF_INET && r->family != AF_INET6) ||
        r->state == 0 || r->state >= 16)
        return -EINVAL;
    /* Never a request the kernel would match without checking the cookie: 0 is no cookie
     * at all, ~0 is INET_DIAG_NOCOOKIE ("any socket with this 4-tuple"). */
    if (r->cookie == 0 || r->cookie == UINT64_MAX)
        return -EINVAL;
    if (cap < total)
        return -ENOBUFS;
    memset(buf, 0, total);

    struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
    nlh->nlmsg_len = (uint32_t)total;
    nlh->nlmsg_type = PSO_SOCK_DESTROY;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = seq;

    struct inet_diag_req_v2 *req = (struct inet_diag_req_v2 *)(buf + NLMSG_HDRLEN);
    req->sdiag_family = r->family;
    req->sdiag_protocol = IPPROTO_TCP;
    req->idiag_states = (uint32_t)1 << r->state;
    req->id.idiag_sport = htons(r->sport);
    req->id.idiag_dport = htons(r->dport);
    size_t alen = r->family == AF_INET ? 4 : 16;
    memcpy(req->id.idiag_src, r->src, alen);
    memcpy(req->id.idiag_dst, r->dst, alen);
    req->id.idiag_if = r->ifindex;
    req->id.idiag_cookie[0] = (uint32_t)r->cookie;
    req->id.idiag_cookie[1] = (uint32_t)(r->cookie >> 32);
    return (int)total;
}

/* Reads datagrams until the ack for seq arrives; returns the kernel's 0 / -errno for that
 * request in *answer and 0, or -errno when the socket fails or the reply is malformed. */
static int read_ack(int fd, uint32_t seq, uint8_t *buf, int *answer)
{
    for (;;) {
        struct sockaddr_nl from;
        struct iovec iov = {.iov_base = buf, .iov_len = ACK_BUF};
        struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from,
                             .msg_iov = &iov, .msg_iovlen = 1};
        ssize_t got = recvmsg(fd, &msg, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        }
        if (msg.msg_namelen >= sizeof from && from.nl_pid != 0)
            continue; /* not from the kernel */
        size_t len = (size_t)got;
        size_t off = 0;
        while (off < len) {
            struct nlmsghdr h;
            if (len - off < sizeof h)
                return -EBADMSG;
            memcpy(&h, buf + off, sizeof h);
            if (h.nlmsg_len < sizeof h || h.nlmsg_len > len - off)
                return -EBADMSG;
            if (h.nlmsg_type == NLMSG_ERROR && h.nlmsg_seq == seq) {
                int error;
                if (h.nlmsg_len - NLMSG_HDRLEN < sizeof error)
                    return -EBADMSG;
                memcpy(&error, buf + off + NLMSG_HDRLEN, sizeof error);
                if (error > 0 || error < -4095)
                    return -EBADMSG;
                *answer = error;
                return 0;
            }
            /* Anything else (an answer to an earlier request we gave up on) is skipped. */
            size_t step = NLMSG_ALIGN(h.nlmsg_len);
            off += step < len - off ? step : len - off;
        }
        if (msg.msg_flags & MSG_TRUNC)
            return -EMSGSIZE;
    }
}

int pso_sock_destroy(const struct pso_destroy_req *reqs, size_t n, int *results)
{
    if (results == NULL || (reqs == NULL && n > 0))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        results[i] = -ECANCELED;
    if (n == 0)
        return 0;

    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) {
        int rc = -errno;
        for (size_t i = 0; i < n; i++)
            results[i] = rc;
        return rc;
    }
    int rc = 0;
    struct timeval tv = {.tv_sec = ACK_TIMEOUT_S, .tv_usec = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
        rc = -errno;
    uint8_t buf[ACK_BUF];
    static __thread uint32_t next_seq = 0;
    size_t i = 0;
    for (; i < n && rc == 0; i++) {
        uint8_t req[128];
        if (++next_seq == 0)
            next_seq = 1;
        int len = pso_destroy_build_request(&reqs[i], next_seq, req, sizeof req);
        if (len < 0) {
            results[i] = len; /* this entry is bad; the batch goes on */
            continue;
        }
        struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
        ssize_t sent;
        do {
            sent = sendto(fd, req, (size_t)len, 0, (struct sockaddr *)&kernel, sizeof kernel);
        } while (sent < 0 && errno == EINTR);
        if (sent < 0) {
            rc = -errno;
            break;
        }
        if (sent != len) {
            rc = -EIO;
            break;
        }
        int answer = 0;
        rc = read_ack(fd, next_seq, buf, &answer);
        if (rc == 0)
            results[i] = answer;
        else
            break;
    }
    /* A socket-level failure leaves this and every later request unanswered. */
    for (; i < n && rc != 0; i++)
        results[i] = rc;
    close(fd);
    return rc;
}

/* --- SOCK_DESTROY inside another network namespace */

struct destroy_args {
    const struct pso_destroy_req *reqs;
    size_t n;
    int *results;
    int ran;
};

static int destroy_job(void *p)
{
    struct destroy_args *a = p;
    a->ran = 1;
    return pso_sock_destroy(a->reqs, a->n, a->results);
}

int pso_netns_sock_destroy(int nsfd, const struct pso_destroy_req *reqs, size_t n,
                           int *results, int *step)
{
    int ignored;
    if (step == NULL)
        step = &ignored;
    *step = 0;
    if (results == NULL || (reqs == NULL && n > 0))
        return -EINVAL;
    struct destroy_args args = {.reqs = reqs, .n = n, .results = results, .ran = 0};
    int rc = pso_netns_run(nsfd, destroy_job, &args, step);
    if (!args.ran) {  /* the thread could not start or enter: no request was sent */
        for (size_t i = 0; i < n; i++)
            results[i] = rc;
    }
    return rc;
}
