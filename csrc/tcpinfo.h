/* tcpinfo.h: getsockopt(TCP_INFO) for one socket or a whole batch in one crossing. Included as C
 * and read as the cffi cdef, so: declarations and integer #defines only, no include guards, no
 * other preprocessor. The bytes are decoded in Python from its own offset table, never from a
 * C struct tcp_info (glibc knows 104 bytes, the build host's linux/tcp.h may be older than the
 * running kernel). */

/* Bytes offered to the kernel per socket: more than the 280 known today, so the extra bytes a
 * newer kernel returns are seen (and kept) instead of silently cut off. */
#define PSO_TCPI_CAP 512

/* 1 where TCP_INFO is Linux's struct tcp_info, 0 elsewhere (other layouts are never guessed). */
extern const int PSO_HAS_TCP_INFO;

/* getsockopt(IPPROTO_TCP, TCP_INFO) of fd into buf, which must hold PSO_TCPI_CAP bytes and
 * belongs to this one call (a per-thread buffer would be overwritten by a signal handler's
 * nested call before Python read it). Returns the length the kernel wrote (>= 0) or -errno
 * (-EFAULT when buf is NULL). */
int pso_tcp_info(int fd, unsigned char *buf);

/* TCP_INFO for n descriptors in one call, packed one after another into buf (which must hold
 * n * PSO_TCPI_CAP bytes): lens[i] is entry i's length, or -errno for a failed entry, which takes
 * no room. Returns the total bytes used (>= 0) or -EINVAL for bad arguments; one bad descriptor
 * never fails the batch. */
long pso_tcp_info_batch(const int *fds, int n, unsigned char *buf, int *lens);

/* pso_tcp_info_batch that also says whether every entry succeeded with one length: *same is
 * that length (> 0), or -1 when some entry failed or lengths differ (then read lens). The
 * common case (the kernel's one size for every TCP socket) needs no look at lens from Python.
 * Returns the total bytes used (>= 0) or -EINVAL for bad arguments. */
long pso_tcp_info_poll(const int *fds, int n, unsigned char *buf, int *lens, int *same);

/* Benchmark baseline only (benchmarks/bench_tcpinfo.py): the plainest C loop of getsockopt
 * (TCP_INFO, PSO_TCPI_CAP bytes) over n descriptors into one reused buffer. Returns how many
 * calls succeeded. Not part of the library's API. */
int pso_bench_getsockopt_loop(const int *fds, int n, unsigned char *buf);
