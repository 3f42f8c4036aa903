/* holder.c: hold PAIRS connected loopback TCP pairs until stdin closes (bench_sockdiag.py).
 *
 * Usage: holder --files N holds N descriptors of /dev/null instead (bench_owner_walk.py): what
 * a walk of /proc/PID/fd must read, without sockets a dump would count.
 *
 * Usage: holder ADDRESS PAIRS. Listens on ADDRESS (a loopback address of its own, so that the
 * holders' clients do not compete for one destination's ephemeral ports), connects and accepts
 * PAIRS times, prints how many sockets it holds, then blocks reading stdin: when the benchmark
 * closes the pipe or dies, the holder exits and the kernel closes every socket. C, not Python:
 * a million sockets are built in seconds, and a holder holds up to the 20,000 descriptors a
 * process may have here. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static int die(const char *what)
{
    fprintf(stderr, "holder: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return fprintf(stderr, "usage: holder ADDRESS PAIRS | holder --files N\n"), 2;
    long pairs = strtol(argv[2], NULL, 10);
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
        return die("getrlimit");
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
        return die("setrlimit");
    if (strcmp(argv[1], "--files") == 0) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0)
            return die("open /dev/null");
        long held = 1;
        for (; held < pairs; held++)
            if (dup(fd) < 0)
                return die("dup");
        printf("%ld\n", held);
        fflush(stdout);
        char sink[256];
        while (read(0, sink, sizeof sink) > 0)
            ;
        return 0;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(5000)};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1)
        return fprintf(stderr, "holder: bad address %s\n", argv[1]), 2;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (listener < 0)
        return die("socket");
    if (setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        return die("SO_REUSEADDR");
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0)
        return die("bind");
    if (listen(listener, 4096) != 0)
        return die("listen");
    long held = 1;
    for (long i = 0; i < pairs; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0)
            return die("socket");
        if (connect(c, (struct sockaddr *)&addr, sizeof addr) != 0)
            return die("connect");
        int s = accept(listener, NULL, NULL);
        if (s < 0)
            return die("accept");
        held += 2;
    }
    printf("%ld\n", held);
    fflush(stdout);
    char sink[256];
    while (read(0, sink, sizeof sink) > 0)
        ;
    return 0;
}
