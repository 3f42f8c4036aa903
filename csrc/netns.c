/* netns.c: the one runner of jobs inside another network namespace (a short-lived native
 * thread that alone calls setns, see netns.h), and the jobs built on it: sockets, sock_diag
 * dumps and file reads. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockdiag.h"
#include "netns.h"

#ifdef CLONE_NEWNET
_Static_assert(PSO_CLONE_NEWNET == CLONE_NEWNET, "netns.h disagrees with <sched.h>");
#endif

/* --- the runner: one thread, in the namespace, for one job */

struct run {
    int nsfd;
    int (*job)(void *arg);  /* returns 0 or -errno */
    void *arg;
    int rc;
    int step;
};

static void *run_main(void *p)
{
    struct run *run = p;
    if (setns(run->nsfd, PSO_CLONE_NEWNET) != 0) {
        run->rc = -errno;
        run->step = PSO_NETNS_STEP_SETNS;
        return NULL;
    }
    run->rc = run->job(run->arg);
    return NULL;
}

int pso_netns_run(int nsfd, int (*job)(void *arg), void *arg, int *step)
{
    int ignored;
    if (step == NULL)
        step = &ignored;
    *step = 0;
    if (job == NULL)
        return -EINVAL;
    if (nsfd < 0) {
        *step = PSO_NETNS_STEP_SETNS;
        return -EBADF;
    }
    struct run run = {.nsfd = nsfd, .job = job, .arg = arg, .rc = 0, .step = 0};
    /* The thread starts with every signal blocked (it inherits this mask), so no signal
     * handler ever runs in it; the caller's own mask is restored right after the create. */
    sigset_t all, old;
    if (sigfillset(&all) != 0) {
        *step = PSO_NETNS_STEP_THREAD;
        return -errno;
    }
    int rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc != 0) {
        *step = PSO_NETNS_STEP_THREAD;
        return -rc;
    }
    pthread_t thread;
    int created = pthread_create(&thread, NULL, run_main, &run);
    int restored = pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (created != 0) {
        *step = PSO_NETNS_STEP_THREAD;
        return -created;
    }
    int joined = pthread_join(thread, NULL);
    if (joined != 0) {  /* cannot happen for a joinable thread we created; never ignore it */
        *step = PSO_NETNS_STEP_THREAD;
        return -joined;
    }
    if (run.step != 0) {
        *step = run.step;
        return run.rc;
    }
    if (restored != 0) {  /* the job ran; only the caller's own mask is off */
        *step = PSO_NETNS_STEP_THREAD;
        return -restored;
    }
    return run.rc;
}

/* --- a socket made inside the namespace */

struct socket_args {
    int domain, type, protocol;
    int fd;
};

static int socket_job(void *p)
{
    struct socket_args *a = p;
    a->fd = socket(a->domain, a->type | SOCK_CLOEXEC, a->protocol);
    return a->fd < 0 ? -errno : 0;
}

int pso_netns_socket(int nsfd, int domain, int type, int protocol, int *step)
{
    int ignored;
    if (step == NULL)
        step = &ignored;
    struct socket_args args = {.domain = domain, .type = type, .protocol = protocol, .fd = -1};
    int rc = pso_netns_run(nsfd, socket_job, &args, step);
    if (rc == 0)
        return args.fd;
    if (args.fd >= 0)  /* made, but the runner failed after the job (its signal mask) */
        close(args.fd);
    else if (*step == 0)
        *step = PSO_NETNS_STEP_SOCKET;
    return rc;
}

/* --- the sock_diag dump */

struct dump_args {
    const struct pso_sd_query *q;
    struct pso_sd_sink *sink;
    int step;  /* the dump's failed step, from the call's own sink */
};

static int dump_work(void *p)
{
    struct dump_args *a = p;
    int rc = pso_sd_dump(a->q, a->sink);
    a->step = rc ? a->sink->failed_step : 0;
    return rc;
}

int pso_netns_dump(int nsfd, const struct pso_sd_query *q, struct pso_sd_sink *sink, int *step)
{
    int ignored;
    if (step == NULL)
        step = &ignored;
    *step = 0;
    if (q == NULL || sink == NULL) {
        *step = PSO_SD_STEP_SEND;
        return -EINVAL;
    }
    struct dump_args args = {.q = q, .sink = sink, .step = 0};
    int rc = pso_netns_run(nsfd, dump_work, &args, step);
    if (rc != 0 && *step == 0)
        *step = args.step;
    return rc;
}

