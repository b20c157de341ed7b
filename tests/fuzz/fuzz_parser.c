/* fuzz_parser.c - libFuzzer harness for core/smtp_parser.c.
 *
 * The input is a byte stream from a client. It is parsed the way the
 * session drives the parser (a "DATA" command switches to DATA mode, a
 * "BDAT n [LAST]" command to BDAT mode for n octets) three times: fed in one
 * piece, fed one byte at a time, and fed in pseudo-random pieces with
 * random smtp_parser_shrink() calls while idle. The event streams (adjacent
 * DATA runs and BDAT runs merged) must be identical to each other and to a
 * naive reference parser written here from SPEC 3 / RFC 5321 4.5.2 and
 * RFC 3030. Any difference is a framing desync (e.g. SMTP smuggling).
 *
 * The first two input bytes choose the command line limit (2..1025). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_addr.h"
#include "proto/smtp_parser.h"
#include "proto/util.h"

/* Event log: one record per event; DATA/BDAT runs are merged. */
struct evlog {
    struct buf out;
    char run_type;      /* 'D' or 'B' while a run is open, 0 otherwise */
    struct buf run;
};

static void log_init(struct evlog *l)
{
    buf_init(&l->out);
    buf_init(&l->run);
    l->run_type = 0;
}

static void log_free(struct evlog *l)
{
    buf_free(&l->out);
    buf_free(&l->run);
}

static void log_record(struct buf *out, char type, const char *p, size_t n)
{
    uint64_t len = n;
    buf_append(out, &type, 1);
    buf_append(out, &len, sizeof(len));
    if (p && n)
        buf_append(out, p, n);
}

static void log_flush_run(struct evlog *l)
{
    if (l->run_type)
        log_record(&l->out, l->run_type, buf_peek(&l->run), buf_used(&l->run));
    l->run_type = 0;
    buf_reset(&l->run);
}

static void log_event(struct evlog *l, char type, const char *p, size_t n)
{
    if (type == 'D' || type == 'B') {
        if (n == 0)
            return;
        if (l->run_type != type)
            log_flush_run(l);
        l->run_type = type;
        buf_append(&l->run, p, n);
        return;
    }
    log_flush_run(l);
    log_record(&l->out, type, p, n);
}

/* What the session does after a command line: 0 stay, 1 DATA, 2 BDAT n. */
static int command_action(const char *line, size_t len, uint64_t *n)
{
    struct smtp_span verb, arg;
    smtp_cmd_split(line, len, &verb, &arg);
    if (ascii_caseeq(verb.ptr, verb.len, "DATA") && arg.len == 0)
        return 1;
    if (ascii_caseeq(verb.ptr, verb.len, "BDAT") && arg.len > 0) {
        size_t i = 0;
        while (i < arg.len && arg.ptr[i] != ' ')
            i++;
        unsigned long long v;
        if (!smtp_parse_u64(arg.ptr, i, ~0ull, &v))
            return 0;
        *n = v;
        return 2;
    }
    return 0;
}

