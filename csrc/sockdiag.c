/* sockdiag.c: NETLINK_SOCK_DIAG dumps of TCP sockets and the /proc/net/tcp* fallback. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

#include "nl.h"
#include "sockdiag.h"
#include "tcpstate.h"

/* Values from the kernel's uapi that old build hosts may lack; the ABI never changes them. */
#define BC_JMP 1        /* INET_DIAG_BC_JMP */
#define BC_S_EQ 11      /* INET_DIAG_BC_S_EQ (kernel 4.16) */
#define BC_D_EQ 12      /* INET_DIAG_BC_D_EQ */
#define ATTR_INFO 2     /* INET_DIAG_INFO */
#define ATTR_SKMEMINFO 7 /* INET_DIAG_SKMEMINFO: u32[SK_MEMINFO_VARS] */
#define REQ_BYTECODE 1  /* INET_DIAG_REQ_BYTECODE */
#define SKMEM_DROPS 8   /* SK_MEMINFO_DROPS index */

/* --- sink */

void pso_sd_sink_init(struct pso_sd_sink *sink, int keep)
{
    memset(sink, 0, sizeof *sink);
    sink->keep = keep;
}

void pso_sd_sink_free(struct pso_sd_sink *sink)
{
    if (sink == NULL)
        return;
    free(sink->conns);
    free(sink->info);
    sink->conns = NULL;
    sink->info = NULL;
    sink->nconns = sink->conns_cap = 0;
    sink->info_len = sink->info_cap = 0;
}

void pso_sd_sink_rearm(struct pso_sd_sink *sink, uint32_t seq)
{
    sink->done = 0;
    sink->seq = seq;
}

void pso_sd_sink_mark(const struct pso_sd_sink *sink, struct pso_sd_mark *mark)
{
    memcpy(mark->counts, sink->counts, sizeof mark->counts);
    mark->total = sink->total;
    mark->nconns = sink->nconns;
    mark->info_len = sink->info_len;
}

void pso_sd_sink_rollback(struct pso_sd_sink *sink, const struct pso_sd_mark *mark)
{
    /* Only ever shrinks: a mark from another sink or a later point changes nothing. */
    if (mark->nconns > sink->nconns || mark->info_len > sink->info_len)
        return;
    memcpy(sink->counts, mark->counts, sizeof sink->counts);
    sink->total = mark->total;
    sink->nconns = mark->nconns;
    sink->info_len = mark->info_len;
    sink->interrupted = 0;
}

