/* test_smtp_parser.c - framing tests for core/smtp_parser.c.
 *
 * Every input is run whole, split at every byte boundary, byte by byte and
 * (for short inputs) split at every pair of boundaries; the transcripts of
 * events (adjacent DATA/BDAT runs merged) must all equal the expected one.
 * A tiny session stand-in switches to DATA after a "DATA" command and to
 * BDAT after "BDAT n". Random token streams are checked against a
 * straightforward reference model of the same framing rules. */
#include "proto/smtp_parser.h"
#include "testutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- transcripts ---- */

struct run {
    struct smtp_parser p;
    struct buf out;
    int last;        /* type of the last recorded event, for merging runs */
};

static void esc_append(struct buf *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r')
            buf_appends(o, "\\r");
        else if (c == '\n')
            buf_appends(o, "\\n");
        else if (c == '\0')
            buf_appends(o, "\\0");
        else if (c == '\\')
            buf_appends(o, "\\\\");
        else if (c < 32 || c > 126)
            buf_printf(o, "\\x%02x", c);
        else
            buf_append(o, &s[i], 1);
    }
}

/* Append a run of DATA ('D') or BDAT ('B') bytes, merging with the previous one. */
static void out_run(struct buf *o, int *last, char kind, const char *s, size_t n)
{
    if (*last == kind) {
        o->len--;  /* reopen the previous line */
    } else {
        buf_append(o, &kind, 1);
        buf_appends(o, ":");
    }
    esc_append(o, s, n);
    buf_appends(o, "\n");
    *last = kind;
}

static void out_line(struct buf *o, int *last, const char *prefix, const char *s, size_t n)
{
    buf_appends(o, prefix);
    esc_append(o, s, n);
    buf_appends(o, "\n");
    *last = 0;
}

/* "BDAT <n>[ LAST]" -> n; -1 if the line is not a BDAT command. */
static long long bdat_size(const char *s, size_t n)
{
    if (n < 6 || !ascii_casecmp(s, "BDAT ", 5))
        return -1;
    long long v = 0;
    size_t i = 5;
    for (; i < n && s[i] >= '0' && s[i] <= '9' && v < 100000000; i++)
        v = v * 10 + (s[i] - '0');
    return i > 5 ? v : -1;
}

static void record(struct run *r, const struct smtp_event *ev)
{
    switch (ev->type) {
    case SMTP_EV_COMMAND: {
        CHECK(ev->ptr != NULL);
        out_line(&r->out, &r->last, "C:", ev->ptr, ev->len);
        long long bd = bdat_size(ev->ptr, ev->len);
        if (ascii_caseeq(ev->ptr, ev->len, "DATA"))
            smtp_parser_start_data(&r->p);
        else if (bd >= 0)
            smtp_parser_start_bdat(&r->p, (uint64_t)bd);
        break;
    }
    case SMTP_EV_LINE_TOO_LONG:
        buf_printf(&r->out, "L:%zu\n", ev->len);
        r->last = 0;
        break;
    case SMTP_EV_DATA:
        CHECK(ev->len > 0);
        out_run(&r->out, &r->last, 'D', ev->ptr, ev->len);
        break;
    case SMTP_EV_DATA_END:
        buf_appends(&r->out, "E\n");
        r->last = 0;
        break;
    case SMTP_EV_BDAT:
        CHECK(ev->len > 0);
        out_run(&r->out, &r->last, 'B', ev->ptr, ev->len);
        break;
    case SMTP_EV_BDAT_END:
        buf_appends(&r->out, "Z\n");
        r->last = 0;
        break;
    case SMTP_EV_NONE:
        break;
    }
}

static void drain(struct run *r)
{
    struct smtp_event ev;
    for (int guard = 0; guard < 1000000; guard++) {
        if (smtp_parser_next(&r->p, &ev) == SMTP_EV_NONE) {
            /* NONE is stable: asking again without new bytes changes nothing */
            size_t pend = smtp_parser_pending(&r->p);
            CHECK(smtp_parser_next(&r->p, &ev) == SMTP_EV_NONE);
            CHECK(smtp_parser_pending(&r->p) == pend);
            return;
        }
        record(r, &ev);
    }
    CHECK(!"drain did not terminate");
}

