/* logfmt.h - one line per event: "time=... level=... session=... event=... k=v".
 * Values with spaces, quotes, '=' or non-printable bytes are quoted and
 * escaped (\" \\ \n \r \t \xNN), so client bytes can never forge a field or
 * a line. Pure: formats into a struct buf; logfmt_emit() does the one write. */
#ifndef KURIR_LOGFMT_H
#define KURIR_LOGFMT_H

#include <stddef.h>
#include "proto/util.h"

/* Start a line: time (RFC 3339 UTC, ms), level, session id (omitted when
 * NULL), event. */
void logfmt_begin(struct buf *b, const char *level, const char *session, const char *event);
void logfmt_str(struct buf *b, const char *key, const char *val);               /* NUL-terminated */
void logfmt_mem(struct buf *b, const char *key, const char *val, size_t n);     /* any bytes */
void logfmt_int(struct buf *b, const char *key, long long v);
void logfmt_dbl(struct buf *b, const char *key, double v);                      /* %.3f */
/* Escape a value (quoting when needed) onto b. */
void logfmt_value(struct buf *b, const char *val, size_t n);
/* Append "\n", write the line to fd with one write(2), reset b. */
void logfmt_emit(struct buf *b, int fd);

#endif
