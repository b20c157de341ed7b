/* dsn.h - delivery status notifications (RFC 3464): the multipart/report
 * message kurir sends to the envelope sender of a queued message. */
#ifndef KURIR_DSN_H
#define KURIR_DSN_H

#include <stdint.h>
#include "proto/queue_file.h"
#include "proto/util.h"

/* Build the DSN for the recipients of env that want one (failed, or
 * delivered with NOTIFY=SUCCESS) into out. fd/off: the original message
 * (fd < 0: left out); RET=FULL includes it whole (up to 10 MiB), anything
 * else its header section. */
void dsn_build(const struct qenv *env, int fd, uint64_t off, const char *hostname, const char *dsn_id,
               struct buf *out);

#endif