/* Feed input cut at the given offsets (ascending), draining after each piece,
 * and return the transcript (caller frees). */
static char *transcript(const char *in, size_t n, size_t max_line, const size_t *cuts, int ncuts)
{
    struct run r;
    smtp_parser_init(&r.p, max_line);
    buf_init(&r.out);
    r.last = 0;
    size_t pos = 0;
    for (int k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : n;
        if (end > pos) {
            /* through reserve/commit, like the connection does */
            char *dst = smtp_parser_reserve(&r.p, end - pos);
            memcpy(dst, in + pos, end - pos);
            smtp_parser_commit(&r.p, end - pos);
        }
        pos = end;
        drain(&r);
    }
    buf_printf(&r.out, "P:%zu\n", smtp_parser_pending(&r.p));
    smtp_parser_free(&r.p);
    char *s = xmemdup(buf_peek(&r.out), buf_used(&r.out));
    buf_free(&r.out);
    return s;
}

static int same(const char *got, const char *exp, const char *name, const char *how, size_t a, size_t b)
{
    if (strcmp(got, exp) == 0) {
        CHECK(1);
        return 1;
    }
    CHECK(!"transcript mismatch");
    fprintf(stderr, "  case %s, %s (%zu,%zu)\n  got:\n%s  expected:\n%s", name, how, a, b, got, exp);
    return 0;
}

/* Run one input in every split; all transcripts must equal exp. */
static void check_splits(const char *name, const char *in, size_t n, size_t max_line, const char *exp)
{
    char *whole = transcript(in, n, max_line, NULL, 0);
    same(whole, exp, name, "whole", 0, 0);
    free(whole);

    for (size_t k = 1; k < n; k++) {
        size_t cuts[1] = { k };
        char *t = transcript(in, n, max_line, cuts, 1);
        int ok = same(t, exp, name, "split", k, 0);
        free(t);
        if (!ok)
            return;
    }

    size_t *cuts = xmalloc((n ? n : 1) * sizeof(*cuts));
    for (size_t k = 0; k < n; k++)
        cuts[k] = k + 1;
    char *t = transcript(in, n, max_line, cuts, (int)n);
    same(t, exp, name, "bytewise", 0, 0);
    free(t);
    free(cuts);

    if (n <= 80) {
        for (size_t a = 1; a < n; a++) {
            for (size_t b = a + 1; b < n; b++) {
                size_t c2[2] = { a, b };
                char *t2 = transcript(in, n, max_line, c2, 2);
                int ok = same(t2, exp, name, "split2", a, b);
                free(t2);
                if (!ok)
                    return;
            }
        }
    }
}

/* ---- table ---- */

struct pcase {
    const char *name;
    const char *in;
    size_t len;          /* 0: strlen(in) */
    size_t max_line;     /* 0: 64 */
    const char *exp;
};

