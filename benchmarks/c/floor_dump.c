/* floor_dump.c: the floor for host-wide listings, a sock_diag dump and nothing more.
 *
 * One TCPDIAG_GETSOCK request (both families in one walk of the kernel's tables, as
 * pysockopt asks), every state, INET_DIAG_INFO attached when asked; every datagram read until
 * NLMSG_DONE into one reused 64 KiB buffer, each message only counted. No records are kept, no
 * bytes copied out: what any listing must at least cost. The benchmark (bench_sockdiag.py)
 * compiles this at run time as a shared library (floor_dump()) and as a program (main). */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TCPDIAG_GETSOCK 18

/* Dumps every TCP socket of the calling thread's namespace; returns how many, or -errno. */
long floor_dump(int with_info)
{
    static unsigned char buf[65536];
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req r;
    } req;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    long count = 0;
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        return -errno;
    memset(&req, 0, sizeof req);
    req.nlh.nlmsg_len = sizeof req;
    req.nlh.nlmsg_type = TCPDIAG_GETSOCK;
    req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.nlh.nlmsg_seq = 1;
    req.r.idiag_family = AF_UNSPEC;
    req.r.idiag_states = 0xFFF;
    req.r.idiag_ext = with_info ? 1 << (INET_DIAG_INFO - 1) : 0;
    if (sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            close(fd);
            return -err;
        }
        int len = (int)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                close(fd);
                return count;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                close(fd);
                return e->error ? e->error : -EPROTO;
            }
            count++;
        }
    }
}

int main(int argc, char **argv)
{
    int with_info = argc > 1 && strcmp(argv[1], "info") == 0;
    long n = floor_dump(with_info);
    if (n < 0) {
        fprintf(stderr, "floor_dump: %s\n", strerror((int)-n));
        return 1;
    }
    printf("%ld\n", n);
    return 0;
}
