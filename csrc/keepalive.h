/* keepalive.h: TCP keepalive in one native call. Included as C and read as the cffi cdef,
 * so: declarations and integer #defines only, no include guards, no other preprocessor. */

/* Option indices, in the order pso_keepalive_apply sets them. */
#define PSO_KA_KEEPIDLE 0
#define PSO_KA_KEEPINTVL 1
#define PSO_KA_KEEPCNT 2
#define PSO_KA_USER_TIMEOUT 3
#define PSO_KA_SO_KEEPALIVE 4
#define PSO_KA_NOPTIONS 5

/* 1 where the platform can set that option per socket, 0 where it cannot. */
extern const int PSO_HAS_TCP_KEEPIDLE;
extern const int PSO_HAS_TCP_KEEPINTVL;
extern const int PSO_HAS_TCP_KEEPCNT;
extern const int PSO_HAS_TCP_USER_TIMEOUT;

/* The (level, option) numbers for PSO_KA_* indices, for socket_options() and messages. */
extern const int pso_ka_levels[PSO_KA_NOPTIONS];
extern const int pso_ka_optnames[PSO_KA_NOPTIONS];

/* What to set; user_timeout_ms < 0 leaves TCP_USER_TIMEOUT alone. Python builds one per
 * KeepaliveConfig, once, so the hot call converts two arguments instead of six. */
struct pso_keepalive_req {
    int idle;
    int interval;
    int count;
    int user_timeout_ms;
};

/* One call's result, owned by that call (never per thread: a signal handler may run a nested
 * call between the native call and Python's reading of its result).
 * values[PSO_KA_*]: the settings as read from the socket; SO_KEEPALIVE is 0 or 1.
 * failed_option / failed_while_setting: after a -errno return, the PSO_KA_* index whose
 * syscall failed and whether it failed while setting (1) or reading back (0); -1 / 0 when
 * nothing failed. */
struct pso_keepalive {
    int values[PSO_KA_NOPTIONS];
    int failed_option;
    int failed_while_setting;
};

/* Sets TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT (when requested) and then
 * SO_KEEPALIVE=1 on fd. Returns 0 or -errno (-EFAULT when req is NULL); on failure
 * out->failed_option names the step; out->values are left alone. out may be NULL (the hot
 * path: no result to own): nothing is recorded, and a caller that wants the failed step calls
 * again with a buffer. That repeats nothing harmful: the options before the failed one are set
 * to the values they already have, and a failed setsockopt changes nothing. */
int pso_keepalive_set(int fd, const struct pso_keepalive_req *req, struct pso_keepalive *out);

/* pso_keepalive_set, then reads all five settings back into out. Returns 0 or -errno. */
int pso_keepalive_set_verify(int fd, const struct pso_keepalive_req *req,
                             struct pso_keepalive *out);

/* Reads the five keepalive settings of fd into out. Returns 0 or -errno. */
int pso_keepalive_read(int fd, struct pso_keepalive *out);

/* pso_keepalive_set on each of n descriptors in one crossing (apply_keepalive_many): rcs[i] is
 * 0 or -errno for fds[i], and failed[i] the PSO_KA_* index whose setsockopt failed (-1 when
 * none did). One bad descriptor never stops the others. Returns how many failed (>= 0), or
 * -EINVAL / -EFAULT for bad arguments. */
int pso_keepalive_set_many(const int *fds, int n, const struct pso_keepalive_req *req,
                           int *rcs, int *failed);