static const struct pcase cases[] = {
    /* command mode */
    { "pipelined", "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", 0, 0,
      "C:EHLO x\nC:MAIL FROM:<a@b>\nC:RCPT TO:<c@d>\nP:0\n" },
    { "partial tail", "NOOP\r\nNOO", 0, 0, "C:NOOP\nP:3\n" },
    { "nothing", "", 0, 0, "P:0\n" },
    { "empty lines", "\r\n\r\nNOOP\r\n", 0, 0, "C:\nC:\nC:NOOP\nP:0\n" },
    { "nul in line", "NO\0OP\r\nQUIT\r\n", 13, 0, "C:NO\\0OP\nC:QUIT\nP:0\n" },
    { "bare lf in command", "NOOP\nRSET\r\n", 0, 0, "C:NOOP\\nRSET\nP:0\n" },
    { "bare cr in command", "NOOP\rRSET\r\n", 0, 0, "C:NOOP\\rRSET\nP:0\n" },
    { "lone lf line", "\n\r\nQUIT\r\n", 0, 0, "C:\\n\nC:QUIT\nP:0\n" },
    { "cr cr lf", "\r\r\n", 0, 0, "C:\\r\nP:0\n" },
    { "lf only never ends", "NOOP\nNOOP\n", 0, 0, "P:10\n" },
    { "trailing cr kept", "NOOP\r", 0, 0, "P:5\n" },
    { "line at limit", "01234567\r\nQUIT\r\n", 0, 10, "C:01234567\nC:QUIT\nP:0\n" },
    { "line one over limit", "012345678\r\nQUIT\r\n", 0, 10, "L:9\nC:QUIT\nP:0\n" },
    { "overlong then good", "0123456789\r\nNOOP\r\n", 0, 10, "L:10\nC:NOOP\nP:0\n" },
    { "overlong 40", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\nQUIT\r\n", 0, 10,
      "L:40\nC:QUIT\nP:0\n" },
    { "overlong with bare cr", "AAAAAAAAAAAA\rBB\r\nQUIT\r\n", 0, 10, "L:15\nC:QUIT\nP:0\n" },
    { "overlong with bare lf", "AAAAAAAAAAAA\nBB\r\nQUIT\r\n", 0, 10, "L:15\nC:QUIT\nP:0\n" },
    { "overlong with cr at limit", "AAAAAAAAA\rB\r\nQUIT\r\n", 0, 10, "L:11\nC:QUIT\nP:0\n" },
    { "overlong cr cr lf", "AAAAAAAAAAAAAAAAAAA\r\r\nX\r\n", 0, 10, "L:20\nC:X\nP:0\n" },
    { "two overlong", "AAAAAAAAAAAAAAA\r\nBBBBBBBBBBBBBBBBBBBB\r\nNOOP\r\n", 0, 10,
      "L:15\nL:20\nC:NOOP\nP:0\n" },
    { "overlong unterminated", "AAAAAAAAAAAAAAAAAAAAAAAAA", 0, 10, "P:0\n" },
    { "overlong unterminated cr", "AAAAAAAAAAAAAAAAAAAAAAAA\r", 0, 10, "P:1\n" },
    { "short unterminated", "AAAAA", 0, 10, "P:5\n" },
    { "minimal limit", "\r\nA\r\n\r\n", 0, 2, "C:\nL:1\nC:\nP:0\n" },

    /* DATA */
    { "data simple", "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n", 0, 0,
      "C:DATA\nD:Subject: x\\r\\n\\r\\nbody\\r\\n\nE\nC:QUIT\nP:0\n" },
    { "data empty message", "DATA\r\n.\r\nQUIT\r\n", 0, 0, "C:DATA\nE\nC:QUIT\nP:0\n" },
    { "data only crlf", "DATA\r\n\r\n.\r\n", 0, 0, "C:DATA\nD:\\r\\n\nE\nP:0\n" },
    { "data stuffed dot", "DATA\r\n..hidden\r\n.\r\n", 0, 0, "C:DATA\nD:.hidden\\r\\n\nE\nP:0\n" },
    { "data stuffed lines", "DATA\r\n.x\r\n..\r\na\r\n...\r\n.\r\n", 0, 0,
      "C:DATA\nD:x\\r\\n.\\r\\na\\r\\n..\\r\\n\nE\nP:0\n" },
    { "data dot mid line", "DATA\r\na.b\r\n a.\r\n.\r\n", 0, 0, "C:DATA\nD:a.b\\r\\n a.\\r\\n\nE\nP:0\n" },
    { "smuggle lf dot lf", "DATA\r\na\n.\nMAIL FROM:<x>\r\n.\r\nQUIT\r\n", 0, 0,
      "C:DATA\nD:a\\n.\\nMAIL FROM:<x>\\r\\n\nE\nC:QUIT\nP:0\n" },
    { "smuggle crlf dot lf", "DATA\r\na\r\n.\nRCPT\r\n.\r\n", 0, 0,
      "C:DATA\nD:a\\r\\n\\nRCPT\\r\\n\nE\nP:0\n" },
    { "smuggle lf dot crlf", "DATA\r\na\n.\r\nRCPT\r\n.\r\n", 0, 0,
      "C:DATA\nD:a\\n.\\r\\nRCPT\\r\\n\nE\nP:0\n" },
    { "smuggle cr dot crlf", "DATA\r\na\r.\r\nRCPT\r\n.\r\n", 0, 0,
      "C:DATA\nD:a\\r.\\r\\nRCPT\\r\\n\nE\nP:0\n" },
    { "smuggle cr dot cr", "DATA\r\na\r.\rRCPT\r\n.\r\n", 0, 0,
      "C:DATA\nD:a\\r.\\rRCPT\\r\\n\nE\nP:0\n" },
    { "smuggle dot lf at start", "DATA\r\n.\nX\r\n.\r\n", 0, 0, "C:DATA\nD:\\nX\\r\\n\nE\nP:0\n" },
    { "smuggle lf dot lf at start", "DATA\r\n\n.\nX\r\n.\r\n", 0, 0,
      "C:DATA\nD:\\n.\\nX\\r\\n\nE\nP:0\n" },
    { "dot cr x at line start", "DATA\r\n.\rX\r\n.\r\n", 0, 0, "C:DATA\nD:\\rX\\r\\n\nE\nP:0\n" },
    { "dot cr cr lf", "DATA\r\na\r\n.\r\r\n.\r\n", 0, 0, "C:DATA\nD:a\\r\\n\\r\\r\\n\nE\nP:0\n" },
    { "cr before real end", "DATA\r\na\r\r\n.\r\n", 0, 0, "C:DATA\nD:a\\r\\r\\n\nE\nP:0\n" },
    { "lf before real end", "DATA\r\na\n\r\n.\r\n", 0, 0, "C:DATA\nD:a\\n\\r\\n\nE\nP:0\n" },
    { "nul in data", "DATA\r\na\0b\r\n.\r\n", 14, 0, "C:DATA\nD:a\\0b\\r\\n\nE\nP:0\n" },
    { "data long line", "DATA\r\n0123456789012345678901234567890123456789\r\n.\r\nNOOP\r\n", 0, 10,
      "C:DATA\nD:0123456789012345678901234567890123456789\\r\\n\nE\nC:NOOP\nP:0\n" },
    { "pipelined transactions",
      "DATA\r\nx\r\n.\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\ny\r\n.\r\nQUIT\r\n", 0, 0,
      "C:DATA\nD:x\\r\\n\nE\nC:MAIL FROM:<a>\nC:RCPT TO:<b>\nC:DATA\nD:y\\r\\n\nE\nC:QUIT\nP:0\n" },
    { "data unterminated dot", "DATA\r\nabc\r\n.", 0, 0, "C:DATA\nD:abc\\r\\n\nP:1\n" },
    { "data unterminated dot cr", "DATA\r\nabc\r\n.\r", 0, 0, "C:DATA\nD:abc\\r\\n\nP:2\n" },
    { "data unterminated cr", "DATA\r\nabc\r", 0, 0, "C:DATA\nD:abc\nP:1\n" },
    { "data unterminated start dot", "DATA\r\n.", 0, 0, "C:DATA\nP:1\n" },
    { "data unterminated lf dot", "DATA\r\nabc\n.", 0, 0, "C:DATA\nD:abc\\n.\nP:0\n" },
    { "data unterminated", "DATA\r\nabc\r\n.x", 0, 0, "C:DATA\nD:abc\\r\\nx\nP:0\n" },
    { "lowercase data", "data\r\n.\r\n", 0, 0, "C:data\nE\nP:0\n" },
    { "data end then partial command", "DATA\r\n.\r\nQU", 0, 0, "C:DATA\nE\nP:2\n" },

    /* BDAT */
    { "bdat 0", "BDAT 0\r\nQUIT\r\n", 0, 0, "C:BDAT 0\nZ\nC:QUIT\nP:0\n" },
    { "bdat 0 last", "BDAT 0 LAST\r\n", 0, 0, "C:BDAT 0 LAST\nZ\nP:0\n" },
    { "bdat 1", "BDAT 1 LAST\r\nXQUIT\r\n", 0, 0, "C:BDAT 1 LAST\nB:X\nZ\nC:QUIT\nP:0\n" },
    { "bdat raw", "BDAT 5\r\n\r\n.\r\nNOOP\r\n", 0, 0, "C:BDAT 5\nB:\\r\\n.\\r\\n\nZ\nC:NOOP\nP:0\n" },
    { "bdat chain", "BDAT 3\r\nabcBDAT 2 LAST\r\nde", 0, 0,
      "C:BDAT 3\nB:abc\nZ\nC:BDAT 2 LAST\nB:de\nZ\nP:0\n" },
    { "bdat incomplete", "BDAT 10\r\nabc", 0, 0, "C:BDAT 10\nB:abc\nP:0\n" },
    { "bdat no line limit", "BDAT 30\r\n012345678901234567890123456789NOOP\r\n", 0, 10,
      "C:BDAT 30\nB:012345678901234567890123456789\nZ\nC:NOOP\nP:0\n" },
    { "bdat bare lf raw", "BDAT 3\r\n\n\r.RSET\r\n", 0, 0, "C:BDAT 3\nB:\\n\\r.\nZ\nC:RSET\nP:0\n" },
};

