/* util.c - allocation wrappers, checked sizes, growable buffers. Owns no
 * state; every buffer belongs to whoever embeds the struct buf. */
#include "proto/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
    fprintf(stderr, "kurir: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xmemdup(s, strlen(s));
}

char *xmemdup(const void *p, size_t n)
{
    char *q = xmalloc(size_add(n, 1));
    if (n)
        memcpy(q, p, n);
    q[n] = '\0';
    return q;
}

size_t size_add(size_t a, size_t b)
{
    if (a > SIZE_MAX - b) {
        fprintf(stderr, "kurir: size overflow\n");
        abort();
    }
    return a + b;
}

size_t size_mul(size_t a, size_t b)
{
    if (b && a > SIZE_MAX / b) {
        fprintf(stderr, "kurir: size overflow\n");
        abort();
    }
    return a * b;
}

void buf_init(struct buf *b)
{
    memset(b, 0, sizeof(*b));
}

void buf_free(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reset(struct buf *b)
{
    b->off = b->len = 0;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= buf_used(b)) {
        b->off = b->len = 0;
        return;
    }
    b->off += n;
}

void buf_compact(struct buf *b)
{
    if (b->off == 0)
        return;
    size_t used = buf_used(b);
    if (used)
        memmove(b->data, b->data + b->off, used);
    b->off = 0;
    b->len = used;
}

char *buf_reserve_slow(struct buf *b, size_t n)
{
    /* Reuse consumed space at the front before growing. */
    if (b->off && b->cap - buf_used(b) >= n) {
        buf_compact(b);
        return b->data + b->len;
    }
    size_t need = size_add(buf_used(b), n);
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = size_mul(cap, 2);
    buf_compact(b);
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
    return b->data + b->len;
}

/* One formatting pass in the common case: into the free space (at least
 * 128 bytes), a second one only when that was too small. */
void buf_printf(struct buf *b, const char *fmt, ...)
{
    char *p = buf_reserve(b, 128);
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p, room, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    if ((size_t)n >= room) {
        p = buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(p, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void buf_append_uint(struct buf *b, unsigned long long v)
{
    char tmp[20];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_append(b, tmp + i, sizeof(tmp) - i);
}

void buf_append_int(struct buf *b, long long v)
{
    if (v < 0) {
        buf_append(b, "-", 1);
        buf_append_uint(b, 0ull - (unsigned long long)v);
    } else {
        buf_append_uint(b, (unsigned long long)v);
    }
}

void buf_shrink(struct buf *b, size_t keep_cap)
{
    if (buf_used(b) == 0 && b->cap > keep_cap) {
        free(b->data);
        buf_init(b);
    }
}

void buf_pool_init(struct buf_pool *p, size_t size)
{
    p->size = size;
    p->n = 0;
}

void buf_pool_free(struct buf_pool *p)
{
    while (p->n > 0)
        free(p->data[--p->n]);
}

void buf_pool_take(struct buf_pool *p, struct buf *b)
{
    if (b->cap == 0 && p->n > 0) {
        buf_init(b);
        b->data = p->data[--p->n];
        b->cap = p->size;
    }
}

void buf_pool_give(struct buf_pool *p, struct buf *b)
{
    if (b->cap >= p->size && b->cap / 2 <= p->size && p->n < BUF_POOL_MAX) {
        p->data[p->n++] = b->data;
    } else {
        free(b->data);
    }
    buf_init(b);
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

bool ascii_casecmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

bool ascii_caseeq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && ascii_casecmp(a, lit, n);
}

double time_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double time_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    int eintr = 0;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR && ++eintr < 100)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        eintr = 0;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

size_t date_rfc5322(time_t t, char out[32])
{
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    /* every message of a second has the same date: gmtime_r (and its
     * time-zone lock) once per second and thread */
    static _Thread_local struct {
        bool ok;
        time_t t;
        char s[32];
    } last;
    if (last.ok && last.t == t) {
        memcpy(out, last.s, sizeof(last.s));
        return 31;
    }
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        memset(&tm, 0, sizeof(tm));
    unsigned year = (unsigned)(tm.tm_year + 1900) % 10000;
    unsigned wd = (unsigned)tm.tm_wday % 7, mon = (unsigned)tm.tm_mon % 12;
    char *p = out;
    memcpy(p, days + 3 * wd, 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    *p++ = (char)('0' + tm.tm_mday / 10);
    *p++ = (char)('0' + tm.tm_mday % 10);
    *p++ = ' ';
    memcpy(p, months + 3 * mon, 3);
    p += 3;
    *p++ = ' ';
    for (unsigned d = 1000; d; d /= 10)
        *p++ = (char)('0' + year / d % 10);
    int hms[3] = {tm.tm_hour, tm.tm_min, tm.tm_sec};
    for (int i = 0; i < 3; i++) {
        *p++ = i ? ':' : ' ';
        *p++ = (char)('0' + hms[i] / 10);
        *p++ = (char)('0' + hms[i] % 10);
    }
    memcpy(p, " +0000", 7);   /* with the NUL */
    memcpy(last.s, out, sizeof(last.s));
    last.t = t;
    last.ok = true;
    return (size_t)(p + 6 - out);
}
