/* msg_scan.c - one pass over message content as it streams in (bare LF/CR,
 * NUL, 8-bit, longest line, end of the header section), and header field
 * lookup with unfolding over a header section read back into memory.
 *
 * Lines inside a message end at LF; a CR right before the LF is part of the
 * terminator and not counted in line lengths. (With CRLF-only content, the
 * normal case, this is plain CRLF lines; with bare LF accepted by policy,
 * header lookup still works.) Keeps no copy of the message. Uses util.h. */
#include "proto/msg_scan.h"
#include "proto/util.h"

#include <stdlib.h>
#include <string.h>

/* hstate: where the scanner is inside the header section. While not done,
 * header_len holds the offset of the current line's first byte. */
enum {
    H_FIRST = 0,  /* start of the first line: no field to continue yet */
    H_START,      /* start of a later line */
    H_CR,         /* a line that so far is just CR (empty line if LF follows) */
    H_NAME,       /* inside a field name */
    H_BODY,       /* rest of a field or continuation line, up to its LF */
    H_DONE,
};

void msg_scan_init(struct msg_scan *m)
{
    memset(m, 0, sizeof(*m));
    m->prev = -1;
    m->hstate = H_FIRST;
}

static bool is_name_char(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

static bool is_wsp(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static void end_headers(struct msg_scan *m, uint64_t header_len)
{
    m->header_len = header_len;
    m->headers_done = true;
    m->hstate = H_DONE;
}

/* Header-section state machine. Runs only until the section ends; field
 * bodies are skipped with memchr. base is the stream offset of p[0]. */
static void scan_headers(struct msg_scan *m, const unsigned char *p, size_t n, uint64_t base)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        switch (m->hstate) {
        case H_FIRST:
        case H_START:
            if (c == '\n') {
                end_headers(m, base + i + 1);
                return;
            }
            if (c == '\r') {
                m->hstate = H_CR;
            } else if (is_wsp(c) && m->hstate == H_START) {
                m->hstate = H_BODY;
            } else if (is_name_char(c)) {
                m->hstate = H_NAME;
            } else {
                end_headers(m, m->header_len);
                return;
            }
            i++;
            break;
        case H_CR:
            end_headers(m, c == '\n' ? base + i + 1 : m->header_len);
            return;
        case H_NAME:
            if (c == ':')
                m->hstate = H_BODY;
            else if (!is_name_char(c)) {
                end_headers(m, m->header_len);
                return;
            }
            i++;
            break;
        case H_BODY: {
            const unsigned char *lf = memchr(p + i, '\n', n - i);
            if (!lf)
                return;
            i = (size_t)(lf - p) + 1;
            m->header_len = base + i;
            m->hstate = H_START;
            break;
        }
        default:
            return;
        }
    }
}

/* One pass over the chunk for what needs no line structure: any octet
 * >= 0x80, any NUL, and how many CRs (a loop the compiler vectorises). */
struct chunk_stats {
    bool high, nul;
    size_t cr;
};

static struct chunk_stats chunk_scan(const unsigned char *p, size_t n)
{
    struct chunk_stats st = {false, false, 0};
    size_t i = 0;
    while (i < n) {
        /* byte-wide accumulators (at most 255 CRs per block) vectorise;
         * 240 bytes, a multiple of the vector width, leave no bytes to
         * the scalar tail loop but in the last block */
        size_t end = n - i > 240 ? i + 240 : n;
        unsigned char acc = 0, nul = 0, cr = 0;
        for (; i < end; i++) {
            unsigned char c = p[i];
            acc |= c;
            nul |= c == 0;
            cr += c == '\r';
        }
        st.high |= (acc & 0x80) != 0;
        st.nul |= nul != 0;
        st.cr += cr;
    }
    return st;
}

static void note_line(struct msg_scan *m, size_t len)
{
    if (len > m->max_line_seen)
        m->max_line_seen = len;
}