static void test_table(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct pcase *c = &cases[i];
        size_t n = c->len ? c->len : strlen(c->in);
        check_splits(c->name, c->in, n, c->max_line ? c->max_line : 64, c->exp);
    }
}

/* ---- reference model over whole inputs ---- */

static size_t find(const char *s, size_t n, size_t from, const char *pat)
{
    size_t m = strlen(pat);
    for (size_t i = from; i + m <= n; i++)
        if (memcmp(s + i, pat, m) == 0)
            return i;
    return SIZE_MAX;
}

static void ref_unstuff(struct buf *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && (i == 0 || (i >= 2 && s[i - 2] == '\r' && s[i - 1] == '\n')))
            continue;
        buf_append(o, &s[i], 1);
    }
}

static int ends_with(const char *s, size_t n, const char *suf)
{
    size_t m = strlen(suf);
    return n >= m && memcmp(s + n - m, suf, m) == 0;
}

static char *ref_transcript(const char *s, size_t n, size_t max_line)
{
    struct buf o;
    buf_init(&o);
    int last = 0;
    size_t pos = 0, pending = 0;
    int mode = 0;            /* 0 command, 1 data */
    while (pos < n) {
        if (mode == 0) {
            size_t i = find(s, n, pos, "\r\n");
            if (i == SIZE_MAX) {
                size_t rest = n - pos;
                pending = rest < max_line ? rest : (s[n - 1] == '\r' ? 1 : 0);
                break;
            }
            size_t len = i - pos;
            if (len + 2 > max_line) {
                buf_printf(&o, "L:%zu\n", len);
                last = 0;
                pos = i + 2;
                continue;
            }
            out_line(&o, &last, "C:", s + pos, len);
            long long bd = bdat_size(s + pos, len);
            pos = i + 2;
            if (ascii_caseeq(s + i - len, len, "DATA")) {
                mode = 1;
            } else if (bd >= 0) {
                size_t avail = n - pos;
                size_t take = (size_t)bd < avail ? (size_t)bd : avail;
                if (take)
                    out_run(&o, &last, 'B', s + pos, take);
                pos += take;
                if (take < (size_t)bd)
                    break;
                buf_appends(&o, "Z\n");
                last = 0;
            }
        } else {
            const char *t = s + pos;
            size_t tn = n - pos;
            size_t msg_end;   /* message bytes before the terminator */
            size_t next;
            if (tn >= 3 && memcmp(t, ".\r\n", 3) == 0) {
                msg_end = 0;
                next = 3;
            } else {
                size_t k = find(t, tn, 0, "\r\n.\r\n");
                if (k == SIZE_MAX) {
                    size_t keep = 0;
                    if ((tn == 1 && t[0] == '.') || ends_with(t, tn, "\r\n."))
                        keep = 1;
                    else if ((tn == 2 && t[0] == '.' && t[1] == '\r') || ends_with(t, tn, "\r\n.\r"))
                        keep = 2;
                    else if (ends_with(t, tn, "\r"))
                        keep = 1;
                    struct buf m;
                    buf_init(&m);
                    ref_unstuff(&m, t, tn - keep);
                    if (buf_used(&m))
                        out_run(&o, &last, 'D', buf_peek(&m), buf_used(&m));
                    buf_free(&m);
                    pending = keep;
                    pos = n;
                    break;
                }
                msg_end = k + 2;
                next = k + 5;
            }
            struct buf m;
            buf_init(&m);
            ref_unstuff(&m, t, msg_end);
            if (buf_used(&m))
                out_run(&o, &last, 'D', buf_peek(&m), buf_used(&m));
            buf_free(&m);
            buf_appends(&o, "E\n");
            last = 0;
            pos += next;
            mode = 0;
        }
    }
    buf_printf(&o, "P:%zu\n", pending);
    char *r = xmemdup(buf_peek(&o), buf_used(&o));
    buf_free(&o);
    return r;
}