/* Returns a zeroed record at the end of sink->conns, or NULL when out of memory. */
static struct pso_conn *new_conn(struct pso_sd_sink *sink)
{
    if (sink->nconns == sink->conns_cap) {
        size_t cap = sink->conns_cap ? sink->conns_cap * 2 : 1024;
        struct pso_conn *grown;
        if (cap > SIZE_MAX / sizeof *grown)
            return NULL;
        grown = realloc(sink->conns, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        sink->conns = grown;
        sink->conns_cap = cap;
    }
    struct pso_conn *c = &sink->conns[sink->nconns++];
    memset(c, 0, sizeof *c);
    c->drops = -1;
    return c;
}

/* Counts one socket in state; when the sink keeps records, *out is its new zeroed record
 * (else NULL). Returns 0 or -ENOMEM. */
static int account(struct pso_sd_sink *sink, unsigned state, struct pso_conn **out)
{
    sink->counts[state]++;
    sink->total++;
    *out = NULL;
    if (!sink->keep)
        return 0;
    *out = new_conn(sink);
    return *out == NULL ? -ENOMEM : 0;
}

/* Appends len bytes to the info blob; returns 0 or -ENOMEM. */
static int keep_info(struct pso_sd_sink *sink, struct pso_conn *c, const uint8_t *data,
                     size_t len)
{
    if (len > UINT16_MAX || sink->info_len > UINT32_MAX - len)
        return -ENOMEM;
    if (sink->info_len + len > sink->info_cap) {
        size_t cap = sink->info_cap ? sink->info_cap : 65536;
        while (cap < sink->info_len + len)
            cap *= 2;
        uint8_t *grown = realloc(sink->info, cap);
        if (grown == NULL)
            return -ENOMEM;
        sink->info = grown;
        sink->info_cap = cap;
    }
    memcpy(sink->info + sink->info_len, data, len);
    c->info_off = (uint32_t)sink->info_len;
    c->info_len = (uint16_t)len;
    sink->info_len += len;
    return 0;
}

/* --- request */

int pso_sd_build_request(const struct pso_sd_query *q, int family, uint32_t seq,
                         uint8_t *buf, size_t cap)
{
    /* The port filter is bytecode, as ss builds it: "sport == P or dport == P".
     * Exact ports in the request's sockid would be ANDed, and the listener walk ignores
     * dport; the bytecode runs on every kind of socket (full, TIME_WAIT, request). */
    struct {
        struct inet_diag_bc_op s_eq, s_port, jmp, d_eq, d_port;
    } bc;
    if (q == NULL || buf == NULL ||
        (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) ||
        q->port < -1 || q->port > 65535 || (q->states & ~(uint32_t)0xffff) != 0)
        return -EINVAL;
    /* Both request layouts are followed by the same optional INET_DIAG_REQ_BYTECODE: the
     * kernel looks for it after the aligned header of either (inet_diag_parse_attrs). */
    size_t hdr = family == AF_UNSPEC ? sizeof(struct inet_diag_req)
                                     : sizeof(struct inet_diag_req_v2);
    size_t bc_len = q->port >= 0 ? sizeof bc : 0;
    size_t attr_len = bc_len ? NLA_HDRLEN + bc_len : 0;
    size_t total = NLMSG_HDRLEN + NLMSG_ALIGN(hdr) + attr_len;
    if (cap < total)
        return -ENOBUFS;
    memset(buf, 0, total);

    uint8_t ext = 0;
    if (q->ext & PSO_SD_EXT_INFO)
        ext |= 1 << (ATTR_INFO - 1);
    if (q->ext & PSO_SD_EXT_SKMEMINFO)
        ext |= 1 << (ATTR_SKMEMINFO - 1);

    struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
    nlh->nlmsg_len = (uint32_t)total;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = seq;
    if (family == AF_UNSPEC) {
        /* The kernel dumps this one with sdiag_family AF_UNSPEC whatever idiag_family says,
         * for the protocol the message type names (inet_diag_type2proto). */
        struct inet_diag_req *req = (struct inet_diag_req *)(buf + NLMSG_HDRLEN);
        nlh->nlmsg_type = PSO_SD_TCPDIAG_GETSOCK;
        req->idiag_family = AF_UNSPEC;
        req->idiag_ext = ext;
        req->idiag_states = q->states;
    } else {
        struct inet_diag_req_v2 *req = (struct inet_diag_req_v2 *)(buf + NLMSG_HDRLEN);
        nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
        req->sdiag_family = (uint8_t)family;
        req->sdiag_protocol = IPPROTO_TCP;
        req->idiag_ext = ext;
        req->idiag_states = q->states;
    }

    if (bc_len) {
        /* yes/no are byte offsets from the op; landing exactly on the end accepts, landing
         * 4 bytes past it rejects (net/ipv4/inet_diag.c inet_diag_bc_run). */
        bc.s_eq = (struct inet_diag_bc_op){BC_S_EQ, 8, 12};   /* no: to d_eq */
        bc.s_port = (struct inet_diag_bc_op){0, 0, (uint16_t)q->port};
        bc.jmp = (struct inet_diag_bc_op){BC_JMP, 4, 12};     /* sport matched: to the end */
        bc.d_eq = (struct inet_diag_bc_op){BC_D_EQ, 8, 12};   /* no: 4 past the end */
        bc.d_port = (struct inet_diag_bc_op){0, 0, (uint16_t)q->port};
        struct nlattr *nla = (struct nlattr *)(buf + NLMSG_HDRLEN + NLMSG_ALIGN(hdr));
        nla->nla_len = (uint16_t)attr_len;
        nla->nla_type = REQ_BYTECODE;
        memcpy((uint8_t *)nla + NLA_HDRLEN, &bc, bc_len);
    }
    return (int)total;
}

/* --- reply parser */

static int parse_diag_msg(const uint8_t *payload, size_t len, struct pso_sd_sink *sink)
{
    struct inet_diag_msg m;
    if (len < sizeof m)
        return -EBADMSG;
    memcpy(&m, payload, sizeof m); /* the payload need not be aligned for us */
    if ((m.idiag_family != AF_INET && m.idiag_family != AF_INET6) ||
        m.idiag_state == 0 || m.idiag_state >= PSO_SD_NSTATES ||
        m.idiag_timer > PSO_TIMER_ZERO_WINDOW)
        return -EBADMSG;

    /* Walk every attribute even when nothing is kept: a corrupt one is an error either way. */
    const uint8_t *info = NULL;
    size_t info_len = 0;
    int32_t drops = -1;
    size_t off = NLMSG_ALIGN(sizeof m);
    while (off < len) {
        struct nlattr nla;
        if (len - off < NLA_HDRLEN)
            return -EBADMSG;
        memcpy(&nla, payload + off, sizeof nla);
        if (nla.nla_len < NLA_HDRLEN || nla.nla_len > len - off)
            return -EBADMSG;
        size_t plen = nla.nla_len - NLA_HDRLEN;
        const uint8_t *p = payload + off + NLA_HDRLEN;
        uint16_t type = nla.nla_type & NLA_TYPE_MASK;
        if (type == ATTR_INFO) {
            info = p;
            info_len = plen;
        } else if (type == ATTR_SKMEMINFO && plen >= (SKMEM_DROPS + 1) * sizeof(uint32_t)) {
            uint32_t d;
            memcpy(&d, p + SKMEM_DROPS * sizeof(uint32_t), sizeof d);
            drops = d > INT32_MAX ? INT32_MAX : (int32_t)d;
        }
        size_t step = NLA_ALIGN(nla.nla_len);
        off += step < len - off ? step : len - off;
    }

    struct pso_conn *c;
    int rc = account(sink, m.idiag_state, &c);
    if (rc || c == NULL)
        return rc;
    memcpy(c->src, m.id.idiag_src, 16);
    memcpy(c->dst, m.id.idiag_dst, 16);
    /* As the kernel splits it (sock_diag_save_cookie): low word first; SO_COOKIE's value. */
    c->cookie = (uint64_t)m.id.idiag_cookie[1] << 32 | m.id.idiag_cookie[0];
    if (m.idiag_family == AF_INET) { /* only the first word is the address */
        memset(c->src + 4, 0, 12);
        memset(c->dst + 4, 0, 12);
    }
    c->sport = ntohs(m.id.idiag_sport);
    c->dport = ntohs(m.id.idiag_dport);
    c->family = m.idiag_family;
    c->state = m.idiag_state;
    c->timer = m.idiag_timer;
    c->retrans = m.idiag_retrans;
    c->expires_ms = m.idiag_expires;
    c->rqueue = m.idiag_rqueue;
    c->wqueue = m.idiag_wqueue;
    c->uid = m.idiag_uid;
    c->inode = m.idiag_inode;
    c->drops = drops;
    if (info != NULL && info_len > 0)
        return keep_info(sink, c, info, info_len);
    return 0;
}

/* The walker's callback for one message of a dump reply. */
static int dump_msg(const struct pso_nl_msg *m, void *arg)
{
    struct pso_sd_sink *sink = arg;
    if (m->flags & NLM_F_DUMP_INTR)
        sink->interrupted = 1;
    if (m->type == NLMSG_DONE) {
        sink->done = m->error == 0;
        return PSO_NL_MORE; /* the walker ends the walk here */
    }
    /* A dump never gets a plain ACK: 0 is a broken reply. */
    if (m->type == NLMSG_ERROR)
        return m->error != 0 ? m->error : -EBADMSG;
    /* The reply to a dump carries its request's type (inet_sk_diag_fill: unlh's). */
    if (m->type == SOCK_DIAG_BY_FAMILY || m->type == PSO_SD_TCPDIAG_GETSOCK) {
        int rc = parse_diag_msg(m->payload, m->len, sink);
        return rc ? rc : PSO_NL_MORE;
    }
    return -EBADMSG;
}

int pso_sd_parse(const uint8_t *buf, size_t len, struct pso_sd_sink *sink)
{
    if (sink == NULL || (buf == NULL && len > 0))
        return -EINVAL;
    if (sink->done)
        return -EBADMSG; /* data after NLMSG_DONE */
    /* PSO_SD_MORE / PSO_SD_DONE are the walker's PSO_NL_MORE / PSO_NL_DONE. */
    return pso_nl_walk(buf, len, sink->seq, dump_msg, sink);
}

/* --- netlink I/O */

static int fail_step(struct pso_sd_sink *sink, int step, int rc)
{
    sink->failed_step = step;
    return rc;
}

static int send_request(int fd, const struct pso_sd_query *q, int family, uint32_t seq,
                        struct pso_sd_sink *sink)
{
    uint8_t req[256];
    int n = pso_sd_build_request(q, family, seq, req, sizeof req);
    if (n < 0)
        return fail_step(sink, PSO_SD_STEP_SEND, n);
    if (family == AF_UNSPEC && sink->unspec_type > 0 && sink->unspec_type <= UINT16_MAX)
        ((struct nlmsghdr *)req)->nlmsg_type = (uint16_t)sink->unspec_type;
    int rc = pso_nl_send(fd, req, (size_t)n);
    if (rc != 0)
        return fail_step(sink, PSO_SD_STEP_SEND, rc);
    sink->dumps++;
    return 0;
}

int pso_sd_recv_dump(int fd, struct pso_sd_sink *sink)
{
    if (sink == NULL)
        return -EINVAL;
    int rc = pso_nl_set_timeout(fd, sink->timeout_ms > 0 ? sink->timeout_ms : PSO_SD_TIMEOUT_MS);
    if (rc != 0)
        return fail_step(sink, PSO_SD_STEP_RECV, rc);
    size_t cap = sink->recv_size > 0 ? (size_t)sink->recv_size : PSO_SD_RECV_SIZE;
    uint8_t *buf = malloc(cap);
    if (buf == NULL)
        return fail_step(sink, PSO_SD_STEP_RECV, -ENOMEM);
    for (;;) {
        size_t got;
        rc = pso_nl_recv(fd, &buf, &cap, &got);
        if (rc != 0) {
            rc = fail_step(sink, PSO_SD_STEP_RECV, rc);
            break;
        }
        rc = pso_sd_parse(buf, got, sink);
        if (rc == PSO_SD_DONE) {
            rc = 0;
            break;
        }
        if (rc < 0) {
            rc = fail_step(sink, rc == -EBADMSG || rc == -ENOMEM ? PSO_SD_STEP_PARSE
                                                                  : PSO_SD_STEP_KERNEL, rc);
            break;
        }
    }
    free(buf);
    return rc;
}

/* Sends one dump request on fd and reads its whole reply into sink. */
static int dump_once(int fd, const struct pso_sd_query *q, int family, uint32_t seq,
                     struct pso_sd_sink *sink)
{
    int rc = send_request(fd, q, family, seq, sink);
    if (rc != 0)
        return rc;
    pso_sd_sink_rearm(sink, seq);
    return pso_sd_recv_dump(fd, sink);
}

/* How a kernel without the tcp_diag compatibility request answers it: -EOPNOTSUPP when
 * inet_diag registered no compat handler (sock_diag_rcv_msg), -EINVAL for a message type it
 * does not know, -ENOENT when no TCP handler is there (the per-family dumps then fail alike
 * and the caller reads /proc). Only the kernel's own answer counts, never a local failure. */
static int unspec_refused(const struct pso_sd_sink *sink, int rc)
{
    return sink->failed_step == PSO_SD_STEP_KERNEL &&
           (rc == -EINVAL || rc == -EOPNOTSUPP || rc == -ENOENT);
}

int pso_sd_dump(const struct pso_sd_query *q, struct pso_sd_sink *sink)
{
    if (sink == NULL)
        return -EINVAL;
    sink->failed_step = 0;
    sink->dumps = 0;
    sink->unspec_refused = 0;
    if (q == NULL)
        return fail_step(sink, PSO_SD_STEP_SEND, -EINVAL);
    if (q->family != 0 && q->family != AF_INET && q->family != AF_INET6)
        return fail_step(sink, PSO_SD_STEP_SEND, -EINVAL);
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        return fail_step(sink, PSO_SD_STEP_SOCKET, -errno);
    /* A fresh socket per dump: its replies carry only our sequence numbers, a new one for
     * each request, so nothing left of a refused request can pass for a later reply. */
    uint32_t seq = 0;
    int rc = 0;
    int apart = q->family != 0 || sink->split;
    if (!apart) {
        /* Every dump walks the kernel's whole established hash, which all namespaces share:
         * one walk for both families instead of one per family. */
        struct pso_sd_mark mark;
        int interrupted = sink->interrupted;
        pso_sd_sink_mark(sink, &mark);
        rc = dump_once(fd, q, AF_UNSPEC, ++seq, sink);
        if (rc != 0 && unspec_refused(sink, rc)) {
            /* Never a partial answer: whatever came before the refusal goes. */
            pso_sd_sink_rollback(sink, &mark);
            sink->interrupted = interrupted;
            sink->unspec_refused = rc;
            sink->failed_step = 0;
            rc = 0;
            apart = 1;
        }
    }
    static const int families[2] = {AF_INET, AF_INET6};
    for (int i = 0; apart && i < 2 && rc == 0; i++) {
        if (q->family != 0 && q->family != families[i])
            continue;
        rc = dump_once(fd, q, families[i], ++seq, sink);
    }
    /* Only read from, and everything read is in the sink already: a failing close (it
     * cannot lose data on a netlink socket) must not turn a complete answer into an error. */
    (void)close(fd);
    return rc;
}

/* --- /proc/net/tcp* */

/* Reads hex digits [p, end) up to width max_digits into *out; returns the end of the digits
 * or NULL when there were none or too many. */
static const char *hex_field(const char *p, const char *end, int max_digits, uint64_t *out)
{
    uint64_t v = 0;
    int n = 0;
    while (p < end) {
        char ch = *p;
        int d;
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'A' && ch <= 'F')
            d = ch - 'A' + 10;
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else
            break;
        if (++n > max_digits)
            return NULL;
        v = v << 4 | (uint64_t)d;
        p++;
    }
    if (n == 0)
        return NULL;
    *out = v;
    return p;
}

