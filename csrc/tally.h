/* tally.h: what a metrics scrape needs from one kept sock_diag dump, counted in C.
 * Included as C and read as the cffi cdef: declarations and integer #defines only.
 *
 * pso_tally() walks the records of a pso_sd_sink filled with keep=1 once: it counts sockets
 * per state on a few chosen local ports, counts the records each pick (a predicate computed
 * from the diagnosis rules in Python) matches, groups the sockets on ephemeral local ports by
 * (local address, destination) (TIME_WAIT and ports in use), and then keeps in the sink only
 * the records a rule looks at one by one, so Python decodes those and nothing else. */

#define PSO_TALLY_MAX_PORTS 64

#define PSO_TALLY_MAX_PICKS 8
#define PSO_TALLY_MAX_INFO 4
#define PSO_TALLY_ANY_TIMER 255

/* A predicate over one record, made from a rule's pick in Python (host/look.py tally_picks:
 * never written here). It matches a record in one of states (a bit per state), with timer
 * pending (PSO_TALLY_ANY_TIMER: any), at least retrans_min retransmits, and, when ninfo > 0,
 * each tcp_info u32 at the byte offsets info_off[0..ninfo) at least info_min (a record whose
 * tcp_info is shorter does not match; the offsets come from the Python field table). keep: 1
 * keeps the matching records in the sink, 0 only counts them. */
struct pso_tally_pick {
    uint32_t states;
    uint32_t timer;
    uint32_t retrans_min;
    uint32_t info_min;
    uint32_t info_off[PSO_TALLY_MAX_INFO];
    uint32_t ninfo;
    uint32_t keep;
};

/* What to count. ports: local ports counted per state (nports of them). keep_states: states
 * whose every record stays in the sink. picks: predicates counted (and kept, where asked).
 * Records on local ports eph_low..eph_high are grouped per destination (eph_low 0: no
 * grouping); listening: a bit per local port that has a listener (port p: byte p / 8, bit
 * p % 8), whose sockets are a server's, not outgoing. */
struct pso_tally_spec {
    uint16_t ports[PSO_TALLY_MAX_PORTS];
    uint8_t listening[8192];
    uint32_t nports;
    uint32_t keep_states;
    struct pso_tally_pick picks[PSO_TALLY_MAX_PICKS];
    uint32_t npicks;
    uint32_t eph_low;
    uint32_t eph_high;
};

/* One destination: the sockets on ephemeral local ports from one local address to one remote
 * endpoint. Addresses as in pso_conn (network order, IPv4 in the first 4 bytes); sport is one
 * member's local port. time_wait: its TIME_WAIT sockets; in_use: its sockets holding a port
 * for an outgoing connection (any state but SYN_RECV and CLOSE, not on a listener's port: each
 * holds one of the range's ports towards that destination); time_wait_out: those of in_use in
 * TIME_WAIT. */
struct pso_dest_group {
    uint8_t src[16];
    uint8_t dst[16];
    uint32_t time_wait;
    uint32_t in_use;
    uint32_t time_wait_out;
    uint16_t dport;
    uint16_t sport;
    uint8_t family;
    uint8_t pad[3];
};

struct pso_tally {
    uint64_t port_counts[PSO_TALLY_MAX_PORTS][PSO_SD_NSTATES];  /* [index into spec.ports][state] */
    uint64_t established;
    uint64_t picked[PSO_TALLY_MAX_PICKS];  /* records each pick matched */
    uint64_t tw_grouped;           /* TIME_WAIT sockets that went into groups */
    struct pso_dest_group *groups; /* most TIME_WAIT first; free with pso_tally_free */
    size_t ngroups;
};

/* Tallies sink (kept records) by spec into out (zero it first, or it is overwritten), then
 * compacts sink->conns to the records spec keeps, and the tcp_info blob to their payloads
 * (info_off updated; the rest of the blob given back). Returns 0 or
 * -errno (-EINVAL for a bad spec or a sink without records, -ENOMEM). */
int pso_tally(struct pso_sd_sink *sink, const struct pso_tally_spec *spec,
              struct pso_tally *out);
void pso_tally_free(struct pso_tally *t);