static uint64_t rng_next(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *st = x;
    return x;
}

static void test_random_against_model(void)
{
    static const char *const tokens[] = {
        "DATA\r\n", "\r\n", "\r", "\n", ".", "..", "a", "NOOP", "\r\n.\r\n", ".\r\n",
        "xyzxyzxyz", "BDAT 3\r\n", "BDAT 0\r\n", "\r\n.", "\n.\n", "DATA",
    };
    static const size_t limits[] = { 4, 8, 16, 64 };
    const size_t ntok = sizeof(tokens) / sizeof(tokens[0]);
    uint64_t st = 0x9e3779b97f4a7c15ULL;
    int bad = 0;
    for (int iter = 0; iter < 4000 && bad < 3; iter++) {
        struct buf in;
        buf_init(&in);
        int count = (int)(rng_next(&st) % 40);
        for (int k = 0; k < count; k++) {
            const char *tok = tokens[rng_next(&st) % ntok];
            buf_appends(&in, tok);
        }
        if (rng_next(&st) % 2)
            buf_appends(&in, "\0");
        size_t n = buf_used(&in);
        const char *s = buf_peek(&in);
        size_t max_line = limits[rng_next(&st) % 4];
        char *exp = ref_transcript(s, n, max_line);

        char *t = transcript(s, n, max_line, NULL, 0);
        bad += !same(t, exp, "random", "whole", (size_t)iter, max_line);
        free(t);

        size_t *cuts = xmalloc((n ? n : 1) * sizeof(*cuts));
        for (size_t k = 0; k < n; k++)
            cuts[k] = k + 1;
        t = transcript(s, n, max_line, cuts, (int)n);
        bad += !same(t, exp, "random", "bytewise", (size_t)iter, max_line);
        free(t);

        for (int rep = 0; rep < 4 && n > 1; rep++) {
            int nc = 0;
            size_t at = 0;
            while (nc < (int)n) {
                at += 1 + rng_next(&st) % 7;
                if (at >= n)
                    break;
                cuts[nc++] = at;
            }
            t = transcript(s, n, max_line, cuts, nc);
            bad += !same(t, exp, "random", "random cuts", (size_t)iter, max_line);
            free(t);
        }
        free(cuts);
        free(exp);
        buf_free(&in);
    }
}

