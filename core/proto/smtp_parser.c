/* smtp_parser.c - SMTP input framing: command lines, DATA with
 * dot-unstuffing, BDAT octet counting.
 *
 * Owns the session's input buffer (struct buf). Bytes are consumed from the
 * front; events point into the buffer and are invalidated by the next call.
 * Only CRLF frames anything: a bare CR or LF is an ordinary byte, so no
 * "\n.\n"-style terminator can smuggle a second message past us.
 *
 * Uses util.h (struct buf). No I/O, no allocation per event. */
#include "proto/smtp_parser.h"

#include <string.h>

/* data_state: where the front of the buffer sits in the DATA stream. */
enum {
    DATA_LINE_START = 0,  /* just after a CRLF (or the DATA command's CRLF) */
    DATA_MID = 1,         /* inside a line; the byte before the front is not CR */
};

#define PARSER_MIN_LINE 2  /* an empty line needs its CRLF */

void smtp_parser_init(struct smtp_parser *p, size_t max_line)
{
    memset(p, 0, sizeof(*p));
    buf_init(&p->in);
    p->mode = SMTP_MODE_COMMAND;
    p->max_line = max_line < PARSER_MIN_LINE ? PARSER_MIN_LINE : max_line;
    p->data_state = DATA_LINE_START;
}

void smtp_parser_free(struct smtp_parser *p)
{
    buf_free(&p->in);
}

char *smtp_parser_reserve(struct smtp_parser *p, size_t n)
{
    return buf_reserve(&p->in, n);
}

void smtp_parser_commit(struct smtp_parser *p, size_t n)
{
    buf_commit(&p->in, n);
}

void smtp_parser_feed(struct smtp_parser *p, const void *bytes, size_t n)
{
    buf_append(&p->in, bytes, n);
}

/* Index of the CR of the first CRLF whose LF is at or after `from`, or
 * SIZE_MAX. A CR left at the end of an earlier search is still buffered, so
 * a CRLF split across reads is found when its LF arrives. */
static size_t find_crlf(const char *s, size_t n, size_t from)
{
    while (from < n) {
        const char *lf = memchr(s + from, '\n', n - from);
        if (!lf)
            return SIZE_MAX;
        size_t j = (size_t)(lf - s);
        if (j > 0 && s[j - 1] == '\r')
            return j - 1;
        from = j + 1;
    }
    return SIZE_MAX;
}

static enum smtp_event_type emit(struct smtp_event *ev, enum smtp_event_type type,
                                 const char *ptr, size_t len)
{
    ev->type = type;
    ev->ptr = ptr;
    ev->len = len;
    return type;
}

/* Over-long line: drop what we have but keep a trailing CR, which may be
 * the first half of the CRLF that ends the line. */
static void skip_buffered(struct smtp_parser *p, const char *s, size_t n)
{
    size_t drop = (n && s[n - 1] == '\r') ? n - 1 : n;
    p->skipped = size_add(p->skipped, drop);
    buf_consume(&p->in, drop);
    p->scan = 0;
}

static enum smtp_event_type next_command(struct smtp_parser *p, struct smtp_event *ev)
{
    const char *s = buf_peek(&p->in);
    size_t n = buf_used(&p->in);

    if (p->skipping) {
        size_t i = find_crlf(s, n, 0);
        if (i == SIZE_MAX) {
            skip_buffered(p, s, n);
            return SMTP_EV_NONE;
        }
        size_t total = size_add(p->skipped, i);
        buf_consume(&p->in, i + 2);
        p->skipping = 0;
        p->skipped = 0;
        p->scan = 0;
        return emit(ev, SMTP_EV_LINE_TOO_LONG, NULL, total);
    }

    size_t i = find_crlf(s, n, p->scan);
    if (i != SIZE_MAX) {
        p->scan = 0;
        buf_consume(&p->in, i + 2);
        if (i + 2 > p->max_line)
            return emit(ev, SMTP_EV_LINE_TOO_LONG, NULL, i);
        return emit(ev, SMTP_EV_COMMAND, s, i);
    }
    p->scan = n;
    if (n >= p->max_line) {
        /* No CRLF within the limit: whatever ends this line, it is too long. */
        p->skipping = 1;
        p->skipped = 0;
        skip_buffered(p, s, n);
    }
    return SMTP_EV_NONE;
}

static enum smtp_event_type next_data(struct smtp_parser *p, struct smtp_event *ev)
{
    const char *s = buf_peek(&p->in);
    size_t n = buf_used(&p->in);

