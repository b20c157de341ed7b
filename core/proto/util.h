/* util.h - allocation that aborts on OOM, checked size arithmetic, and a
 * growable byte buffer. Everything else in core/ allocates through these. */
#ifndef KURIR_UTIL_H
#define KURIR_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xmemdup(const void *p, size_t n);   /* NUL-terminated copy of n bytes */

/* a + b, aborting on overflow (sizes come from our own counters) */
size_t size_add(size_t a, size_t b);
size_t size_mul(size_t a, size_t b);

/* Growable byte buffer. Data lives in [data + off, data + len). */
struct buf {
    char *data;
    size_t off;   /* bytes already consumed from the front */
    size_t len;   /* end of valid data */
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
void buf_consume(struct buf *b, size_t n);            /* drop n bytes from the front */
/* buf_reserve when the room at the end is short: compact or grow */
char *buf_reserve_slow(struct buf *b, size_t n);

/* The calls of every reply and log line (tens per message) are inline:
 * with room at the end, an append is a memcpy and an addition. */
static inline size_t buf_used(const struct buf *b)    /* len - off */
{
    return b->len - b->off;
}

static inline const char *buf_peek(const struct buf *b)   /* data + off */
{
    return b->data ? b->data + b->off : "";
}

static inline char *buf_reserve(struct buf *b, size_t n)   /* room for n more bytes at the end */
{
    if (b->cap - b->len >= n)
        return b->data + b->len;
    return buf_reserve_slow(b, n);
}

static inline void buf_commit(struct buf *b, size_t n)    /* n bytes were written at buf_reserve() */
{
    b->len += n;
}

static inline void buf_append(struct buf *b, const void *p, size_t n)
{
    if (!n)
        return;
    memcpy(buf_reserve(b, n), p, n);
    b->len += n;
}

static inline void buf_appends(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_append_uint(struct buf *b, unsigned long long v);   /* decimal, no printf */
void buf_append_int(struct buf *b, long long v);
void buf_compact(struct buf *b);                      /* move live bytes to the front */
void buf_shrink(struct buf *b, size_t keep_cap);      /* free memory of an idle buffer */

/* A few empty buffers kept for reuse by one thread (an event loop), so
 * that a buffer freed and soon needed again (a session's input between
 * wake-ups, a small message body) costs no malloc/free: at most
 * BUF_POOL_MAX buffers of `size` to 2 x `size` bytes, however many users. */
#define BUF_POOL_MAX 8
struct buf_pool {
    size_t size;
    int n;
    char *data[BUF_POOL_MAX];
};
void buf_pool_init(struct buf_pool *p, size_t size);
void buf_pool_free(struct buf_pool *p);
/* b holds no memory: give it a kept buffer, if any, as one of p->size
 * bytes (it may be up to twice that: the rest goes unused) */
void buf_pool_take(struct buf_pool *p, struct buf *b);
/* b is empty (buf_used 0): keep its memory when its capacity is from
 * p->size to twice that and p has room, else free it; b is left holding
 * nothing either way */
void buf_pool_give(struct buf_pool *p, struct buf *b);

/* ASCII case-insensitive compare of n bytes */
bool ascii_casecmp(const char *a, const char *b, size_t n);
bool ascii_caseeq(const char *a, size_t alen, const char *lit);

/* Write all n bytes to fd (blocking, or a file): 0, or -1 with errno.
 * EINTR is retried (up to 100 in a row); a write of 0 bytes is EIO. The
 * one copy for spool, Maildir, mbox, the queue store and the log. */
int write_all(int fd, const void *p, size_t n);

/* t as an RFC 5322 date in UTC, "Wed, 02 Dec 2026 13:20:54 +0000" (what
 * strftime's "%a, %d %b %Y %H:%M:%S +0000" gives, without the locale and
 * printf machinery: the Received header of every message). Writes 31
 * bytes and a NUL; returns 31. */
size_t date_rfc5322(time_t t, char out[32]);

/* Monotonic and wall-clock time in seconds. */
double time_mono(void);
double time_wall(void);

#endif
