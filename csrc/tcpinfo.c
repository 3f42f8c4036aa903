/* tcpinfo.c: getsockopt(TCP_INFO), one socket or a batch, as raw bytes for Python to decode. */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
/* Only the option number comes from here; never glibc's struct tcp_info (see tcpinfo.h). */
#include <netinet/tcp.h>

#include "tcpinfo.h"

#if defined(__linux__) && defined(TCP_INFO)
const int PSO_HAS_TCP_INFO = 1;
#else
const int PSO_HAS_TCP_INFO = 0;
#endif

/* One getsockopt; the length the kernel wrote back or -errno. */
static int tcp_info_into(int fd, unsigned char *buf, int cap)
{
#if defined(__linux__) && defined(TCP_INFO)
    socklen_t len = (socklen_t)cap;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, buf, &len) != 0)
        return -(errno ? errno : EIO);
    /* The kernel never reports more than it was offered; check anyway, the caller slices. */
    return len > (socklen_t)cap ? cap : (int)len;
#else
    (void)fd;
    (void)buf;
    (void)cap;
    return -EOPNOTSUPP;
#endif
}

int pso_tcp_info(int fd, unsigned char *buf)
{
    if (buf == NULL)
        return -EFAULT;
    return tcp_info_into(fd, buf, PSO_TCPI_CAP);
}

long pso_tcp_info_batch(const int *fds, int n, unsigned char *buf, int *lens)
{
    long used = 0;
    if (n < 0 || (n > 0 && (fds == NULL || buf == NULL || lens == NULL)))
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        int rc = tcp_info_into(fds[i], buf + used, PSO_TCPI_CAP);
        lens[i] = rc;
        if (rc > 0)
            used += rc;
    }
    return used;
}

long pso_tcp_info_poll(const int *fds, int n, unsigned char *buf, int *lens, int *same)
{
    if (same == NULL)
        return -EINVAL;
    *same = -1;
    long used = pso_tcp_info_batch(fds, n, buf, lens);
    if (used <= 0 || n <= 0)
        return used;
    int first = lens[0];
    for (int i = 1; i < n; i++)
        if (lens[i] != first)
            return used;
    if (first > 0)
        *same = first;
    return used;
}

int pso_bench_getsockopt_loop(const int *fds, int n, unsigned char *buf)
{
    int ok = 0;
    if (fds == NULL || buf == NULL)
        return 0;
#if defined(__linux__) && defined(TCP_INFO)
    for (int i = 0; i < n; i++) {
        socklen_t len = PSO_TCPI_CAP;
        if (getsockopt(fds[i], IPPROTO_TCP, TCP_INFO, buf, &len) == 0)
            ok++;
    }
#else
    (void)n;
#endif
    return ok;
}
