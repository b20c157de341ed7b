/* dsn.h - delivery status notifications (RFC 3464): the multipart/report
 * message kurir sends to the envelope sender of a queued message. */
#ifndef KURIR_DSN_H
#define KURIR_DSN_H

#include <stdbool.h>
#include <stdint.h>
#include "proto/queue_file.h"
#include "proto/util.h"

/* Does recipient r of env want a report: the final one (delay false:
 * failed unless NOTIFY leaves out FAILURE, delivered with NOTIFY=SUCCESS,
 * not reported yet) or a delay warning (deferred, not warned yet, NOTIFY
 * absent or with DELAY)? Never for NOTIFY=NEVER or a sender <>. */
bool dsn_wants(const struct qenv *env, const struct qrcpt *r, bool delay);
/* Build the DSN for the recipients of env that want one (dsn_wants) into
 * out. fd/off: the original message (fd < 0: left out); RET=FULL includes
 * it whole (up to 10 MiB), anything else its header section. delay: a
 * warning (Action: delayed, Will-Retry-Until: retry_until, headers only). */
void dsn_build(const struct qenv *env, int fd, uint64_t off, const char *hostname, const char *dsn_id,
               bool delay, double retry_until, struct buf *out);

#endif
