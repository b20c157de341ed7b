/* fuzz_scan.c - libFuzzer harness for core/msg_scan.c.
 *
 * The input is message content. msg_scan is fed it in one piece, one byte
 * at a time and in pseudo-random pieces; all three results must be equal
 * and equal to a naive reference computed here (bare LF, bare CR, NUL,
 * 8-bit, longest line, end of the header section). Then msg_headers_each
 * runs over the header section found: it must visit exactly the fields
 * the reference counted, in order, with the reference's unfolded value,
 * and a lookup by the first field's name must find it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/msg_scan.h"
#include "proto/util.h"

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "fuzz_scan: check failed: %s (line %d)\n",   \
                    #cond, __LINE__);                                    \
            abort();                                                     \
        }                                                                \
    } while (0)

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void scan(const char *d, size_t n, int split, uint64_t seed, struct msg_scan *m)
{
    msg_scan_init(m);
    size_t pos = 0;
    while (pos < n) {
        size_t take = n - pos;
        if (split == 1)
            take = 1;
        else if (split == 2) {
            size_t want = (size_t)(rng_next(&seed) >> 8) % 13 + 1;
            if (want < take)
                take = want;
        }
        msg_scan_feed(m, d + pos, take);
        if (split == 2 && (rng_next(&seed) & 3) == 0)
            msg_scan_feed(m, d + pos, 0);   /* empty feeds change nothing */
        pos += take;
    }
    msg_scan_finish(m);
}

static int name_char(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

struct ref_field {
    size_t name, name_len, value, end;   /* offsets; value..end = raw value incl. folds */
};

struct ref {
    bool bare_lf, bare_cr, nul, eight_bit;
    size_t max_line;
    size_t header_len;
    struct ref_field *fields;
    size_t nfields;
};

static void reference(const char *d, size_t n, struct ref *r)
{
    memset(r, 0, sizeof(*r));
    r->fields = xcalloc(n + 1, sizeof(*r->fields));
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '\n' && (i == 0 || d[i - 1] != '\r'))
            r->bare_lf = true;
        if (c == '\r' && (i + 1 == n || d[i + 1] != '\n'))
            r->bare_cr = true;
        if (c == 0)
            r->nul = true;
        if (c >= 0x80)
            r->eight_bit = true;
    }
    /* lines end at LF; a CR before the LF is not counted */
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || d[i] == '\n') {
            size_t len = i - start;
            if (i < n && len > 0 && d[i - 1] == '\r')
                len--;
            if (len > r->max_line)
                r->max_line = len;
            start = i + 1;
        }
    }
    /* header section */
    size_t pos = 0;
    r->header_len = 0;
    bool done = false;
    while (pos < n && !done) {
        const char *lf = memchr(d + pos, '\n', n - pos);
        size_t end = lf ? (size_t)(lf - d) : n;   /* index of LF or n */
        size_t len = end - pos;
        bool terminated = lf != NULL;
        if (terminated && (len == 0 || (len == 1 && d[pos] == '\r'))) {
            r->header_len = end + 1;   /* the empty line belongs to the section */
            done = true;
            break;
        }
        bool cont = pos > 0 && (d[pos] == ' ' || d[pos] == '\t');
        size_t k = pos;
        while (k < end && name_char((unsigned char)d[k]))
            k++;
        bool field = k > pos && k < end && d[k] == ':';
        if (!cont && !field) {
            r->header_len = pos;
            done = true;
            break;
        }
        if (field) {
            struct ref_field *f = &r->fields[r->nfields++];
            f->name = pos;
            f->name_len = k - pos;
            f->value = k + 1;
        }
        if (r->nfields)
            r->fields[r->nfields - 1].end = terminated ? end + 1 : n;
        pos = terminated ? end + 1 : n;
        r->header_len = pos;
    }
}

