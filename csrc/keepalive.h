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
extern const int pso_ka_levels[5];
extern const int pso_ka_optnames[5];

/* What to set; user_timeout_ms < 0 leaves TCP_USER_TIMEOUT alone. Python builds one per
 * KeepaliveConfig, once, so the hot call converts two arguments instead of six. */
struct pso_keepalive_req {
    int idle;
    int interval;
    int count;
    int user_timeout_ms;
};

/* Keepalive settings as read from a socket: values[PSO_KA_*]; SO_KEEPALIVE is 0 or 1. */
struct pso_keepalive {
    int values[5];
};

/* Sets TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT (when requested) and then
 * SO_KEEPALIVE=1 on fd. Returns 0 or -errno; on failure pso_keepalive_failed_option() names
 * the step. */
int pso_keepalive_set(int fd, const struct pso_keepalive_req *req);

/* pso_keepalive_set, then reads all five settings back into out. Returns 0 or -errno. */
int pso_keepalive_set_verify(int fd, const struct pso_keepalive_req *req,
                             struct pso_keepalive *out);

/* Reads the five keepalive settings of fd into out. Returns 0 or -errno. */
int pso_keepalive_read(int fd, struct pso_keepalive *out);

/* The PSO_KA_* index of the option whose syscall failed last in this thread, and whether it
 * failed while setting (1) or reading back (0). Meaningful right after a -errno return. */
int pso_keepalive_failed_option(void);
int pso_keepalive_failed_while_setting(void);