/* --- file reads */

struct read_args {
    struct pso_netns_file *files;
    size_t n;
};

static int read_one(struct pso_netns_file *f)
{
    f->len = 0;
    if (f->path == NULL || (f->buf == NULL && f->cap != 0))
        return -EINVAL;
    int fd;
    do {
        fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    int rc = 0;
    while (f->len < f->cap) {
        ssize_t got = read(fd, f->buf + f->len, f->cap - f->len);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (got == 0)
            break;
        f->len += (size_t)got;
    }
    /* A full buffer counts as too small, even when the file had exactly cap bytes: sysctl
     * files answer any read that does not start at offset 0 with EOF, so "no more" cannot be
     * told from "more" by reading on. */
    if (rc == 0 && f->len == f->cap)
        rc = -ENOBUFS;
    if (close(fd) != 0 && rc == 0 && errno != EINTR)
        rc = -errno;
    return rc;
}

static void read_all(struct pso_netns_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        files[i].rc = read_one(&files[i]);
}

static int read_work(void *p)
{
    struct read_args *a = p;
    read_all(a->files, a->n);
    return 0;
}

int pso_netns_read_files(int nsfd, struct pso_netns_file *files, size_t n, int *step)
{
    int ignored;
    if (step == NULL)
        step = &ignored;
    *step = 0;
    if (files == NULL && n != 0)
        return -EINVAL;
    struct read_args args = {.files = files, .n = n};
    return pso_netns_run(nsfd, read_work, &args, step);
}

int pso_netns_read(int nsfd, const char *path, uint8_t *buf, size_t cap, size_t *len)
{
    struct pso_netns_file f = {.path = path, .buf = buf, .cap = cap, .len = 0, .rc = 0};
    int step;
    int rc = pso_netns_read_files(nsfd, &f, 1, &step);
    if (len != NULL)
        *len = f.len;
    return rc != 0 ? rc : f.rc;
}

/* --- one look: the files and every dump, in one trip */

struct look_args {
    struct pso_netns_file *files;
    size_t nfiles;
    struct pso_netns_dump_req *dumps;
    size_t ndumps;
};

/* Runs one dump, again from a clean slate while the kernel marks it interrupted. */
static int dump_retrying(struct pso_netns_dump_req *d)
{
    d->step = 0;
    if (d->q == NULL || d->sink == NULL) {
        d->step = PSO_SD_STEP_SEND;
        return -EINVAL;
    }
    int tries = d->tries > 0 ? d->tries : 1;
    struct pso_sd_mark mark;
    for (int i = 0; i < tries; i++) {
        pso_sd_sink_mark(d->sink, &mark);
        int rc = pso_sd_dump(d->q, d->sink);
        if (rc != 0) {
            d->step = d->sink->failed_step;
            /* What the failed attempt added is no answer: the sink is left as it came. */
            pso_sd_sink_rollback(d->sink, &mark);
            return rc;
        }
        if (!d->sink->interrupted)
            return 0;
        pso_sd_sink_rollback(d->sink, &mark);
    }
    return -EAGAIN;
}

static int look_work(void *p)
{
    struct look_args *a = p;
    read_all(a->files, a->nfiles);
    int failed = 0;
    for (size_t i = 0; i < a->ndumps; i++) {
        struct pso_netns_dump_req *d = &a->dumps[i];
        if (failed) {
            d->rc = -ECANCELED;
            d->step = 0;
            continue;
        }
        d->rc = dump_retrying(d);
        failed = d->rc != 0;
    }
    return 0;
}

int pso_netns_look(int nsfd, struct pso_netns_file *files, size_t nfiles,
                   struct pso_netns_dump_req *dumps, size_t ndumps, int *step)
{
    int ignored;
    if (step == NULL)
        step = &ignored;
    *step = 0;
    if ((files == NULL && nfiles != 0) || (dumps == NULL && ndumps != 0))
        return -EINVAL;
    struct look_args args = {.files = files, .nfiles = nfiles, .dumps = dumps,
                             .ndumps = ndumps};
    return pso_netns_run(nsfd, look_work, &args, step);
}
