/* queue_file.h - the on-disk form of a queued message (docs/queue.md): an
 * envelope header (sender, recipients with ESMTP parameters and routes)
 * followed by the message bytes, plus an append-only status log per
 * message. Pure: formatting and parsing only; the I/O is queue_store.c's. */
#ifndef KURIR_QUEUE_FILE_H
#define KURIR_QUEUE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "proto/util.h"

#define QUEUE_FILE_MAGIC "KURIR-QUEUE 1"

enum qstatus { QS_PENDING, QS_DEFERRED, QS_DELIVERED, QS_FAILED };

/* RFC 3461 NOTIFY; 0 means the parameter was absent (FAILURE and DELAY) */
#define QN_NEVER   0x01u
#define QN_SUCCESS 0x02u
#define QN_FAILURE 0x04u
#define QN_DELAY   0x08u

struct qrcpt {
    char *address;
    char *orcpt;            /* ORCPT value as given (addr-type;xtext) or NULL */
    unsigned notify;
    char *route;            /* "agent key=value ...", tokens encoded */
    enum qstatus status;
    int attempts;
    double next_try;        /* wall clock; 0 = now */
    char *diag;             /* last diagnostic text */
    char *dsn_code;         /* enhanced status of the last result, e.g. "5.1.1" */
    bool notified;          /* a DSN for the final status was sent */
    bool warned;            /* a delay warning (NOTIFY=DELAY) was sent */
    bool in_flight;         /* a delivery runs (memory only) */
    bool mbox_begun;        /* an mbox append started at mbox_off, mbox_len bytes */
    uint64_t mbox_off, mbox_len;
};

struct qenv {
    char id[24];
    double arrival;
    char *from;
    char *ret;              /* "FULL", "HDRS" or NULL */
    char *envid;
    char *client;
    char *helo;
    bool held;
    struct qrcpt *rcpts;
    int nrcpts;
    uint64_t body_off;      /* offset of the message bytes in the file; when
                             * nonzero before queue_file_format, written as a
                             * `body` line (a linked spool file) */
};

/* Append s as one token: "-" for empty, %XX for bytes <= 0x20, >= 0x7f,
 * '%' and '='; a lone "-" is written %2D. */
void queue_file_token(struct buf *b, const char *s, size_t n);
/* Decode a token into a malloc'ed NUL-terminated string (NULL for "-"). */
char *queue_file_untoken(const char *p, size_t n);
/* QN_* bits of a NOTIFY value ("NEVER" or a comma list). */
unsigned queue_file_notify(const char *p, size_t n);
/* The envelope header, ending with the blank line before the message. */
void queue_file_format(const struct qenv *e, struct buf *out);
/* Parse the envelope header at the start of p[0..n). 0 (body_off set) or
 * -1 with a reason in err. e is zeroed first; free with queue_file_free. */
int queue_file_parse(const char *p, size_t n, struct qenv *e, char *err, size_t cap);
/* Apply a status log (complete lines only; a torn last line is ignored). */
void queue_file_apply_status(struct qenv *e, const char *p, size_t n);
/* One status log line. idx < 0 names the whole message (hold/release). */
void queue_file_status_line(struct buf *b, int idx, const char *word, int attempts, double when,
                            const char *diag, const char *code);
/* The value of key in a route string (malloc'ed) or NULL. */
char *queue_file_route_get(const char *route, const char *key);
/* The agent name of a route string into out. */
void queue_file_route_agent(const char *route, char *out, size_t cap);
const char *queue_file_status_name(enum qstatus st, bool held);
void queue_file_free(struct qenv *e);

#endif