/* ---- behaviour beyond transcripts ---- */

static void test_pending_pipelining(void)
{
    struct smtp_parser p;
    struct smtp_event ev;
    smtp_parser_init(&p, 512);
    const char *in = "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n";
    smtp_parser_feed(&p, in, strlen(in));
    CHECK(smtp_parser_pending(&p) == strlen(in));
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "MAIL FROM:<a@b>");
    CHECK(smtp_parser_pending(&p) == strlen("RCPT TO:<c@d>\r\nDATA\r\n"));
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "RCPT TO:<c@d>");
    CHECK(smtp_parser_pending(&p) == 6);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "DATA");
    CHECK(smtp_parser_pending(&p) == 0);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_NONE);
    CHECK(ev.type == SMTP_EV_NONE && ev.len == 0);
    smtp_parser_free(&p);
}

static void test_discard(void)
{
    struct smtp_parser p;
    struct smtp_event ev;
    smtp_parser_init(&p, 16);

    /* STARTTLS with pipelined junk (CVE-2011-0411) */
    const char *in = "STARTTLS\r\nMAIL FROM:<evil@x>\r\n";
    smtp_parser_feed(&p, in, strlen(in));
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "STARTTLS");
    CHECK(smtp_parser_pending(&p) > 0);
    smtp_parser_discard(&p);
    CHECK(smtp_parser_pending(&p) == 0);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_NONE);
    smtp_parser_feed(&p, "EHLO x\r\n", 8);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "EHLO x");

    /* discard while skipping an over-long line: the next line is fresh */
    smtp_parser_feed(&p, "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", 28);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_NONE);
    smtp_parser_discard(&p);
    smtp_parser_feed(&p, "NOOP\r\n", 6);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "NOOP");

    /* discard in DATA and BDAT mode returns to command mode */
    smtp_parser_start_data(&p);
    smtp_parser_feed(&p, "abc\r\n.", 6);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_DATA);
    smtp_parser_discard(&p);
    CHECK(p.mode == SMTP_MODE_COMMAND);
    smtp_parser_feed(&p, ".\r\n", 3);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, ".");

    smtp_parser_start_bdat(&p, 100);
    smtp_parser_feed(&p, "xyz", 3);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_BDAT);
    smtp_parser_discard(&p);
    smtp_parser_feed(&p, "RSET\r\n", 6);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "RSET");

    smtp_parser_shrink(&p);
    CHECK(p.in.cap == 0);
    smtp_parser_feed(&p, "QUIT\r\n", 6);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "QUIT");
    smtp_parser_free(&p);
}

