/* netns.c: sock_diag dumps and file reads inside another network namespace, each from a
 * short-lived native thread that alone calls setns (see netns.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "sockdiag.h"
#include "netns.h"

#ifndef CLONE_NEWNET
#define CLONE_NEWNET 0x40000000
#endif

/* --- one thread, in the namespace, for one piece of work */

struct job {
    int nsfd;
    int (*work)(void *arg);  /* returns 0 or -errno */
    void *arg;
    int rc;
    int step;
};

static void *job_main(void *p)
{
    struct job *job = p;
    if (setns(job->nsfd, CLONE_NEWNET) != 0) {
        job->rc = -errno;
        job->step = PSO_NETNS_STEP_SETNS;
        return NULL;
    }
    job->rc = job->work(job->arg);
    return NULL;
}

/* Runs work(arg) in a new thread that joined nsfd; the thread is joined before returning. */
static int run_in_netns(int nsfd, int (*work)(void *), void *arg, int *step)
{
    struct job job = {.nsfd = nsfd, .work = work, .arg = arg, .rc = 0, .step = 0};
    if (nsfd < 0) {
        *step = PSO_NETNS_STEP_SETNS;
        return -EBADF;
    }
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
    int created = pthread_create(&thread, NULL, job_main, &job);
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
    if (restored != 0) {
        *step = PSO_NETNS_STEP_THREAD;
        return -restored;
    }
    *step = job.step;
    return job.rc;
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
    int rc = run_in_netns(nsfd, dump_work, &args, step);
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

static int read_work(void *p)
{
    struct read_args *a = p;
    for (size_t i = 0; i < a->n; i++)
        a->files[i].rc = read_one(&a->files[i]);
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
    return run_in_netns(nsfd, read_work, &args, step);
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
