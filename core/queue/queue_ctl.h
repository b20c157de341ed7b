/* queue_ctl.h - the control socket of a running queue (queue.dir/control):
 * `kurir queue flush|hold|release|delete` send one line, get one line. */
#ifndef KURIR_QUEUE_CTL_H
#define KURIR_QUEUE_CTL_H

#include <stddef.h>

struct queue;

void queue_ctl_open(struct queue *q);
void queue_ctl_close(struct queue *q);
/* Client side: send "verb id" to the server of dir. Returns the server's
 * exit code (0, 1 unknown id), -1 when no server listens there. */
int queue_ctl_request(const char *dir, const char *verb, const char *id, char *reply, size_t cap);

#endif
