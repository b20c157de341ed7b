/* smtp_parser.h - pure SMTP framing: bytes in, events out.
 *
 * The parser owns the session's input buffer. The connection reads straight
 * into it (smtp_parser_reserve / smtp_parser_commit), then the session takes
 * events one at a time with smtp_parser_next() until it returns
 * SMTP_EV_NONE (need more bytes). Event pointers point into the parser's
 * buffer and stay valid only until the next call into the parser.
 *
 * Framing is CRLF only. A bare LF or bare CR never ends a command line or a
 * data line, and never starts one: "\n.\n", "\r\n.\n", "\n.\r\n" do not end
 * DATA; only "<CRLF>.<CRLF>" does (the CRLF that ended the DATA command
 * counts as the first one). Lines are (ptr, len), never NUL-terminated, so
 * an embedded NUL is just a byte.
 *
 * No socket, no libev, no Lua. */
#ifndef KURIR_SMTP_PARSER_H
#define KURIR_SMTP_PARSER_H

#include <stddef.h>
#include <stdint.h>
#include "proto/util.h"

enum smtp_mode {
    SMTP_MODE_COMMAND,   /* CRLF-terminated command lines */
    SMTP_MODE_DATA,      /* DATA body until <CRLF>.<CRLF>, dot-unstuffed */
    SMTP_MODE_BDAT,      /* exactly N raw octets (RFC 3030), then command mode */
};

enum smtp_event_type {
    SMTP_EV_NONE = 0,       /* no complete event buffered; feed more bytes */
    SMTP_EV_COMMAND,        /* ptr/len: one command line without its CRLF */
    SMTP_EV_LINE_TOO_LONG,  /* a command line exceeded the limit; its bytes
                               were skipped up to and including the next CRLF.
                               Emitted once per over-long line, when its CRLF
                               arrives. len = bytes skipped (excl. CRLF). */
    SMTP_EV_DATA,           /* ptr/len: message bytes, dot-unstuffed, CRLFs
                               kept. A run may span many lines or be part of
                               one; concatenating all runs gives the message. */
    SMTP_EV_DATA_END,       /* "<CRLF>.<CRLF>" seen; parser is back in command
                               mode. The final CRLF before the dot belongs to
                               the message and was already emitted as DATA. */
    SMTP_EV_BDAT,           /* ptr/len: raw chunk octets */
    SMTP_EV_BDAT_END,       /* the N octets of this BDAT are complete; back in
                               command mode */
};

struct smtp_event {
    enum smtp_event_type type;
    const char *ptr;
    size_t len;
};

struct smtp_parser {
    struct buf in;          /* bytes received, not yet turned into events */
    enum smtp_mode mode;
    size_t max_line;        /* command line limit, in bytes, CRLF included */
    size_t scan;            /* COMMAND: bytes of in already searched for CRLF */
    int skipping;           /* COMMAND: inside an over-long line */
    size_t skipped;         /* COMMAND: bytes skipped so far */
    int data_state;         /* DATA: position relative to line start / CR */
    uint64_t bdat_left;     /* BDAT: octets still expected */
};

void smtp_parser_init(struct smtp_parser *p, size_t max_line);
void smtp_parser_free(struct smtp_parser *p);

/* Room for at least n bytes at the end of the input buffer. */
char *smtp_parser_reserve(struct smtp_parser *p, size_t n);
void smtp_parser_commit(struct smtp_parser *p, size_t n);
/* Copy-in convenience for tests: reserve + memcpy + commit. */
void smtp_parser_feed(struct smtp_parser *p, const void *bytes, size_t n);

/* Take the next event. Returns ev->type (SMTP_EV_NONE when more bytes are needed). */
enum smtp_event_type smtp_parser_next(struct smtp_parser *p, struct smtp_event *ev);

/* Switch mode. Call after the session accepted DATA (354) or BDAT n.
 * Bytes already buffered are parsed in the new mode. */
void smtp_parser_start_data(struct smtp_parser *p);
void smtp_parser_start_bdat(struct smtp_parser *p, uint64_t n);

/* Bytes buffered and not yet returned as events (pipelining: a command is
 * last in its group when nothing follows it). */
size_t smtp_parser_pending(const struct smtp_parser *p);
/* Bytes the input buffer can hold without growing (0 once shrunk). */
size_t smtp_parser_capacity(const struct smtp_parser *p);

/* Drop everything buffered (STARTTLS: CVE-2011-0411) and return to command mode. */
void smtp_parser_discard(struct smtp_parser *p);

/* Release buffer memory while idle (no pending bytes). */
void smtp_parser_shrink(struct smtp_parser *p);
/* The same, keeping the memory in pool (when it has room and the buffer
 * has the pool's size) for this or another parser of the same thread. */
void smtp_parser_shrink_to(struct smtp_parser *p, struct buf_pool *pool);
/* A shrunk parser (capacity 0) takes a buffer from pool, if it has one;
 * called before smtp_parser_reserve. */
void smtp_parser_take(struct smtp_parser *p, struct buf_pool *pool);

#endif
