/* msg_scan.h - pure scanner over message content as it arrives (the
 * dot-unstuffed DATA stream or the raw BDAT stream, in any split).
 *
 * It watches for bare LF / bare CR, over-long lines, NUL bytes, and where
 * the header section ends (the first empty line, or the first line that is
 * neither a header field nor a continuation). It keeps no copy of the
 * message; the spool file does. */
#ifndef KURIR_MSG_SCAN_H
#define KURIR_MSG_SCAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

struct msg_scan {
    uint64_t size;          /* bytes seen */
    uint64_t header_len;    /* bytes of header section incl. its terminating
                               empty line; valid once headers_done */
    bool headers_done;
    bool bare_lf;           /* an LF not preceded by CR */
    bool bare_cr;           /* a CR not followed by LF */
    bool nul;               /* a NUL byte */
    bool eight_bit;         /* an octet >= 0x80 */
    size_t max_line_seen;   /* longest line, CRLF excluded */
    /* internal */
    size_t line_len;
    int prev;               /* previous byte, -1 at start */
    int hstate;
};

void msg_scan_init(struct msg_scan *m);
void msg_scan_feed(struct msg_scan *m, const char *p, size_t n);
/* Call at end of message (handles a final CR, unterminated last line). */
void msg_scan_finish(struct msg_scan *m);

/* Header lookup over a header section held in memory (as read back from
 * the spool): calls fn for every field whose name equals `name`
 * (case-insensitive), with the unfolded value (leading WSP trimmed, CRLF
 * WSP folding replaced by the WSP). Returns the number of matches.
 * name == NULL visits every field. The callback gets a scratch buffer
 * valid only during the call. */
typedef void (*msg_header_fn)(void *ctx, const char *name, size_t nlen,
                              const char *value, size_t vlen);
int msg_headers_each(const char *hdr, size_t len, const char *name, msg_header_fn fn, void *ctx);

#endif
