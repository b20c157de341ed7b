/* logfmt.c - builds one logfmt line per event in a caller's struct buf.
 * Every value goes through logfmt_value(), which quotes and escapes
 * anything that could start a new field or a new line: client bytes are
 * logged faithfully but can never forge either. The server queues finished
 * lines and writes them once per loop iteration (worker_log_end); only
 * lines made before the loop runs (kurir.log while the script loads) go
 * out through logfmt_emit(), one write(2) each. Owns no state but the
 * last second's formatted time (per thread). */
#include "proto/logfmt.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char hexdig[] = "0123456789abcdef";

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF) starting at s[0] >= 0x80, or 0. C1 control
 * characters (U+0080..U+009F) count as not well-formed: like C0 controls
 * they are escaped byte by byte. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;   /* range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        if (c == 0xc2)
            lo = 0xa0;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* What each byte needs in a value: 0 nothing (bare), Q quotes, E quotes
 * and an escape, U quotes and a UTF-8 check (escaped when not well-formed) */
enum { Q = 1, E = 3, U = 5 };
static const unsigned char byte_class[256] = {
    E, E, E, E, E, E, E, E, E, E, E, E, E, E, E, E,
    E, E, E, E, E, E, E, E, E, E, E, E, E, E, E, E,
    Q, 0, E, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, Q, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, E, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, E,
    U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,
    U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,
    U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,
    U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,
    U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,
    U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,
    U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,
    U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,
};

/* the classes of all bytes of val, or-ed */
static unsigned classes(const char *val, size_t n)
{
    unsigned acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= byte_class[(unsigned char)val[i]];
    return acc;
}

void logfmt_value(struct buf *b, const char *val, size_t n)
{
    if (!val || n == 0) {
        buf_append(b, "\"\"", 2);
        return;
    }
    unsigned acc = classes(val, n);
    if (acc == 0) {
        buf_append(b, val, n);
        return;
    }
    if (acc == Q) {   /* spaces or '=': quoted, nothing to escape */
        char *p = buf_reserve(b, n + 2);
        p[0] = '"';
        memcpy(p + 1, val, n);
        p[n + 1] = '"';
        buf_commit(b, n + 2);
        return;
    }
    const unsigned char *s = (const unsigned char *)val;
    buf_append(b, "\"", 1);
    size_t i = 0, run = 0;   /* s[run..i) is pending verbatim output */
    while (i < n) {
        unsigned char c = s[i];
        unsigned char k = byte_class[c];
        if (k <= Q) {
            i++;
            continue;
        }
        if (k == U) {
            size_t u = utf8_len(s + i, n - i);
            if (u) {
                i += u;
                continue;
            }
        }
        buf_append(b, s + run, i - run);
        char esc[4] = { '\\', 0, 0, 0 };
        size_t elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'x';
            esc[2] = hexdig[c >> 4];
            esc[3] = hexdig[c & 15];
            elen = 4;
            break;
        }
        buf_append(b, esc, elen);
        i++;
        run = i;
    }
    buf_append(b, s + run, n - run);
    buf_append(b, "\"", 1);
}

/* Keys come from our code and from scripts (s:log); anything outside
 * [A-Za-z0-9_.-] becomes '_' so a key cannot forge a field either. */
static void append_key(struct buf *b, const char *key)
{
    size_t n = key ? strlen(key) : 0;
    char *p = buf_reserve(b, n + 3);
    size_t j = 0;
    p[j++] = ' ';
    if (n == 0)
        p[j++] = '_';
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        p[j++] = ok ? c : '_';
    }
    p[j++] = '=';
    buf_commit(b, j);
}

/* n decimal digits of v (zero-padded, the last n if v is longer) at p */
static void put_digits(char *p, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

void logfmt_begin(struct buf *b, const char *level, const char *session, const char *event)
{
    /* every line starts here: digits by hand, not through printf; the
     * broken-down time is remembered for the second it belongs to (per
     * thread), so most lines skip gmtime_r and its time-zone lock */
    static _Thread_local time_t last_sec = (time_t)-1;
    static _Thread_local char last[29];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != last_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        int year = tm.tm_year + 1900;
        if (year < 0 || year > 9999)
            year = 0;
        memcpy(last, "time=0000-00-00T00:00:00.000Z", sizeof(last));
        put_digits(last + 5, (unsigned)year, 4);
        put_digits(last + 10, (unsigned)tm.tm_mon + 1, 2);
        put_digits(last + 13, (unsigned)tm.tm_mday, 2);
        put_digits(last + 16, (unsigned)tm.tm_hour, 2);
        put_digits(last + 19, (unsigned)tm.tm_min, 2);
        put_digits(last + 22, (unsigned)tm.tm_sec, 2);
        last_sec = ts.tv_sec;
    }
    char *t = buf_reserve(b, sizeof(last));
    memcpy(t, last, sizeof(last));
    put_digits(t + 25, (unsigned)(ts.tv_nsec / 1000000L), 3);
    buf_commit(b, sizeof(last));
    logfmt_str(b, "level", level);
    if (session)
        logfmt_str(b, "session", session);
    logfmt_str(b, "event", event);
}

void logfmt_str(struct buf *b, const char *key, const char *val)
{
    logfmt_mem(b, key, val, val ? strlen(val) : 0);
}

void logfmt_mem(struct buf *b, const char *key, const char *val, size_t n)
{
    append_key(b, key);
    logfmt_value(b, val, n);
}

void logfmt_int(struct buf *b, const char *key, long long v)
{
    append_key(b, key);
    buf_append_int(b, v);
}

void logfmt_dbl(struct buf *b, const char *key, double v)
{
    append_key(b, key);
    buf_printf(b, "%.3f", v);
}

void logfmt_emit(struct buf *b, int fd)
{
    buf_append(b, "\n", 1);
    /* One write: a line is appended atomically or not at all (O_APPEND
     * files, pipes up to PIPE_BUF). Bounded retries on EINTR only. */
    for (int tries = 0; tries < 100; tries++) {
        ssize_t w = write(fd, buf_peek(b), buf_used(b));
        if (w >= 0 || errno != EINTR)
            break;
    }
    buf_reset(b);
}
