/* test_msg_scan.c - tests for core/msg_scan.c.
 *
 * Table cases give the header section and the rest separately, so the
 * expected header_len is strlen(head). Every input is fed whole, split at
 * each boundary, byte by byte; results must not depend on the split.
 * Random inputs are checked against a simple whole-buffer reference. */
#include "proto/msg_scan.h"
#include "proto/util.h"
#include "testutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct result {
    uint64_t size, header_len;
    bool done_early;    /* headers_done before msg_scan_finish */
    bool bare_lf, bare_cr, nul, eight_bit;
    size_t max_line;
};

static void scan_split(const char *s, size_t n, const size_t *cuts, int ncuts, struct result *r)
{
    struct msg_scan m;
    msg_scan_init(&m);
    size_t pos = 0;
    for (int k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : n;
        msg_scan_feed(&m, s + pos, end - pos);
        pos = end;
    }
    r->done_early = m.headers_done;
    uint64_t early_len = m.header_len;
    msg_scan_finish(&m);
    CHECK(m.headers_done);
    if (r->done_early)
        CHECK(m.header_len == early_len);   /* finish does not move a known end */
    r->size = m.size;
    r->header_len = m.header_len;
    r->bare_lf = m.bare_lf;
    r->bare_cr = m.bare_cr;
    r->nul = m.nul;
    r->eight_bit = m.eight_bit;
    r->max_line = m.max_line_seen;
}

static bool result_eq(const struct result *a, const struct result *b)
{
    return a->size == b->size && a->header_len == b->header_len && a->done_early == b->done_early &&
           a->bare_lf == b->bare_lf && a->bare_cr == b->bare_cr && a->nul == b->nul &&
           a->eight_bit == b->eight_bit && a->max_line == b->max_line;
}

static void show(const char *label, const struct result *r)
{
    fprintf(stderr, "  %s: size=%llu header_len=%llu early=%d lf=%d cr=%d nul=%d 8bit=%d max=%zu\n",
            label, (unsigned long long)r->size, (unsigned long long)r->header_len, r->done_early,
            r->bare_lf, r->bare_cr, r->nul, r->eight_bit, r->max_line);
}

/* Whole, every 2-split, bytewise: all must equal exp. */
static void check_all_splits(const char *name, const char *s, size_t n, const struct result *exp)
{
    struct result r;
    size_t *cuts = xmalloc((n ? n : 1) * sizeof(*cuts));
    for (size_t k = 0; k <= n + 1; k++) {
        int nc;
        if (k == 0) {
            nc = 0;
        } else if (k <= n) {
            if (k == n)
                continue;
            cuts[0] = k;
            nc = 1;
        } else {
            for (size_t j = 0; j < n; j++)
                cuts[j] = j + 1;
            nc = (int)n;
        }
        scan_split(s, n, cuts, nc, &r);
        if (!CHECK(result_eq(&r, exp))) {
            fprintf(stderr, "  case %s, split %zu\n", name, k);
            show("got", &r);
            show("expected", exp);
            break;
        }
    }
    free(cuts);
}

struct scase {
    const char *name;
    const char *head;      /* the header section, incl. its empty line */
    const char *rest;
    int early;             /* end of headers known before finish */
    int lf, cr, nul, eight;
    size_t max_line;
    size_t nul_len;        /* rest length when it contains NUL (0: strlen) */
};

