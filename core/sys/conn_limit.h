/* conn_limit.h - connection counts shared by every worker of one master,
 * so that limits.connections and limits.connections_per_ip hold across
 * workers. Each worker process owns one slot of counts; the master clears
 * the slot of a worker that died, which forgets its connections. */
#ifndef KURIR_CONN_LIMIT_H
#define KURIR_CONN_LIMIT_H

struct conn_limit;

/* slots: processes that may hold connections at once; capacity: distinct
 * client IPs one slot can track (rounded up to a power of two). */
struct conn_limit *conn_limit_new(int slots, int capacity);
void conn_limit_free(struct conn_limit *cl);
/* Count one connection from ip in slot unless the total reaches
 * max_total or ip's count reaches max_per_ip. 0 taken; -1 over a limit
 * (or the slot's IP table is full). */
int conn_limit_take(struct conn_limit *cl, int slot, const char *ip, int max_total, int max_per_ip);
void conn_limit_release(struct conn_limit *cl, int slot, const char *ip);
void conn_limit_clear(struct conn_limit *cl, int slot);
int conn_limit_slots(const struct conn_limit *cl);

#endif