static const char *dec_field(const char *p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    int n = 0;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    while (p < end && *p >= '0' && *p <= '9') {
        if (++n > 20 || v > (UINT64_MAX - 9) / 10)
            return NULL;
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (n == 0)
        return NULL;
    *out = neg ? 0 : v; /* a negative count is "none" */
    return p;
}

static const char *skip_spaces(const char *p, const char *end)
{
    while (p < end && *p == ' ')
        p++;
    return p;
}

static const char *expect(const char *p, const char *end, char ch)
{
    return p != NULL && p < end && *p == ch ? p + 1 : NULL;
}

/* Parses "ADDR:PORT" where ADDR is words * 8 hex digits, each a u32 printed in host order. */
static const char *address(const char *p, const char *end, int words, uint8_t out[16],
                           uint16_t *port)
{
    memset(out, 0, 16);
    for (int i = 0; i < words; i++) {
        uint64_t w;
        const char *q = hex_field(p, p + 8 <= end ? p + 8 : end, 8, &w);
        if (q == NULL || q != p + 8)
            return NULL;
        uint32_t w32 = (uint32_t)w;
        memcpy(out + 4 * i, &w32, 4); /* host order back to the bytes the kernel held */
        p = q;
    }
    uint64_t v;
    p = expect(p, end, ':');
    if (p == NULL || (p = hex_field(p, end, 4, &v)) == NULL)
        return NULL;
    *port = (uint16_t)v;
    return p;
}

static int proc_line(const char *p, const char *end, int family, const struct pso_sd_query *q,
                     struct pso_sd_sink *sink, long clk_tck)
{
    int words = family == AF_INET ? 1 : 4;
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
    uint64_t state, txq, rxq, timer, when, retrnsmt, uid, probes, inode, sl;

    p = skip_spaces(p, end);
    if ((p = dec_field(p, end, &sl)) == NULL || (p = expect(p, end, ':')) == NULL)
        return -EBADMSG;
    p = skip_spaces(p, end);
    if ((p = address(p, end, words, src, &sport)) == NULL)
        return -EBADMSG;
    p = skip_spaces(p, end);
    if ((p = address(p, end, words, dst, &dport)) == NULL)
        return -EBADMSG;
    p = skip_spaces(p, end);
    if ((p = hex_field(p, end, 2, &state)) == NULL || state == 0 || state >= PSO_SD_NSTATES)
        return -EBADMSG;
    p = skip_spaces(p, end);
    if ((p = hex_field(p, end, 8, &txq)) == NULL || (p = expect(p, end, ':')) == NULL ||
        (p = hex_field(p, end, 8, &rxq)) == NULL)
        return -EBADMSG;
    p = skip_spaces(p, end);
    if ((p = hex_field(p, end, 2, &timer)) == NULL || timer > PSO_TIMER_ZERO_WINDOW ||
        (p = expect(p, end, ':')) == NULL || (p = hex_field(p, end, 16, &when)) == NULL)
        return -EBADMSG;
    p = skip_spaces(p, end);
    if ((p = hex_field(p, end, 8, &retrnsmt)) == NULL)
        return -EBADMSG;
    p = skip_spaces(p, end);
    if ((p = dec_field(p, end, &uid)) == NULL)
        return -EBADMSG;
    p = skip_spaces(p, end);
    if ((p = dec_field(p, end, &probes)) == NULL)
        return -EBADMSG;
    p = skip_spaces(p, end);
    if ((p = dec_field(p, end, &inode)) == NULL || (p < end && *p != ' '))
        return -EBADMSG;
    /* After the inode a request socket prints only "refcnt pointer"; a full socket goes on
     * with rto, ato, ... So the field count tells a request socket from a full SYN_RECV child
     * not yet accepted (TCP Fast Open), which also has inode 0. */
    int tail = 0;
    for (const char *t = skip_spaces(p, end); t < end && tail < 3; t = skip_spaces(t, end)) {
        tail++;
        while (t < end && *t != ' ')
            t++;
    }
    int request = state == PSO_TCP_SYN_RECV && inode == 0 && tail <= 2;

    /* Request sockets print state SYN_RECV (3) here, never NEW_SYN_RECV (12). */
    if (!(q->states & (1u << state)))
        return 0;
    if (q->port >= 0 && sport != q->port && dport != q->port)
        return 0;

    struct pso_conn *c;
    int rc = account(sink, (unsigned)state, &c);
    if (rc || c == NULL)
        return rc;
    memcpy(c->src, src, 16);
    memcpy(c->dst, dst, 16);
    c->sport = sport;
    c->dport = dport;
    c->family = (uint8_t)family;
    c->state = (uint8_t)state;
    c->timer = (uint8_t)timer;
    /* sock_diag reports what the timer is counting: retransmits under the retransmit timer,
     * unanswered probes under the keepalive and zero-window timers, nothing otherwise. */
    uint64_t retrans = timer == PSO_TIMER_RETRANSMIT ? retrnsmt
                     : timer == PSO_TIMER_KEEPALIVE || timer == PSO_TIMER_ZERO_WINDOW ? probes
                     : 0;
    c->retrans = (uint8_t)(retrans > 255 ? 255 : retrans);
    /* when is up to 16 hex digits: when * 1000 could wrap to a small value. */
    uint64_t ms = timer == PSO_TIMER_NONE ? 0
                : when > UINT64_MAX / 1000 ? UINT64_MAX
                : when * 1000 / (uint64_t)clk_tck;
    c->expires_ms = (uint32_t)(ms > UINT32_MAX ? UINT32_MAX : ms);
    c->rqueue = (uint32_t)rxq;
    c->wqueue = (uint32_t)txq;
    if (state == PSO_TCP_LISTEN) { /* the file has no backlog, only a fastopen limit */
        c->wqueue = 0;
        c->flags |= PSO_CONN_WQUEUE_UNKNOWN;
    }
    /* Request sockets print their listener's uid; sock_diag reports 0 for them (but the
     * listener's uid for a full child socket, as this file does). */
    c->uid = request ? 0 : (uint32_t)uid;
    c->inode = (uint32_t)inode;
    return 0;
}

int pso_proc_parse(const char *text, size_t len, int family, const struct pso_sd_query *q,
                   struct pso_sd_sink *sink)
{
    if (sink == NULL)
        return -EINVAL;
    sink->bad_line = 0;
    if (text == NULL || q == NULL || (family != AF_INET && family != AF_INET6))
        return -EINVAL;
    long clk_tck = sysconf(_SC_CLK_TCK);
    if (clk_tck <= 0)
        clk_tck = 100; /* USER_HZ, which /proc reports in, is 100 on every Linux */
    const char *p = text;
    const char *end = text + len;
    int line = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) { /* the kernel ends every line: a partial one is a truncated file */
            sink->bad_line = line + 1;
            return -EBADMSG;
        }
        line++;
        if (line == 1) {
            /* The header: "  sl  local_address rem_address   st tx_queue ..." */
            const char *h = skip_spaces(p, nl);
            if (nl - h < 2 || h[0] != 's' || h[1] != 'l') {
                sink->bad_line = line;
                return -EBADMSG;
            }
        } else {
            int rc = proc_line(p, nl, family, q, sink, clk_tck);
            if (rc) {
                sink->bad_line = line;
                return rc;
            }
        }
        p = nl + 1;
    }
    if (line == 0) {
        sink->bad_line = 1;
        return -EBADMSG;
    }
    return PSO_SD_DONE;
}
