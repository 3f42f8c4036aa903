/* tcpstate.h: the kernel's TCP state numbers (include/net/tcp_states.h) and sock_diag's timer
 * kinds (idiag_timer), once for every C unit; Python's TcpState is checked against them at
 * import. Included as C and read as the cffi cdef, so: integer #defines only. */

#define PSO_TCP_ESTABLISHED 1
#define PSO_TCP_SYN_SENT 2
#define PSO_TCP_SYN_RECV 3
#define PSO_TCP_FIN_WAIT1 4
#define PSO_TCP_FIN_WAIT2 5
#define PSO_TCP_TIME_WAIT 6
#define PSO_TCP_CLOSE 7
#define PSO_TCP_CLOSE_WAIT 8
#define PSO_TCP_LAST_ACK 9
#define PSO_TCP_LISTEN 10
#define PSO_TCP_CLOSING 11
#define PSO_TCP_NEW_SYN_RECV 12
#define PSO_TCP_BOUND_INACTIVE 13

/* idiag_timer, and the "tr" column of /proc/net/tcp*. */
#define PSO_TIMER_NONE 0
#define PSO_TIMER_RETRANSMIT 1
#define PSO_TIMER_KEEPALIVE 2
#define PSO_TIMER_TIME_WAIT 3
#define PSO_TIMER_ZERO_WINDOW 4
