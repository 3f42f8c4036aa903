/* sockdiag_records.h: a dump's records handed to Python's decoder (host/records.py).
 * Included as C and read as the cffi cdef (after sockdiag.h, whose struct pso_sd_sink it
 * uses), so: declarations and integer #defines only, no include guards, no other
 * preprocessor. */

/* Takes the sink's INET_DIAG_INFO blob away from it: returns the blob (its spare capacity
 * given back to the allocator) and its length in *len, and leaves the sink without one, so
 * pso_sd_sink_free no longer frees it. The records' info_off / info_len still point into it.
 * Returns NULL with *len 0 when the sink holds no blob (or len is NULL). The caller frees the
 * blob with pso_sd_info_free, once: Python ties that to the life of the TcpInfo views that
 * read it, so a listing's tcp_info bytes exist once, not once in C and again in Python. */
uint8_t *pso_sd_take_info(struct pso_sd_sink *sink, size_t *len);

/* Frees a blob from pso_sd_take_info (NULL is fine). */
void pso_sd_info_free(uint8_t *info);

/* The distinct addresses of a sink's records: n entries of PSO_SD_ADDR_SIZE bytes each (the
 * family byte, then the 16 address bytes as the record holds them). Owned by C; free with
 * pso_sd_addr_table_free. */
#define PSO_SD_ADDR_SIZE 17
struct pso_sd_addr_table {
    uint8_t *entries;
    size_t n;
};

/* What the decoder checks about every record, gathered in the same pass (so Python reads no
 * column just to check it): states, bit s set when some record has state s; max_timer, the
 * largest timer; flags, every record's flags OR-ed; info_len, the nonzero info_len of the
 * records (0: none has tcp_info); info_lens_differ, 1 when nonzero info_len values differ;
 * with_info, how many records have tcp_info. */
struct pso_sd_summary {
    uint32_t states;
    uint8_t max_timer;
    uint8_t flags;
    uint16_t info_len;
    int info_lens_differ;
    size_t with_info;
};

/* Numbers the distinct (family, address) pairs of the sink's records, in order of first
 * appearance: idx[2 * i] is record i's local address and idx[2 * i + 1] its remote one, as
 * indexes into out->entries (idx must hold 2 * sink->nconns). So Python converts each
 * distinct address to a string once, and a listing shares one string per address. Fills sum
 * (may be NULL) in the same pass. Returns 0 or -ENOMEM / -EINVAL / -EFAULT (out->entries then
 * NULL). */
int pso_sd_intern_addresses(const struct pso_sd_sink *sink, uint32_t *idx,
                            struct pso_sd_addr_table *out, struct pso_sd_summary *sum);

/* Frees what pso_sd_intern_addresses allocated (the struct itself is the caller's). */
void pso_sd_addr_table_free(struct pso_sd_addr_table *table);

/* Copies one field of records [first, first + count) of the sink into out, one after another
 * (a column: what Python iterates as an array, where a strided view of the records costs
 * three times as much per element). offset and width name the field in struct pso_conn
 * (width 1, 2, 4 or 8; the field must lie inside the record); out holds count * width bytes.
 * Returns 0, or -EINVAL for a bad field or a range past the sink's records. */
int pso_sd_column(const struct pso_sd_sink *sink, size_t first, size_t count, size_t offset,
                  size_t width, void *out);

/* pso_sd_column for the address numbers of pso_sd_intern_addresses: idx holds 2 * n entries
 * (local, remote per record); copies entries [first, first + count) of the locals (which 0)
 * or the remotes (which 1) into out (count uint32). Returns 0 or -EINVAL. */
int pso_sd_idx_column(const uint32_t *idx, size_t n, size_t first, size_t count, int which,
                      uint32_t *out);
