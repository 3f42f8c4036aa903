/* sockdiag_records.h: handing a dump's records to Python without a copy. Included as C and read
 * as the cffi cdef (after sockdiag.h, whose struct pso_sd_sink it uses), so: declarations only,
 * no include guards, no other preprocessor. */

/* Takes the sink's INET_DIAG_INFO blob away from it: returns the blob (its spare capacity
 * given back to the allocator) and its length in *len, and leaves the sink without one, so
 * pso_sd_sink_free no longer frees it. The records' info_off / info_len still point into it.
 * Returns NULL with *len 0 when the sink holds no blob (or len is NULL). The caller frees the
 * blob with pso_sd_info_free, once: Python ties that to the life of the TcpInfo views that
 * read it, so a listing's tcp_info bytes exist once, not once in C and again in Python. */
uint8_t *pso_sd_take_info(struct pso_sd_sink *sink, size_t *len);

/* Frees a blob from pso_sd_take_info (NULL is fine). */
void pso_sd_info_free(uint8_t *info);