/* An endless line must not make the buffer grow: bytes are dropped as they come. */
static void test_overlong_memory_bounded(void)
{
    struct smtp_parser p;
    struct smtp_event ev;
    smtp_parser_init(&p, 512);
    size_t total = 0, maxcap = 0;
    int events = 0;
    for (int i = 0; i < 1024; i++) {
        char *dst = smtp_parser_reserve(&p, 4096);
        memset(dst, i == 511 ? '\r' : 'A', 4096);   /* a block of bare CRs too */
        smtp_parser_commit(&p, 4096);
        total += 4096;
        while (smtp_parser_next(&p, &ev) != SMTP_EV_NONE)
            events++;
        if (p.in.cap > maxcap)
            maxcap = p.in.cap;
    }
    CHECK(events == 0);
    CHECK(maxcap <= 8192);
    smtp_parser_feed(&p, "\r\nNOOP\r\n", 8);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_LINE_TOO_LONG);
    CHECK(ev.len == total);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "NOOP");
    smtp_parser_free(&p);
}

/* A long message streamed in reads: runs come out without buffering whole
 * lines, the buffer stays at read size, the content survives unstuffing. */
static void test_data_streaming(void)
{
    struct smtp_parser p;
    struct smtp_event ev;
    struct buf wire, expect, got;
    buf_init(&wire);
    buf_init(&expect);
    buf_init(&got);
    uint64_t st = 12345;
    for (int line = 0; line < 3000; line++) {
        size_t len = (size_t)(rng_next(&st) % 3000);
        int dot = rng_next(&st) % 5 == 0;
        if (dot) {
            buf_appends(&wire, "..");
            buf_appends(&expect, ".");
        }
        for (size_t k = 0; k < len; k++) {
            char c = (char)('a' + (k % 26));
            buf_append(&wire, &c, 1);
            buf_append(&expect, &c, 1);
        }
        buf_appends(&wire, "\r\n");
        buf_appends(&expect, "\r\n");
    }
    buf_appends(&wire, ".\r\nQUIT\r\n");

    smtp_parser_init(&p, 512);
    smtp_parser_start_data(&p);
    size_t off = 0, maxcap = 0;
    int ended = 0, quit = 0;
    const char *w = buf_peek(&wire);
    size_t wn = buf_used(&wire);
    for (int guard = 0; off < wn && guard < 1000000; guard++) {
        size_t chunk = 1 + (size_t)(rng_next(&st) % 16384);
        if (chunk > wn - off)
            chunk = wn - off;
        memcpy(smtp_parser_reserve(&p, chunk), w + off, chunk);
        smtp_parser_commit(&p, chunk);
        off += chunk;
        for (;;) {
            enum smtp_event_type t = smtp_parser_next(&p, &ev);
            if (t == SMTP_EV_NONE)
                break;
            if (t == SMTP_EV_DATA)
                buf_append(&got, ev.ptr, ev.len);
            else if (t == SMTP_EV_DATA_END)
                ended++;
            else if (t == SMTP_EV_COMMAND && ascii_caseeq(ev.ptr, ev.len, "QUIT"))
                quit++;
            else
                CHECK(!"unexpected event");
        }
        if (p.in.cap > maxcap)
            maxcap = p.in.cap;
        CHECK(smtp_parser_pending(&p) <= 4);
    }
    CHECK(ended == 1);
    CHECK(quit == 1);
    CHECK(maxcap <= 32768);
    CHECK_BYTES(buf_peek(&got), buf_used(&got), buf_peek(&expect), buf_used(&expect));
    smtp_parser_free(&p);
    buf_free(&wire);
    buf_free(&expect);
    buf_free(&got);
}

