/* tally.h: what a metrics scrape needs from one kept sock_diag dump, counted in C.
 * Included as C and read as the cffi cdef: declarations and integer #defines only.
 *
 * pso_tally() walks the records of a pso_sd_sink filled with keep=1 once: it counts sockets
 * per state on a few chosen local ports, counts ESTABLISHED sockets with the keepalive timer
 * armed and those idle without any timer, groups TIME_WAIT sockets on ephemeral local ports by
 * (local address, destination), and then keeps in the sink only the records a rule looks at
 * one by one, so Python decodes those and nothing else. */

#define PSO_TALLY_MAX_PORTS 64

/* What to count. ports: local ports counted per state (nports of them). keep_states: states
 * whose every record stays in the sink. ESTABLISHED records stay only when they retransmit
 * (timer 1 and retrans >= retrans_min) or are idle without a timer for at least idle_ms
 * (tcp_info last_data_recv and last_ack_recv, at the byte offsets given: the offsets come from
 * the Python field table, never from a C struct). TIME_WAIT records on local ports
 * eph_low..eph_high are grouped (eph_low 0: no grouping). */
struct pso_tally_spec {
    uint16_t ports[PSO_TALLY_MAX_PORTS];
    uint32_t nports;
    uint32_t keep_states;
    uint32_t retrans_min;
    uint32_t idle_ms;
    uint32_t off_last_data_recv;
    uint32_t off_last_ack_recv;
    uint32_t eph_low;
    uint32_t eph_high;
};

/* One TIME_WAIT group: sockets from one local address to one remote endpoint. Addresses as in
 * pso_conn (network order, IPv4 in the first 4 bytes); sport is one member's local port. */
struct pso_tw_group {
    uint8_t src[16];
    uint8_t dst[16];
    uint32_t count;
    uint16_t dport;
    uint16_t sport;
    uint8_t family;
    uint8_t pad[3];
};

struct pso_tally {
    uint64_t port_counts[PSO_TALLY_MAX_PORTS][PSO_SD_NSTATES];  /* [index into spec.ports][state] */
    uint64_t established;
    uint64_t keepalive;            /* ESTABLISHED with the keepalive timer pending */
    uint64_t idle_no_timer;        /* ESTABLISHED, no timer, idle >= idle_ms */
    uint64_t tw_grouped;           /* TIME_WAIT sockets that went into groups */
    struct pso_tw_group *groups;   /* largest first; free with pso_tally_free */
    size_t ngroups;
};

/* Tallies sink (kept records) by spec into out (zero it first, or it is overwritten), then
 * compacts sink->conns to the records spec keeps (info payloads stay valid). Returns 0 or
 * -errno (-EINVAL for a bad spec or a sink without records, -ENOMEM). */
int pso_tally(struct pso_sd_sink *sink, const struct pso_tally_spec *spec,
              struct pso_tally *out);
void pso_tally_free(struct pso_tally *t);