static const struct scase scases[] = {
    { "plain", "Subject: hi\r\nFrom: a@b\r\n\r\n", "body\r\n", 1, 0, 0, 0, 0, 11, 0 },
    { "empty line first", "\r\n", "body\r\n", 1, 0, 0, 0, 0, 4, 0 },
    { "folded", "Subject: a\r\n b\r\n\tc\r\n\r\n", "x\r\n", 1, 0, 0, 0, 0, 10, 0 },
    { "non-header line ends section", "A: b\r\n", "not a header\r\nmore\r\n", 1, 0, 0, 0, 0, 12, 0 },
    { "space before colon", "A: b\r\n", "Bad : x\r\n\r\n", 1, 0, 0, 0, 0, 7, 0 },
    { "colon first", "", ": x\r\n\r\n", 1, 0, 0, 0, 0, 3, 0 },
    { "continuation first", "", " x: y\r\n\r\n", 1, 0, 0, 0, 0, 5, 0 },
    { "body only", "", "hello world\r\n", 1, 0, 0, 0, 0, 11, 0 },
    { "headers to the end", "A: b\r\nC: d\r\n", "", 0, 0, 0, 0, 0, 4, 0 },
    { "unterminated field", "A: b\r\nC: d", "", 0, 0, 0, 0, 0, 4, 0 },
    { "unterminated continuation", "A: b\r\n  more", "", 0, 0, 0, 0, 0, 6, 0 },
    { "unterminated name", "A: b\r\n", "Cdef", 0, 0, 0, 0, 0, 4, 0 },
    { "lone cr at end", "A: b\r\n", "\r", 0, 0, 1, 0, 0, 4, 0 },
    { "cr then text", "A: b\r\n", "\rX\r\n", 1, 0, 1, 0, 0, 4, 0 },
    { "bare lf headers", "A: b\n\n", "body\n", 1, 1, 0, 0, 0, 4, 0 },
    { "empty message", "", "", 0, 0, 0, 0, 0, 0, 0 },
    { "8bit header", "Subject: \xc3\xa9\r\n\r\n", "", 1, 0, 0, 0, 1, 11, 0 },
    { "nul in body", "A: b\r\n\r\n", "x\0y\r\n", 1, 0, 0, 1, 0, 4, 5 },
    { "nul in name", "", "A\0: b\r\n\r\n", 1, 0, 0, 1, 0, 5, 9 },
    { "bare cr mid line", "A: b\r\n\r\n", "x\ry\r\n", 1, 0, 1, 0, 0, 4, 0 },
    { "cr at very end", "A: b\r\n\r\n", "x\r", 1, 0, 1, 0, 0, 4, 0 },
    { "cr cr lf", "A: b\r\n\r\n", "x\r\r\n", 1, 0, 1, 0, 0, 4, 0 },
    { "lf cr", "A: b\r\n\r\n", "x\n\r", 1, 1, 1, 0, 0, 4, 0 },
    { "8bit in name", "", "Sub\xffject: x\r\n\r\n", 1, 0, 0, 0, 1, 11, 0 },
    { "control in name", "", "Sub\x01ject: x\r\n", 1, 0, 0, 0, 0, 11, 0 },
    { "empty value", "X-Empty:\r\nY: z\r\n\r\n", "b\r\n", 1, 0, 0, 0, 0, 8, 0 },
    { "crlf inside fold", "A: b\r\n \r\n\r\n", "z", 1, 0, 0, 0, 0, 4, 0 },
    { "lone lf is empty line", "A: b\r\n\n", "X: y\r\n", 1, 1, 0, 0, 0, 4, 0 },
    { "dot line", "A: b\r\n", ".\r\n", 1, 0, 0, 0, 0, 4, 0 },
};

static void test_table(void)
{
    for (size_t i = 0; i < sizeof(scases) / sizeof(scases[0]); i++) {
        const struct scase *c = &scases[i];
        struct buf in;
        buf_init(&in);
        buf_appends(&in, c->head);
        buf_append(&in, c->rest, c->nul_len ? c->nul_len : strlen(c->rest));
        struct result exp = {
            .size = buf_used(&in),
            .header_len = strlen(c->head),
            .done_early = c->early,
            .bare_lf = c->lf,
            .bare_cr = c->cr,
            .nul = c->nul,
            .eight_bit = c->eight,
            .max_line = c->max_line,
        };
        check_all_splits(c->name, buf_peek(&in), buf_used(&in), &exp);
        buf_free(&in);
    }
}

static void test_long_line(void)
{
    struct buf in;
    buf_init(&in);
    buf_appends(&in, "Subject: x\r\n\r\n");
    for (int i = 0; i < 5000; i++)
        buf_appends(&in, "a");
    buf_appends(&in, "\r\nshort\r\n");
    for (int i = 0; i < 998; i++)
        buf_appends(&in, "b");
    struct result exp = { .size = buf_used(&in), .header_len = 14, .done_early = 1, .max_line = 5000 };
    check_all_splits("long line", buf_peek(&in), buf_used(&in), &exp);
    buf_free(&in);
}

/* ---- reference over the whole buffer ---- */

static bool wsp(char c)
{
    return c == ' ' || c == '\t';
}

