/* remote.h: acting on another process's sockets. pidfd_open + pidfd_getfd duplicate one of
 * its descriptors into ours (the same open socket, so setsockopt on the copy changes it), and
 * SOCK_DESTROY over NETLINK_SOCK_DIAG aborts one socket named by its exact 4-tuple and cookie.
 * Included as C and read as the cffi cdef, so: declarations and integer #defines only, no
 * include guards, no other preprocessor. */

/* The sock_diag message type that aborts one socket (linux/sock_diag.h). */
#define PSO_SOCK_DESTROY 21

/* 1 where the build knows the pidfd_open / pidfd_getfd syscall numbers, else 0 (the calls
 * then return -ENOSYS). */
extern const int PSO_HAS_PIDFD;

/* Returns a pidfd (close-on-exec) for process pid, or -errno (-ESRCH: no such process,
 * -EINVAL: pid is not a thread-group leader, -ENOSYS: kernel older than 5.3). */
int pso_pidfd_open(int pid);

/* Duplicates descriptor targetfd of the process behind pidfd into this process and checks
 * that the copy is the socket with inode expected_inode (0: any socket). Returns the new
 * descriptor (close-on-exec; the caller closes it) or -errno: -EPERM when ptrace access to
 * the process is refused, -EBADF when it has no such descriptor, -ESRCH when it exited,
 * -ENOTSOCK when the descriptor is not a socket, -ESTALE when it now holds another socket
 * than expected (the copy is closed before returning), -ENOSYS before Linux 5.6. */
int pso_pidfd_getfd(int pidfd, int targetfd, uint64_t expected_inode);

/* One socket to destroy, named exactly as sock_diag reported it. Addresses in network byte
 * order (IPv4 in the first 4 bytes, the rest zero), ports in host order; ifindex is the
 * device the socket is bound to (0: none); cookie is sock_diag's socket cookie, which the
 * kernel checks so that a newer socket reusing the 4-tuple is never the one destroyed. */
struct pso_destroy_req {
    uint64_t cookie;
    uint8_t src[16];
    uint8_t dst[16];
    uint32_t ifindex;
    uint16_t sport;
    uint16_t dport;
    uint8_t family;
    uint8_t state;
    uint8_t pad[6];
};

/* Sends one SOCK_DESTROY per request over one NETLINK_SOCK_DIAG socket (created in the
 * calling thread's network namespace) and stores the kernel's answer for each in
 * results[i]: 0 (destroyed), or -errno (-ENOENT: no such socket, -ESTALE: the cookie names
 * another socket, -EPERM: no CAP_NET_ADMIN, -EOPNOTSUPP: kernel without
 * CONFIG_INET_DIAG_DESTROY, -EINVAL: bad request). Returns 0 when every request was answered,
 * or -errno when the netlink socket itself failed; requests not answered then hold that
 * error. */
int pso_sock_destroy(const struct pso_destroy_req *reqs, size_t n, int *results);

/* pso_sock_destroy inside network namespace nsfd, as a job of netns.h's pso_netns_run (one
 * short-lived native thread joins it, makes the netlink socket there and sends the requests;
 * the caller's thread never changes namespace). Returns as pso_sock_destroy, or -errno with *step (when not
 * NULL) set to netns.h's PSO_NETNS_STEP_THREAD / PSO_NETNS_STEP_SETNS when the thread could
 * not start or enter; every result then holds that error. */
int pso_netns_sock_destroy(int nsfd, const struct pso_destroy_req *reqs, size_t n,
                           int *results, int *step);

/* Builds the SOCK_DESTROY request for req into buf (cap bytes). Returns its length or
 * -errno (-EINVAL for a bad family or state, -ENOBUFS if cap is too small). */
int pso_destroy_build_request(const struct pso_destroy_req *req, uint32_t seq, uint8_t *buf,
                              size_t cap);
