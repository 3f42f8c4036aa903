/* sockdiag_records.c: a dump's INET_DIAG_INFO blob handed over to its decoder (no copy). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

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