/* Runs are as large as possible: a whole buffered message comes as few runs. */
static void test_run_sizes(void)
{
    struct smtp_parser p;
    struct smtp_event ev;
    smtp_parser_init(&p, 512);
    smtp_parser_start_data(&p);
    const char *in = "line one\r\nline two\r\n..dot\r\nafter\r\n.\r\n";
    smtp_parser_feed(&p, in, strlen(in));
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_DATA);
    CHECK_MEM(ev.ptr, ev.len, "line one\r\nline two\r\n");
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_DATA);
    CHECK_MEM(ev.ptr, ev.len, ".dot\r\nafter\r\n");
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_DATA_END);
    CHECK(p.mode == SMTP_MODE_COMMAND);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_NONE);

    /* BDAT runs point into the buffer and stop exactly at n */
    smtp_parser_start_bdat(&p, 4);
    smtp_parser_feed(&p, "ab", 2);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_BDAT);
    CHECK_MEM(ev.ptr, ev.len, "ab");
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_NONE);
    smtp_parser_feed(&p, "cdNOOP\r\n", 8);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_BDAT);
    CHECK_MEM(ev.ptr, ev.len, "cd");
    CHECK(smtp_parser_pending(&p) == 6);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_BDAT_END);
    CHECK(p.mode == SMTP_MODE_COMMAND);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_COMMAND);
    CHECK_MEM(ev.ptr, ev.len, "NOOP");

    /* a huge BDAT size does not overflow anything */
    smtp_parser_start_bdat(&p, UINT64_MAX);
    smtp_parser_feed(&p, "xyz", 3);
    CHECK(smtp_parser_next(&p, &ev) == SMTP_EV_BDAT);
    CHECK(ev.len == 3);
    CHECK(p.bdat_left == UINT64_MAX - 3);
    smtp_parser_free(&p);
}

int main(void)
{
    test_table();
    test_random_against_model();
    test_pending_pipelining();
    test_discard();
    test_overlong_memory_bounded();
    test_data_streaming();
    test_run_sizes();
    return testutil_summary();
}
