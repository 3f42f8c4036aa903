/* netns.h: work done inside another network namespace, from a short-lived native thread.
 * Included as C and read as the cffi cdef, so: declarations and integer #defines only, no
 * include guards, no other preprocessor.
 *
 * setns(CLONE_NEWNET) changes only the calling thread, and a thread left in the wrong namespace
 * would make every later call on it silently wrong. So no caller's thread ever enters: each
 * call starts one native thread (all signals blocked), which joins the namespace nsfd, does the
 * work and ends; the caller joins it on every path. A socket keeps the namespace it was created
 * in, and /proc/thread-self/net/ and /proc/sys/net/ follow the thread that opens them, so the
 * work sees the target namespace while the caller's thread never leaves its own. */

/* setns(2)'s nstype of a network namespace (<sched.h> CLONE_NEWNET): the one definition, for
 * C and (through pysockopt._platform) Python alike. */
#define PSO_CLONE_NEWNET 0x40000000

struct pso_sd_query;
struct pso_sd_sink;

/* Failure steps (*step of pso_netns_run and the jobs below), next to sockdiag.h's
 * PSO_SD_STEP_* of a dump. */
#define PSO_NETNS_STEP_THREAD 16  /* pthread_create / pthread_sigmask */
#define PSO_NETNS_STEP_SETNS 17   /* setns: EPERM without CAP_SYS_ADMIN, EINVAL not a netns */
#define PSO_NETNS_STEP_SOCKET 18  /* pso_netns_socket: socket() inside the namespace */

/* The one runner for every job that needs another network namespace. Starts one native thread
 * with every signal blocked, which calls setns(nsfd, CLONE_NEWNET) and then job(arg) (0 or
 * -errno), and joins it before returning, on every path. Returns the job's value, or -errno
 * with *step (when not NULL) PSO_NETNS_STEP_THREAD when the thread could not start or
 * PSO_NETNS_STEP_SETNS when it could not enter (the job then never ran); *step is 0 when the
 * job ran, whatever it returned. The job runs on the runner's thread, so it must not keep
 * per-thread state past its return. */
int pso_netns_run(int nsfd, int (*job)(void *arg), void *arg, int *step);

/* A socket(domain, type | SOCK_CLOEXEC, protocol) created inside namespace nsfd (through
 * pso_netns_run); a socket keeps the namespace it was made in, so the caller may use it from
 * any thread. Returns the descriptor (the caller closes it) or -errno with *step (when not
 * NULL) PSO_NETNS_STEP_THREAD, PSO_NETNS_STEP_SETNS or PSO_NETNS_STEP_SOCKET. */
int pso_netns_socket(int nsfd, int domain, int type, int protocol, int *step);

/* One file to read inside the namespace: path (e.g. "/proc/thread-self/net/tcp" or
 * "/proc/sys/net/core/somaxconn") into buf (cap bytes). Out: len, the bytes read, and rc: 0, or
 * -ENOBUFS when the file filled buf (it may hold more: buf has its first cap bytes; give
 * one byte more than the largest file expected), or -errno of open/read. */
struct pso_netns_file {
    const char *path;
    uint8_t *buf;
    size_t cap;
    size_t len;
    int rc;
};

/* Runs pso_sd_dump(q, sink) inside namespace nsfd. Returns 0 or -errno; *step (when step is not
 * NULL) is 0 on success, else PSO_NETNS_STEP_* or the dump's PSO_SD_STEP_*. */
int pso_netns_dump(int nsfd, const struct pso_sd_query *q, struct pso_sd_sink *sink, int *step);

/* Reads the n files inside namespace nsfd, in one thread. Returns 0 once the thread entered
 * the namespace (each file then carries its own rc), or -errno with *step PSO_NETNS_STEP_*. */
int pso_netns_read_files(int nsfd, struct pso_netns_file *files, size_t n, int *step);

/* One file: pso_netns_read_files for {path, buf, cap}. Returns 0 with *len set, or -errno
 * (-ENOBUFS: the file filled all cap bytes). */
int pso_netns_read(int nsfd, const char *path, uint8_t *buf, size_t cap, size_t *len);

/* One sock_diag dump of a look (pso_netns_look): query q into sink. A dump the kernel marks
 * interrupted (NLM_F_DUMP_INTR: its tables changed while it was read) is taken back out of the
 * sink and run again, at most tries times in all (0: once). Out: rc, 0 or -errno (-EAGAIN when
 * the last try was still interrupted; -ECANCELED when an earlier dump of the look failed and
 * this one never ran), and step, the dump's PSO_SD_STEP_* when rc is not 0. Several dumps may
 * share one sink (each is taken back alone). */
struct pso_netns_dump_req {
    const struct pso_sd_query *q;
    struct pso_sd_sink *sink;
    int tries;
    int rc;
    int step;
};

/* One look into namespace nsfd in ONE trip (one thread, one setns): reads the nfiles files as
 * pso_netns_read_files does, then runs the ndumps dumps in order, stopping at the first that
 * fails (those after it: rc -ECANCELED). Returns 0 once the thread entered the namespace (each
 * file and dump then carries its own rc), or -errno with *step PSO_NETNS_STEP_* (nothing ran). */
int pso_netns_look(int nsfd, struct pso_netns_file *files, size_t nfiles,
                   struct pso_netns_dump_req *dumps, size_t ndumps, int *step);