/* Take every event available now; check per-event invariants. */
static void drain(struct smtp_parser *p, struct evlog *l)
{
    struct smtp_event ev;
    for (;;) {
        enum smtp_event_type t = smtp_parser_next(p, &ev);
        if (t != ev.type)
            abort();
        switch (t) {
        case SMTP_EV_NONE:
            return;
        case SMTP_EV_COMMAND: {
            if (ev.len + 2 > p->max_line)
                abort();   /* a command longer than the limit got through */
            for (size_t i = 0; i + 1 < ev.len; i++)
                if (ev.ptr[i] == '\r' && ev.ptr[i + 1] == '\n')
                    abort();   /* two commands in one event */
            log_event(l, 'C', ev.ptr, ev.len);
            uint64_t n = 0;
            int a = command_action(ev.ptr, ev.len, &n);
            if (a == 1)
                smtp_parser_start_data(p);
            else if (a == 2)
                smtp_parser_start_bdat(p, n);
            break;
        }
        case SMTP_EV_LINE_TOO_LONG:
            if (ev.len + 2 <= p->max_line)
                abort();
            log_event(l, 'L', NULL, ev.len);
            break;
        case SMTP_EV_DATA:
            if (ev.len == 0)
                abort();   /* an empty run would loop the session forever */
            log_event(l, 'D', ev.ptr, ev.len);
            break;
        case SMTP_EV_BDAT:
            if (ev.len == 0)
                abort();
            log_event(l, 'B', ev.ptr, ev.len);
            break;
        case SMTP_EV_DATA_END:
            if (p->mode != SMTP_MODE_COMMAND)
                abort();
            log_event(l, 'E', NULL, 0);
            break;
        case SMTP_EV_BDAT_END:
            if (p->mode != SMTP_MODE_COMMAND)
                abort();
            log_event(l, 'F', NULL, 0);
            break;
        }
    }
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* split: 0 whole, 1 byte by byte, 2 random pieces */
static void run_parser(const uint8_t *d, size_t n, size_t max_line, int split, uint64_t seed,
                       struct evlog *l)
{
    struct smtp_parser p;
    smtp_parser_init(&p, max_line);
    size_t pos = 0;
    while (pos < n) {
        size_t take = n - pos;
        if (split == 1) {
            take = 1;
        } else if (split == 2) {
            uint64_t r = rng_next(&seed);
            size_t want = (r & 3) == 0 ? (size_t)(r >> 8) % 4096 + 1 : (size_t)(r >> 8) % 17 + 1;
            if (want < take)
                take = want;
        }
        if (split == 2 && (rng_next(&seed) & 1)) {
            char *w = smtp_parser_reserve(&p, take);
            memcpy(w, d + pos, take);
            smtp_parser_commit(&p, take);
        } else {
            smtp_parser_feed(&p, d + pos, take);
        }
        pos += take;
        drain(&p, l);
        if (split == 2 && smtp_parser_pending(&p) == 0 && p.mode == SMTP_MODE_COMMAND &&
            (rng_next(&seed) & 1))
            smtp_parser_shrink(&p);
    }
    drain(&p, l);
    log_flush_run(l);
    smtp_parser_free(&p);
}

/* Naive reference over the whole stream. */
static void run_reference(const uint8_t *u, size_t n, size_t max_line, struct evlog *l)
{
    const char *d = (const char *)u;
    enum smtp_mode mode = SMTP_MODE_COMMAND;
    int line_start = 1;
    uint64_t left = 0;
    size_t pos = 0;
    for (;;) {
        if (mode == SMTP_MODE_COMMAND) {
            size_t j = pos;
            while (j + 1 < n && !(d[j] == '\r' && d[j + 1] == '\n'))
                j++;
            if (j + 1 >= n)
                break;
            size_t len = j - pos;
            if (len + 2 > max_line) {
                log_event(l, 'L', NULL, len);
            } else {
                log_event(l, 'C', d + pos, len);
                uint64_t bn = 0;
                int a = command_action(d + pos, len, &bn);
                if (a == 1) {
                    mode = SMTP_MODE_DATA;
                    line_start = 1;
                } else if (a == 2) {
                    mode = SMTP_MODE_BDAT;
                    left = bn;
                }
            }
            pos = j + 2;
        } else if (mode == SMTP_MODE_DATA) {
            size_t rest = n - pos;
            if (line_start) {
                if (rest == 0)
                    break;
                if (d[pos] == '.') {
                    if (rest >= 3 && d[pos + 1] == '\r' && d[pos + 2] == '\n') {
                        log_event(l, 'E', NULL, 0);
                        pos += 3;
                        mode = SMTP_MODE_COMMAND;
                        continue;
                    }
                    if (rest == 1 || (rest == 2 && d[pos + 1] == '\r'))
                        break;   /* undecided: wait for more */
                    pos++;
                }
                line_start = 0;
            }
            size_t j = pos;
            while (j + 1 < n && !(d[j] == '\r' && d[j + 1] == '\n'))
                j++;
            if (j + 1 < n) {
                log_event(l, 'D', d + pos, j + 2 - pos);
                pos = j + 2;
                line_start = 1;
                continue;
            }
            size_t end = n;
            if (end > pos && d[end - 1] == '\r')
                end--;
            log_event(l, 'D', d + pos, end - pos);
            break;
        } else {
            if (left == 0) {
                log_event(l, 'F', NULL, 0);
                mode = SMTP_MODE_COMMAND;
                continue;
            }
            if (pos == n)
                break;
            size_t take = (uint64_t)(n - pos) < left ? n - pos : (size_t)left;
            log_event(l, 'B', d + pos, take);
            pos += take;
            left -= take;
        }
    }
    log_flush_run(l);
}

static void mismatch(const char *what, const struct evlog *a, const struct evlog *b)
{
    fprintf(stderr, "fuzz_parser: %s: event streams differ (%zu vs %zu bytes of log)\n", what,
            buf_used(&a->out), buf_used(&b->out));
    abort();
}

static int same(const struct evlog *a, const struct evlog *b)
{
    return buf_used(&a->out) == buf_used(&b->out) &&
           memcmp(buf_peek(&a->out), buf_peek(&b->out), buf_used(&a->out)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max_line = 2 + (size_t)((data[0] | (data[1] << 8)) % 1024);
    const uint8_t *d = data + 2;
    size_t n = size - 2;
    uint64_t seed = 0x9E3779B97F4A7C15ull ^ n;
    for (size_t i = 0; i < n && i < 64; i++)
        seed = (seed ^ d[i]) * 0x100000001B3ull;
    if (seed == 0)
        seed = 1;

    struct evlog whole, bytes, pieces, ref;
    log_init(&whole);
    log_init(&bytes);
    log_init(&pieces);
    log_init(&ref);
    run_parser(d, n, max_line, 0, seed, &whole);
    run_parser(d, n, max_line, 1, seed, &bytes);
    run_parser(d, n, max_line, 2, seed, &pieces);
    run_reference(d, n, max_line, &ref);
    if (!same(&whole, &ref))
        mismatch("whole vs reference", &whole, &ref);
    if (!same(&bytes, &ref))
        mismatch("byte-by-byte vs reference", &bytes, &ref);
    if (!same(&pieces, &ref))
        mismatch("random pieces vs reference", &pieces, &ref);
    log_free(&whole);
    log_free(&bytes);
    log_free(&pieces);
    log_free(&ref);
    return 0;
}
