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

static bool has_high_bit(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > 256 ? i + 256 : n;
        unsigned char acc = 0;
        for (; i < end; i++)
            acc |= p[i];
        if (acc & 0x80)
            return true;
    }
    return false;
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
    if (!m->eight_bit && has_high_bit(p, n))
        m->eight_bit = true;
    if (!m->nul && memchr(p, '\0', n))
        m->nul = true;
    if (m->prev == '\r' && p[0] != '\n')
        m->bare_cr = true;

    const unsigned char *pos = p;
    while (pos < end) {
        const unsigned char *lf = memchr(pos, '\n', (size_t)(end - pos));
        if (!lf) {
            size_t seg = (size_t)(end - pos);
            /* a CR as the last byte is decided by the next feed or finish */
            if (!m->bare_cr && seg > 1 && memchr(pos, '\r', seg - 1))
                m->bare_cr = true;
            m->line_len = size_add(m->line_len, seg);
            break;
        }
        size_t seg = (size_t)(lf - pos);
        bool crlf = seg ? lf[-1] == '\r' : (pos == p && m->prev == '\r');
        if (!crlf)
            m->bare_lf = true;
        if (!m->bare_cr && seg > 1 && memchr(pos, '\r', seg - 1))
            m->bare_cr = true;
        note_line(m, m->line_len + seg - (crlf ? 1 : 0));
        m->line_len = 0;
        pos = lf + 1;
    }
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
                    scratch = xmalloc(size_add(len, 1));
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
    free(scratch);
    return count;
}