static bool namech(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

static void ref_scan(const char *s, size_t n, struct result *r)
{
    memset(r, 0, sizeof(*r));
    r->size = n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n' && (i == 0 || s[i - 1] != '\r'))
            r->bare_lf = true;
        if (c == '\r' && (i + 1 == n || s[i + 1] != '\n'))
            r->bare_cr = true;
        if (c == 0)
            r->nul = true;
        if (c >= 0x80)
            r->eight_bit = true;
    }
    /* lines */
    size_t start = 0;
    bool headers = true, first = true;
    r->header_len = 0;
    while (start <= n) {
        const char *lf = memchr(s + start, '\n', n - start);
        size_t e = lf ? (size_t)(lf - s) : n;
        size_t clen = e - start;
        if (lf && clen && s[e - 1] == '\r')
            clen--;
        if (lf || e > start) {
            if (clen > r->max_line)
                r->max_line = clen;
        }
        if (headers) {
            const char *l = s + start;
            if (!lf) {
                /* unterminated last line (possibly empty) */
                size_t k = 0;
                while (k < clen && namech((unsigned char)l[k]))
                    k++;
                if (clen == 0) {
                    r->header_len = start;
                } else if (clen == 1 && l[0] == '\r') {
                    r->header_len = start;
                } else if (wsp(l[0])) {
                    r->header_len = first ? start : n;
                    r->done_early = first;
                } else if (k == clen) {
                    r->header_len = start;          /* name not finished */
                } else if (k > 0 && l[k] == ':') {
                    r->header_len = n;
                } else {
                    r->header_len = start;
                    r->done_early = true;
                }
                headers = false;
            } else if (clen == 0) {
                r->header_len = e + 1;
                r->done_early = true;
                headers = false;
            } else if (wsp(l[0])) {
                if (first) {
                    r->header_len = start;
                    r->done_early = true;
                    headers = false;
                }
            } else {
                size_t k = 0;
                while (k < clen && namech((unsigned char)l[k]))
                    k++;
                if (!(k > 0 && k < clen && l[k] == ':')) {
                    r->header_len = start;
                    r->done_early = true;
                    headers = false;
                }
            }
        }
        first = false;
        if (!lf)
            break;
        start = e + 1;
    }
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

static void test_random(void)
{
    static const char *const tokens[] = {
        "\r\n", "\r", "\n", "A", "Subject", ":", " ", "\t", "x: y", "\xc3\xa9", "\x01", "bc",
    };
    uint64_t st = 42;
    for (int iter = 0; iter < 3000; iter++) {
        struct buf in;
        buf_init(&in);
        int count = (int)(rng_next(&st) % 24);
        for (int k = 0; k < count; k++)
            buf_appends(&in, tokens[rng_next(&st) % (sizeof(tokens) / sizeof(tokens[0]))]);
        if (rng_next(&st) % 8 == 0)
            buf_append(&in, "\0", 1);
        struct result exp;
        ref_scan(buf_peek(&in), buf_used(&in), &exp);
        check_all_splits("random", buf_peek(&in), buf_used(&in), &exp);
        buf_free(&in);
    }
}

/* ---- msg_headers_each ---- */

static void collect(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct buf *b = ctx;
    buf_append(b, name, nlen);
    buf_appends(b, "=");
    buf_append(b, value, vlen);
    buf_appends(b, "|");
    CHECK(value[vlen] == '\0');
}

struct hcase {
    const char *hdr;
    const char *name;
    int count;
    const char *exp;
};

static const struct hcase hcases[] = {
    { "Subject: hello \r\nTo: a@b\r\nsubject: second\r\n\r\nSubject: body\r\n", "subject", 2,
      "Subject=hello|subject=second|" },
    { "Subject: hello\r\nTo: a@b\r\n\r\n", NULL, 2, "Subject=hello|To=a@b|" },
    { "Subject: a\r\n b\r\n\tc\r\n\r\n", "SUBJECT", 1, "Subject=a b\tc|" },
    { "X:   v  \r\n", "x", 1, "X=v|" },
    { "X:\t \r\n", "x", 1, "X=|" },
    { "X-Empty:\r\nY: z\r\n", NULL, 2, "X-Empty=|Y=z|" },
    { "X: a\rb\r\n", "X", 1, "X=a\rb|" },
    { "X: y", "X", 1, "X=y|" },
    { "X: y\r\n  ", "X", 1, "X=y|" },
    { "Subject: a\n b\n\nSubject: no\n", "subject", 1, "Subject=a b|" },
    { "A: 1\r\nnot a header\r\nB: 2\r\n", NULL, 1, "A=1|" },
    { "A: 1\r\nB : 2\r\n", NULL, 1, "A=1|" },
    { " A: 1\r\n", NULL, 0, "" },
    { "", NULL, 0, "" },
    { "Received: from a\r\n\tby b\r\n\tfor c; date\r\nReceived: x\r\n", "received", 2,
      "Received=from a\tby b\tfor c; date|Received=x|" },
    { "To: a@b\r\nTo-X: c\r\n", "To", 1, "To=a@b|" },
    { "A: x\r\n \r\n y\r\n", "a", 1, "A=x  y|" },
};

static void test_headers_each(void)
{
    for (size_t i = 0; i < sizeof(hcases) / sizeof(hcases[0]); i++) {
        const struct hcase *c = &hcases[i];
        struct buf out;
        buf_init(&out);
        int n = msg_headers_each(c->hdr, strlen(c->hdr), c->name, collect, &out);
        if (!CHECK(n == c->count))
            fprintf(stderr, "  header case %zu: count %d\n", i, n);
        CHECK_MEM(buf_peek(&out), buf_used(&out), c->exp);
        CHECK(msg_headers_each(c->hdr, strlen(c->hdr), c->name, NULL, NULL) == c->count);
        buf_free(&out);
    }

    /* the header section found by the scanner is what headers_each walks */
    const char *msg = "From: a@b\r\nSubject: t\r\n\r\nSubject: not a header\r\n";
    struct msg_scan m;
    msg_scan_init(&m);
    msg_scan_feed(&m, msg, strlen(msg));
    msg_scan_finish(&m);
    CHECK(m.header_len == 25);
    struct buf out;
    buf_init(&out);
    CHECK(msg_headers_each(msg, (size_t)m.header_len, "subject", collect, &out) == 1);
    CHECK_MEM(buf_peek(&out), buf_used(&out), "Subject=t|");
    buf_free(&out);
}

int main(void)
{
    test_table();
    test_long_line();
    test_random();
    test_headers_each();
    return testutil_summary();
}
