/* sockdiag_records.c: what the decoder of a dump's records needs from C: the INET_DIAG_INFO
 * blob handed over without a copy, and the records' distinct addresses numbered. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sockdiag.h"
#include "sockdiag_records.h"

uint8_t *pso_sd_take_info(struct pso_sd_sink *sink, size_t *len)
{
    if (len == NULL)
        return NULL;
    *len = 0;
    if (sink == NULL || sink->info == NULL || sink->info_len == 0)
        return NULL;
    uint8_t *info = sink->info;
    size_t used = sink->info_len;
    /* The blob grew by doubling: give the unused tail back (a failed shrink keeps it all). */
    if (used < sink->info_cap) {
        uint8_t *shrunk = realloc(info, used);
        if (shrunk != NULL)
            info = shrunk;
    }
    sink->info = NULL;
    sink->info_len = sink->info_cap = 0;
    *len = used;
    return info;
}

void pso_sd_info_free(uint8_t *info)
{
    free(info);
}

/* A multiplicative mix of one key (family byte, 16 address bytes): two 8-byte loads, not a
 * loop over bytes (this runs twice per socket of a listing). */
static uint64_t addr_hash(const uint8_t *key)
{
    uint64_t a, b;
    memcpy(&a, key + 1, 8);
    memcpy(&b, key + 9, 8);
    uint64_t h = (a ^ ((uint64_t)key[0] << 56)) * 0x9E3779B97F4A7C15ULL;
    h ^= b * 0xC2B2AE3D27D4EB4FULL;
    return h ^ (h >> 29);
}

struct intern {
    uint32_t *slots; /* index + 1 into entries; 0: empty */
    size_t mask;
    uint8_t *entries;
    size_t n;
    size_t cap;
};

static int intern_grow_slots(struct intern *t)
{
    size_t size = (t->mask + 1) * 2;
    uint32_t *slots = calloc(size, sizeof *slots);
    if (slots == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < t->n; i++) {
        size_t at = (size_t)addr_hash(t->entries + i * PSO_SD_ADDR_SIZE) & (size - 1);
        while (slots[at] != 0)
            at = (at + 1) & (size - 1);
        slots[at] = (uint32_t)(i + 1);
    }
    free(t->slots);
    t->slots = slots;
    t->mask = size - 1;
    return 0;
}

/* The index of key in t, added when new; -ENOMEM. */
static long intern_one(struct intern *t, const uint8_t *key)
{
    size_t at = (size_t)addr_hash(key) & t->mask;
    while (t->slots[at] != 0) {
        uint32_t i = t->slots[at] - 1;
        if (memcmp(t->entries + (size_t)i * PSO_SD_ADDR_SIZE, key, PSO_SD_ADDR_SIZE) == 0)
            return i;
        at = (at + 1) & t->mask;
    }
    if (t->n >= UINT32_MAX - 1)
        return -ENOMEM;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        uint8_t *grown = realloc(t->entries, cap * PSO_SD_ADDR_SIZE);
        if (grown == NULL)
            return -ENOMEM;
        t->entries = grown;
        t->cap = cap;
    }
    memcpy(t->entries + t->n * PSO_SD_ADDR_SIZE, key, PSO_SD_ADDR_SIZE);
    t->slots[at] = (uint32_t)(t->n + 1);
    long index = (long)t->n++;
    /* Kept at most half full. */
    if (2 * t->n > t->mask + 1 && intern_grow_slots(t) != 0)
        return -ENOMEM;
    return index;
}

int pso_sd_intern_addresses(const struct pso_sd_sink *sink, uint32_t *idx,
                            struct pso_sd_addr_table *out, struct pso_sd_summary *sum)
{
    struct pso_sd_summary seen = {0};
    if (out == NULL)
        return -EFAULT;
    out->entries = NULL;
    out->n = 0;
    if (sink == NULL || (sink->nconns > 0 && (idx == NULL || sink->conns == NULL)))
        return -EINVAL;
    struct intern t = {.mask = 1023};
    t.slots = calloc(t.mask + 1, sizeof *t.slots);
    if (t.slots == NULL)
        return -ENOMEM;
    uint8_t key[PSO_SD_ADDR_SIZE];
    for (size_t i = 0; i < sink->nconns; i++) {
        const struct pso_conn *c = &sink->conns[i];
        key[0] = c->family;
        memcpy(key + 1, c->src, 16);
        long local = intern_one(&t, key);
        memcpy(key + 1, c->dst, 16);
        long remote = local < 0 ? local : intern_one(&t, key);
        if (remote < 0) {
            free(t.slots);
            free(t.entries);
            return (int)remote;
        }
        idx[2 * i] = (uint32_t)local;
        idx[2 * i + 1] = (uint32_t)remote;
        if (c->state < 32)
            seen.states |= (uint32_t)1 << c->state;
        else
            seen.states |= (uint32_t)1 << 31; /* no TcpState: Python refuses the listing */
        if (c->timer > seen.max_timer)
            seen.max_timer = c->timer;
        seen.flags |= c->flags;
        if (c->info_len != 0) {
            if (seen.info_len != 0 && seen.info_len != c->info_len)
                seen.info_lens_differ = 1;
            seen.info_len = c->info_len;
            seen.with_info++;
        }
    }
    free(t.slots);
    if (sum != NULL)
        *sum = seen;
    out->entries = t.entries;
    out->n = t.n;
    return 0;
}

void pso_sd_addr_table_free(struct pso_sd_addr_table *table)
{
    if (table == NULL)
        return;
    free(table->entries);
    table->entries = NULL;
    table->n = 0;
}

int pso_sd_column(const struct pso_sd_sink *sink, size_t first, size_t count, size_t offset,
                  size_t width, void *out)
{
    if (sink == NULL || (count > 0 && (out == NULL || sink->conns == NULL)) ||
        first > sink->nconns || count > sink->nconns - first ||
        (width != 1 && width != 2 && width != 4 && width != 8) ||
        offset > sizeof(struct pso_conn) || width > sizeof(struct pso_conn) - offset)
        return -EINVAL;
    const uint8_t *at = (const uint8_t *)(sink->conns + first) + offset;
    const size_t step = sizeof(struct pso_conn);
    /* One loop per width, so each copy is one load and one store. */
    switch (width) {
    case 1: {
        uint8_t *o = out;
        for (size_t i = 0; i < count; i++, at += step)
            o[i] = *at;
        break;
    }
    case 2: {
        uint16_t *o = out;
        for (size_t i = 0; i < count; i++, at += step)
            memcpy(&o[i], at, 2);
        break;
    }
    case 4: {
        uint32_t *o = out;
        for (size_t i = 0; i < count; i++, at += step)
            memcpy(&o[i], at, 4);
        break;
    }
    default: {
        uint64_t *o = out;
        for (size_t i = 0; i < count; i++, at += step)
            memcpy(&o[i], at, 8);
        break;
    }
    }
    return 0;
}

int pso_sd_idx_column(const uint32_t *idx, size_t n, size_t first, size_t count, int which,
                      uint32_t *out)
{
    if ((which != 0 && which != 1) || first > n || count > n - first ||
        (count > 0 && (idx == NULL || out == NULL)))
        return -EINVAL;
    const uint32_t *at = idx + 2 * first + which;
    for (size_t i = 0; i < count; i++)
        out[i] = at[2 * i];
    return 0;
}
