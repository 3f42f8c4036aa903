/* tally.c: per-scrape counts over one kept sock_diag dump (see tally.h). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sockdiag.h"
#include "tally.h"
#include "tcpstate.h"

void pso_tally_free(struct pso_tally *t)
{
    if (t == NULL)
        return;
    free(t->groups);
    t->groups = NULL;
    t->ngroups = 0;
}

/* Reads a u32 of a tcp_info payload at off; 0 when the payload is shorter (not received). */
static int info_u32(const struct pso_sd_sink *sink, const struct pso_conn *c, uint32_t off,
                    uint32_t *out)
{
    if (c->info_len == 0 || (size_t)off + 4 > c->info_len ||
        (size_t)c->info_off + c->info_len > sink->info_len)
        return 0;
    memcpy(out, sink->info + c->info_off + off, 4);
    return 1;
}

/* Whether record c matches pick p (see struct pso_tally_pick). */
static int matches(const struct pso_sd_sink *sink, const struct pso_conn *c,
                   const struct pso_tally_pick *p)
{
    if (c->state >= 32 || !((p->states >> c->state) & 1))
        return 0;
    if (p->timer != PSO_TALLY_ANY_TIMER && c->timer != p->timer)
        return 0;
    if (c->retrans < p->retrans_min)
        return 0;
    for (uint32_t k = 0; k < p->ninfo; k++) {
        uint32_t v;
        if (!info_u32(sink, c, p->info_off[k], &v) || v < p->info_min)
            return 0;
    }
    return 1;
}

/* Group key order: family, src, dst, dport. */
static int key_cmp(const struct pso_conn *a, const struct pso_conn *b)
{
    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    int r = memcmp(a->src, b->src, 16);
    if (r)
        return r;
    r = memcmp(a->dst, b->dst, 16);
    if (r)
        return r;
    if (a->dport != b->dport)
        return a->dport < b->dport ? -1 : 1;
    return 0;
}

static int ptr_cmp(const void *x, const void *y)
{
    return key_cmp(*(const struct pso_conn *const *)x, *(const struct pso_conn *const *)y);
}

static int group_cmp(const void *x, const void *y)
{
    const struct pso_dest_group *a = x, *b = y;
    if (a->time_wait != b->time_wait)
        return a->time_wait > b->time_wait ? -1 : 1;  /* most TIME_WAIT first */
    if (a->in_use != b->in_use)
        return a->in_use > b->in_use ? -1 : 1;
    return 0;
}

/* Whether c is on an ephemeral local port (every such TIME_WAIT socket is grouped). */
static int in_range(const struct pso_conn *c, const struct pso_tally_spec *spec)
{
    return c->sport >= spec->eph_low && c->sport <= spec->eph_high;
}

/* Whether c holds its local port for an outgoing connection: not a listener's port, not a
 * request socket or a closed one. */
static int outgoing(const struct pso_conn *c, const struct pso_tally_spec *spec)
{
    if (c->state == PSO_TCP_SYN_RECV || c->state == PSO_TCP_CLOSE || c->state == PSO_TCP_LISTEN ||
        c->state == PSO_TCP_NEW_SYN_RECV)
        return 0;
    return !((spec->listening[c->sport >> 3] >> (c->sport & 7)) & 1);
}

static int grouped(const struct pso_conn *c, const struct pso_tally_spec *spec)
{
    return in_range(c, spec) && (c->state == PSO_TCP_TIME_WAIT || outgoing(c, spec));
}