void msg_scan_feed(struct msg_scan *m, const char *data, size_t n)
{
    if (n == 0)
        return;
    const unsigned char *p = (const unsigned char *)data;
    const unsigned char *end = p + n;

    if (m->hstate != H_DONE)
        scan_headers(m, p, n, m->size);
    struct chunk_stats st = chunk_scan(p, n);
    if (st.high)
        m->eight_bit = true;
    if (st.nul)
        m->nul = true;
    if (m->prev == '\r' && p[0] != '\n')
        m->bare_cr = true;

    /* Lines end at LF (one memchr per line, for the longest line). A CR
     * of this chunk is bare unless an LF follows it: every CR is either
     * one of the `paired` CRs before an LF here, the last byte (decided by
     * the next feed or finish), or bare. */
    size_t paired = 0;
    const unsigned char *pos = p;
    while (pos < end) {
        const unsigned char *lf = memchr(pos, '\n', (size_t)(end - pos));
        if (!lf) {
            m->line_len = size_add(m->line_len, (size_t)(end - pos));
            break;
        }
        size_t seg = (size_t)(lf - pos);
        bool crlf = seg ? lf[-1] == '\r' : (pos == p && m->prev == '\r');
        if (!crlf)
            m->bare_lf = true;
        else if (seg)
            paired++;   /* that CR is in this chunk */
        note_line(m, m->line_len + seg - (crlf ? 1 : 0));
        m->line_len = 0;
        pos = lf + 1;
    }
    if (st.cr > paired + (p[n - 1] == '\r'))
        m->bare_cr = true;
    m->size += n;
    m->prev = p[n - 1];
}

void msg_scan_finish(struct msg_scan *m)
{
    if (m->prev == '\r')
        m->bare_cr = true;
    if (m->line_len)
        note_line(m, m->line_len);
    m->line_len = 0;
    if (!m->headers_done) {
        /* An unfinished field still counts; an unfinished name or a lone CR
         * is not a field, so the section ends before that line. */
        end_headers(m, m->hstate == H_BODY || m->hstate == H_START ? m->size : m->header_len);
    }
}

static size_t line_end(const char *s, size_t len, size_t from)
{
    const char *lf = memchr(s + from, '\n', len - from);
    return lf ? (size_t)(lf - s) : len;
}

int msg_headers_each(const char *hdr, size_t len, const char *name, msg_header_fn fn, void *ctx)
{
    char small[1024];   /* a value fits in the section: most sections fit here */
    char *scratch = NULL;
    int count = 0;
    size_t pos = 0;
    while (pos < len) {
        size_t i = pos;
        while (i < len && is_name_char((unsigned char)hdr[i]))
            i++;
        if (i == pos || i >= len || hdr[i] != ':')
            break;   /* empty line, or not a field: the section ends here */
        size_t name_len = i - pos;
        size_t vstart = i + 1;
        size_t next = line_end(hdr, len, vstart);
        next = next < len ? next + 1 : len;
        while (next < len && is_wsp((unsigned char)hdr[next])) {
            size_t e = line_end(hdr, len, next);
            next = e < len ? e + 1 : len;
        }
        if (!name || ascii_caseeq(hdr + pos, name_len, name)) {
            count++;
            if (fn) {
                if (!scratch)
                    scratch = len < sizeof(small) ? small : xmalloc(size_add(len, 1));
                /* Unfold: drop every line terminator (LF and a CR before it). */
                size_t vlen = 0;
                for (size_t k = vstart; k < next; k++) {
                    if (hdr[k] == '\n') {
                        if (vlen && scratch[vlen - 1] == '\r' && hdr[k - 1] == '\r')
                            vlen--;
                        continue;
                    }
                    scratch[vlen++] = hdr[k];
                }
                size_t a = 0;
                while (a < vlen && is_wsp((unsigned char)scratch[a]))
                    a++;
                while (vlen > a && is_wsp((unsigned char)scratch[vlen - 1]))
                    vlen--;
                scratch[vlen] = '\0';
                fn(ctx, hdr + pos, name_len, scratch + a, vlen - a);
            }
        }
        pos = next;
    }
    if (scratch != small)
        free(scratch);
    return count;
}