    if (p->data_state == DATA_LINE_START) {
        if (n == 0)
            return SMTP_EV_NONE;
        if (s[0] == '.') {
            /* Keep back "." and ".\r" until we know what follows. */
            if (n < 2 || (s[1] == '\r' && n < 3))
                return SMTP_EV_NONE;
            if (s[1] == '\r' && s[2] == '\n') {
                buf_consume(&p->in, 3);
                p->mode = SMTP_MODE_COMMAND;
                p->data_state = DATA_LINE_START;
                p->scan = 0;
                return emit(ev, SMTP_EV_DATA_END, NULL, 0);
            }
            /* Stuffed dot (RFC 5321 4.5.2): drop it, keep the rest of the line. */
            buf_consume(&p->in, 1);
            s++;
            n--;
        }
        p->data_state = DATA_MID;
    }

    /* Front is inside a line. Find the first CRLF followed by '.', which
     * must start a new event; a CRLF at the very end leaves us at a line
     * start; a trailing CR is kept back for the next read. A CRLF is never
     * split between events (a trailing CR waits), so the search goes from
     * dot to dot: bodies have far fewer dots than lines (base64 has none). */
    size_t end = n;
    int line_start = 0;
    size_t from = 0;
    while (from < n) {
        const char *dot = memchr(s + from, '.', n - from);
        if (!dot)
            break;
        size_t k = (size_t)(dot - s);
        if (k >= 2 && s[k - 1] == '\n' && s[k - 2] == '\r') {
            end = k;
            line_start = 1;
            break;
        }
        from = k + 1;
    }
    if (!line_start) {
        if (n >= 2 && s[n - 1] == '\n' && s[n - 2] == '\r')
            line_start = 1;
        else if (n > 0 && s[n - 1] == '\r')
            end = n - 1;
    }
    if (end == 0)
        return SMTP_EV_NONE;
    buf_consume(&p->in, end);
    p->data_state = line_start ? DATA_LINE_START : DATA_MID;
    return emit(ev, SMTP_EV_DATA, s, end);
}

static enum smtp_event_type next_bdat(struct smtp_parser *p, struct smtp_event *ev)
{
    if (p->bdat_left == 0) {
        p->mode = SMTP_MODE_COMMAND;
        p->scan = 0;
        return emit(ev, SMTP_EV_BDAT_END, NULL, 0);
    }
    const char *s = buf_peek(&p->in);
    size_t n = buf_used(&p->in);
    if (n == 0)
        return SMTP_EV_NONE;
    size_t take = (uint64_t)n < p->bdat_left ? n : (size_t)p->bdat_left;
    buf_consume(&p->in, take);
    p->bdat_left -= take;
    return emit(ev, SMTP_EV_BDAT, s, take);
}

enum smtp_event_type smtp_parser_next(struct smtp_parser *p, struct smtp_event *ev)
{
    ev->type = SMTP_EV_NONE;
    ev->ptr = NULL;
    ev->len = 0;
    switch (p->mode) {
    case SMTP_MODE_COMMAND:
        return next_command(p, ev);
    case SMTP_MODE_DATA:
        return next_data(p, ev);
    case SMTP_MODE_BDAT:
        return next_bdat(p, ev);
    }
    return SMTP_EV_NONE;
}

void smtp_parser_start_data(struct smtp_parser *p)
{
    p->mode = SMTP_MODE_DATA;
    p->data_state = DATA_LINE_START;
    p->scan = 0;
    p->skipping = 0;
    p->skipped = 0;
}

void smtp_parser_start_bdat(struct smtp_parser *p, uint64_t n)
{
    p->mode = SMTP_MODE_BDAT;
    p->bdat_left = n;
    p->scan = 0;
    p->skipping = 0;
    p->skipped = 0;
}

size_t smtp_parser_pending(const struct smtp_parser *p)
{
    return buf_used(&p->in);
}

size_t smtp_parser_capacity(const struct smtp_parser *p)
{
    return p->in.cap;
}

void smtp_parser_discard(struct smtp_parser *p)
{
    buf_reset(&p->in);
    p->mode = SMTP_MODE_COMMAND;
    p->scan = 0;
    p->skipping = 0;
    p->skipped = 0;
    p->data_state = DATA_LINE_START;
    p->bdat_left = 0;
}

void smtp_parser_shrink(struct smtp_parser *p)
{
    buf_shrink(&p->in, 0);
}

void smtp_parser_shrink_to(struct smtp_parser *p, struct buf_pool *pool)
{
    if (buf_used(&p->in) == 0 && p->in.cap > 0)
        buf_pool_give(pool, &p->in);
}

void smtp_parser_take(struct smtp_parser *p, struct buf_pool *pool)
{
    buf_pool_take(pool, &p->in);
}