static int group_destinations(const struct pso_sd_sink *sink,
                              const struct pso_tally_spec *spec, struct pso_tally *out)
{
    size_t n = 0;
    for (size_t i = 0; i < sink->nconns; i++)
        n += grouped(&sink->conns[i], spec);
    if (n == 0)
        return 0;
    const struct pso_conn **members = malloc(n * sizeof *members);
    if (members == NULL)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < sink->nconns; i++)
        if (grouped(&sink->conns[i], spec))
            members[k++] = &sink->conns[i];
    qsort(members, n, sizeof *members, ptr_cmp);
    size_t ngroups = 1;
    for (size_t i = 1; i < n; i++)
        ngroups += key_cmp(members[i - 1], members[i]) != 0;
    struct pso_dest_group *groups = calloc(ngroups, sizeof *groups);
    if (groups == NULL) {
        free(members);
        return -ENOMEM;
    }
    size_t g = 0;
    for (size_t i = 0; i < n; i++) {
        const struct pso_conn *c = members[i];
        if (i == 0 || key_cmp(members[i - 1], c) != 0) {
            struct pso_dest_group *first = &groups[g++];
            memcpy(first->src, c->src, 16);
            memcpy(first->dst, c->dst, 16);
            first->dport = c->dport;
            first->sport = c->sport;
            first->family = c->family;
        }
        struct pso_dest_group *grp = &groups[g - 1];
        int mine = outgoing(c, spec);
        if (c->state == PSO_TCP_TIME_WAIT) {
            grp->time_wait++;
            out->tw_grouped++;
            grp->time_wait_out += (uint32_t)mine;
        }
        grp->in_use += (uint32_t)mine;
    }
    free(members);
    qsort(groups, ngroups, sizeof *groups, group_cmp);
    out->groups = groups;
    out->ngroups = ngroups;
    return 0;
}

/* Keeps in the sink's tcp_info blob only the payloads of the records left, moved to its front
 * in order (a record's payload never lies before an earlier record's), and gives the rest of
 * the blob back. At a million sockets the blob is 280 MB, and the few kept records' views
 * would otherwise hold all of it for as long as they live. */
static void compact_info(struct pso_sd_sink *sink)
{
    if (sink->info == NULL)
        return;
    size_t w = 0;
    for (size_t i = 0; i < sink->nconns; i++) {
        struct pso_conn *c = &sink->conns[i];
        if (c->info_len == 0)
            continue;
        if ((size_t)c->info_off < w || (size_t)c->info_off + c->info_len > sink->info_len) {
            c->info_len = 0; /* never from a dump: no payload rather than a wrong one */
            continue;
        }
        if (c->info_off != w)
            memmove(sink->info + w, sink->info + c->info_off, c->info_len);
        c->info_off = (uint32_t)w;
        w += c->info_len;
    }
    sink->info_len = w;
    if (w == 0) {
        free(sink->info);
        sink->info = NULL;
        sink->info_cap = 0;
        return;
    }
    uint8_t *shrunk = realloc(sink->info, w);
    if (shrunk != NULL) { /* else it keeps its size: still valid */
        sink->info = shrunk;
        sink->info_cap = w;
    }
}

int pso_tally(struct pso_sd_sink *sink, const struct pso_tally_spec *spec,
              struct pso_tally *out)
{
    if (sink == NULL || spec == NULL || out == NULL || !sink->keep ||
        spec->nports > PSO_TALLY_MAX_PORTS || spec->npicks > PSO_TALLY_MAX_PICKS ||
        spec->eph_low > spec->eph_high || spec->eph_high > 65535)
        return -EINVAL;
    for (uint32_t k = 0; k < spec->npicks; k++)
        if (spec->picks[k].ninfo > PSO_TALLY_MAX_INFO)
            return -EINVAL;
    memset(out, 0, sizeof *out);
    /* Groups first: they need every record on an ephemeral port, which the pass drops. */
    if (spec->eph_low > 0) {
        int rc = group_destinations(sink, spec, out);
        if (rc)
            return rc;
    }

    /* One pass: count, and keep what a rule reads socket by socket (the rest is counted). */
    size_t kept = 0;
    for (size_t i = 0; i < sink->nconns; i++) {
        const struct pso_conn *c = &sink->conns[i];
        unsigned state = c->state < PSO_SD_NSTATES ? c->state : 0;
        for (uint32_t p = 0; p < spec->nports; p++) {
            if (spec->ports[p] == c->sport) {
                out->port_counts[p][state]++;
                break;
            }
        }
        if (state == PSO_TCP_ESTABLISHED)
            out->established++;
        int keep = c->state < 32 && (spec->keep_states >> c->state) & 1;
        for (uint32_t k = 0; k < spec->npicks; k++) {
            if (matches(sink, c, &spec->picks[k])) {
                out->picked[k]++;
                keep |= spec->picks[k].keep != 0;
            }
        }
        if (keep) {
            if (kept != i)
                sink->conns[kept] = *c;
            kept++;
        }
    }
    sink->nconns = kept;
    compact_info(sink);
    return 0;
}
