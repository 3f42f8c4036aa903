/* keepalive.c: set and read TCP keepalive options, all in one crossing from Python. */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
/* Only the option numbers come from here; never glibc's struct tcp_info (see tcpinfo.c). */
#include <netinet/tcp.h>

#include "keepalive.h"

#if !defined(TCP_KEEPIDLE) && defined(TCP_KEEPALIVE)
#define TCP_KEEPIDLE TCP_KEEPALIVE /* macOS spells the idle option TCP_KEEPALIVE */
#endif

#ifdef TCP_KEEPIDLE
const int PSO_HAS_TCP_KEEPIDLE = 1;
#else
const int PSO_HAS_TCP_KEEPIDLE = 0;
#define TCP_KEEPIDLE (-1)
#endif
#ifdef TCP_KEEPINTVL
const int PSO_HAS_TCP_KEEPINTVL = 1;
#else
const int PSO_HAS_TCP_KEEPINTVL = 0;
#define TCP_KEEPINTVL (-1)
#endif
#ifdef TCP_KEEPCNT
const int PSO_HAS_TCP_KEEPCNT = 1;
#else
const int PSO_HAS_TCP_KEEPCNT = 0;
#define TCP_KEEPCNT (-1)
#endif
#ifdef TCP_USER_TIMEOUT
const int PSO_HAS_TCP_USER_TIMEOUT = 1;
#else
const int PSO_HAS_TCP_USER_TIMEOUT = 0;
#define TCP_USER_TIMEOUT (-1)
#endif

const int pso_ka_levels[PSO_KA_NOPTIONS] = {IPPROTO_TCP, IPPROTO_TCP, IPPROTO_TCP, IPPROTO_TCP, SOL_SOCKET};
const int pso_ka_optnames[PSO_KA_NOPTIONS] = {TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT,
                                SO_KEEPALIVE};

/* Records which step failed in the caller's own result (if it gave one) and returns -errno. */
static int fail(struct pso_keepalive *out, int option, int setting)
{
    int rc = -(errno ? errno : EIO);
    if (out != NULL) {
        out->failed_option = option;
        out->failed_while_setting = setting;
    }
    return rc;
}

static int set_one(int fd, int option, int value, struct pso_keepalive *out)
{
    if (pso_ka_optnames[option] < 0) {
        errno = ENOPROTOOPT;
        return fail(out, option, 1);
    }
    if (setsockopt(fd, pso_ka_levels[option], pso_ka_optnames[option], &value,
                   sizeof value) != 0)
        return fail(out, option, 1);
    return 0;
}

int pso_keepalive_read(int fd, struct pso_keepalive *out)
{
    if (out == NULL)
        return -EFAULT;
    out->failed_option = -1;
    out->failed_while_setting = 0;
    for (int option = 0; option < PSO_KA_NOPTIONS; option++) {
        int value = 0;
        socklen_t len = sizeof value;
        if (pso_ka_optnames[option] < 0) {
            errno = ENOPROTOOPT;
            return fail(out, option, 0);
        }
        if (getsockopt(fd, pso_ka_levels[option], pso_ka_optnames[option], &value, &len) != 0)
            return fail(out, option, 0);
        out->values[option] = value;
    }
    return 0;
}

int pso_keepalive_set(int fd, const struct pso_keepalive_req *req, struct pso_keepalive *out)
{
    /* The TCP-level options go first: on a UDP or Unix socket the first one fails and nothing
     * has been changed, where enabling SO_KEEPALIVE first would leave it set behind the error. */
    int rc;
    if (out != NULL) {
        out->failed_option = -1;
        out->failed_while_setting = 0;
    }
    if (req == NULL) {
        errno = EFAULT;
        return fail(out, PSO_KA_KEEPIDLE, 1);
    }
    if ((rc = set_one(fd, PSO_KA_KEEPIDLE, req->idle, out)) != 0)
        return rc;
    if ((rc = set_one(fd, PSO_KA_KEEPINTVL, req->interval, out)) != 0)
        return rc;
    if ((rc = set_one(fd, PSO_KA_KEEPCNT, req->count, out)) != 0)
        return rc;
    if (req->user_timeout_ms >= 0 &&
        (rc = set_one(fd, PSO_KA_USER_TIMEOUT, req->user_timeout_ms, out)) != 0)
        return rc;
    return set_one(fd, PSO_KA_SO_KEEPALIVE, 1, out);
}

int pso_keepalive_set_verify(int fd, const struct pso_keepalive_req *req,
                             struct pso_keepalive *out)
{
    if (out == NULL)
        return -EFAULT;
    int rc = pso_keepalive_set(fd, req, out);
    return rc != 0 ? rc : pso_keepalive_read(fd, out);
}

int pso_keepalive_set_many(const int *fds, int n, const struct pso_keepalive_req *req,
                           int *rcs, int *failed)
{
    int nfailed = 0;
    if (n < 0 || (n > 0 && (fds == NULL || rcs == NULL || failed == NULL)))
        return -EINVAL;
    if (req == NULL)
        return -EFAULT;
    for (int i = 0; i < n; i++) {
        struct pso_keepalive out;
        int rc = pso_keepalive_set(fds[i], req, &out);
        rcs[i] = rc;
        failed[i] = rc != 0 ? out.failed_option : -1;
        nfailed += rc != 0;
    }
    return nfailed;
}