/* Reference unfolding: drop each LF and one CR right before it, trim WSP. */
static size_t ref_unfold(const char *d, size_t from, size_t to, char *out)
{
    size_t o = 0;
    for (size_t k = from; k < to; k++) {
        if (d[k] == '\n') {
            if (o && out[o - 1] == '\r' && d[k - 1] == '\r')
                o--;
            continue;
        }
        out[o++] = d[k];
    }
    size_t a = 0;
    while (a < o && (out[a] == ' ' || out[a] == '\t'))
        a++;
    while (o > a && (out[o - 1] == ' ' || out[o - 1] == '\t'))
        o--;
    memmove(out, out + a, o - a);
    return o - a;
}

struct visit {
    const char *d;
    const struct ref *r;
    size_t seen;
    char *tmp;
    const char *only;   /* name looked up, or NULL */
};

static void visit_cb(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct visit *v = ctx;
    CHECK(memchr(value, '\n', vlen) == NULL);
    CHECK(value[vlen] == '\0');
    if (v->only) {
        CHECK(ascii_caseeq(name, nlen, v->only));
        v->seen++;
        return;
    }
    CHECK(v->seen < v->r->nfields);
    const struct ref_field *f = &v->r->fields[v->seen++];
    CHECK(name == v->d + f->name && nlen == f->name_len);
    size_t want = ref_unfold(v->d, f->value, f->end, v->tmp);
    CHECK(vlen == want && memcmp(value, v->tmp, vlen) == 0);
}

static bool same_scan(const struct msg_scan *a, const struct msg_scan *b)
{
    return a->size == b->size && a->header_len == b->header_len &&
           a->headers_done == b->headers_done && a->bare_lf == b->bare_lf &&
           a->bare_cr == b->bare_cr && a->nul == b->nul && a->eight_bit == b->eight_bit &&
           a->max_line_seen == b->max_line_seen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    uint64_t seed = 0xC0FFEEull ^ size;
    for (size_t i = 0; i < size && i < 64; i++)
        seed = (seed ^ data[i]) * 0x100000001B3ull;
    if (seed == 0)
        seed = 1;
    struct msg_scan whole, bytes, pieces;
    scan(d, size, 0, seed, &whole);
    scan(d, size, 1, seed, &bytes);
    scan(d, size, 2, seed, &pieces);
    CHECK(same_scan(&whole, &bytes));
    CHECK(same_scan(&whole, &pieces));

    struct ref r;
    reference(d, size, &r);
    CHECK(whole.size == size);
    CHECK(whole.headers_done);
    CHECK(whole.bare_lf == r.bare_lf);
    CHECK(whole.bare_cr == r.bare_cr);
    CHECK(whole.nul == r.nul);
    CHECK(whole.eight_bit == r.eight_bit);
    CHECK(whole.max_line_seen == r.max_line);
    CHECK(whole.header_len == r.header_len);

    /* header lookup over the section, in an exact-size heap copy */
    size_t hl = (size_t)whole.header_len;
    char *hdr = xmalloc(hl ? hl : 1);
    memcpy(hdr, d, hl);
    struct visit v = { .d = hdr, .r = &r, .seen = 0, .tmp = xmalloc(hl + 1), .only = NULL };
    int count = msg_headers_each(hdr, hl, NULL, visit_cb, &v);
    CHECK(count >= 0 && (size_t)count == r.nfields && v.seen == r.nfields);
    CHECK(msg_headers_each(hdr, hl, NULL, NULL, NULL) == count);
    if (r.nfields && r.fields[0].name_len < 256) {
        char name[256];
        memcpy(name, hdr + r.fields[0].name, r.fields[0].name_len);
        name[r.fields[0].name_len] = '\0';
        struct visit w = { .d = hdr, .r = &r, .seen = 0, .tmp = NULL, .only = name };
        int c2 = msg_headers_each(hdr, hl, name, visit_cb, &w);
        CHECK(c2 >= 1 && (size_t)c2 == w.seen);
    }
    free(v.tmp);
    free(hdr);
    free(r.fields);
    return 0;
}
