/* reply.h - every SMTP reply the engine sends comes from here: one table of
 * default texts and enhanced status codes (RFC 3463), and one formatter.
 * Pure: writes into a struct buf. */
#ifndef KURIR_REPLY_H
#define KURIR_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include "proto/util.h"

/* The stage a reply answers; picks the default enhanced code for a bare
 * code (e.g. 550 at RCPT -> 5.1.1, 550 at MAIL -> 5.1.0, 552 -> 5.3.4). */
enum reply_stage {
    STAGE_CONNECT, STAGE_HELO, STAGE_STARTTLS, STAGE_AUTH, STAGE_MAIL, STAGE_RCPT,
    STAGE_DATA, STAGE_VRFY, STAGE_EXPN, STAGE_COMMAND, STAGE_RESET, STAGE_OTHER,
    STAGE_TX_END,        /* the reset hook after a transaction: result ignored */
    STAGE_DISCONNECT,    /* result ignored */
    STAGE_COUNT
};

/* Canned replies. reply_get() gives code, enhanced code and text. */
enum reply_id {
    R_GREETING,          /* 220 <host> ESMTP kurir */
    R_CLOSING,           /* 221 2.0.0 Bye */
    R_ACCEPT,                /* 250 2.0.0 OK */
    R_MAIL_OK,           /* 250 2.1.0 Sender OK */
    R_RCPT_OK,           /* 250 2.1.5 Recipient OK */
    R_DATA_GO,           /* 354 End data with <CR><LF>.<CR><LF> */
    R_VRFY_DEFAULT,      /* 252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery */
    R_EXPN_DEFAULT,      /* 502 5.5.1 EXPN not supported */
    R_HELP,              /* 214 2.0.0 Commands: HELO EHLO ... */
    R_STARTTLS_GO,       /* 220 2.0.0 Ready to start TLS */
    R_AUTH_OK,           /* 235 2.7.0 Authentication successful */
    R_UNKNOWN_CMD,       /* 500 5.5.1 Command unrecognized */
    R_LINE_TOO_LONG,     /* 500 5.5.6 Line too long */
    R_SYNTAX,            /* 501 5.5.4 Syntax error in parameters or arguments */
    R_HELO_SYNTAX,       /* 501 5.5.4 Syntax: HELO/EHLO hostname */
    R_NOT_IMPLEMENTED,   /* 502 5.5.1 Command not implemented */
    R_BAD_SEQUENCE,      /* 503 5.5.1 Bad sequence of commands */
    R_NEED_HELO,         /* 503 5.5.1 Send HELO/EHLO first */
    R_NEED_MAIL,         /* 503 5.5.1 Need MAIL command */
    R_NEED_RCPT,         /* 503 5.5.1 Need RCPT command */
    R_NESTED_MAIL,       /* 503 5.5.1 Sender already specified */
    R_REFUSED_SESSION,   /* 503 5.7.0 Session refused; only QUIT is allowed */
    R_PARAM_UNKNOWN,     /* 555 5.5.4 Unsupported parameter */
    R_MECH_UNKNOWN,      /* 504 5.5.4 Unrecognized authentication mechanism */
    R_AUTH_CANCELLED,    /* 501 5.0.0 Authentication cancelled */
    R_AUTH_B64,          /* 501 5.5.2 Cannot decode response */
    R_AUTH_FAILED,       /* 535 5.7.8 Authentication credentials invalid */
    R_AUTH_REQUIRED,     /* 530 5.7.0 Authentication required */
    R_AUTH_NEEDS_TLS,    /* 538 5.7.11 Encryption required for requested authentication mechanism */
    R_TLS_REQUIRED,      /* 530 5.7.0 Must issue a STARTTLS command first */
    R_ALREADY_TLS,       /* 503 5.5.1 TLS already active */
    R_ALREADY_AUTH,      /* 503 5.5.1 Already authenticated */
    R_MAIL_REJECT,       /* 550 5.1.0 Sender rejected */
    R_RCPT_REJECT,       /* 550 5.1.1 Recipient rejected */
    R_DATA_REJECT,       /* 554 5.6.0 Message rejected */
    R_HELO_REJECT,       /* 550 5.7.1 Hello rejected */
    R_CONNECT_REJECT,    /* 554 5.7.1 Connection refused */
    R_GENERIC_REJECT,    /* 550 5.7.1 Rejected */
    R_TOO_MANY_RCPTS,    /* 452 4.5.3 Too many recipients */
    R_SIZE_EXCEEDED,     /* 552 5.3.4 Message size exceeds fixed maximum message size */
    R_HEADER_TOO_BIG,    /* 552 5.3.4 Message header section exceeds the limit */
    R_BARE_LF,           /* 554 5.6.0 Message contains bare LF line endings (not CRLF); fix the client */
    R_DATA_LINE_TOO_LONG,/* 554 5.6.0 Message contains a line longer than the limit */
    R_HOOK_ERROR,        /* 451 4.3.0 Temporary server error, try again later */
    R_NO_DELIVERY,       /* 451 4.3.5 No delivery configured for <arg> (kurir.default) */
    R_LOCAL_ERROR,       /* 451 4.3.0 Local error in processing */
    R_TOO_MANY_CONNS,    /* 421 4.7.0 <host> Too many connections, try again later */
    R_TOO_MANY_ERRORS,   /* 421 4.7.0 <host> Too many errors, closing connection */
    R_TIMEOUT,           /* 421 4.4.2 <host> Timeout, closing connection */
    R_SHUTDOWN,          /* 421 4.3.2 <host> Service shutting down, closing connection */
    R_BDAT_SYNTAX,       /* 501 5.5.4 Syntax: BDAT size [LAST] */
    R_BDAT_MIXED,        /* 503 5.5.1 DATA not allowed after BDAT */
    R_BARE_CR,           /* 554 5.6.0 Message contains bare CR (not part of CRLF) */
    R_TOO_SLOW,          /* 421 4.4.2 <host> Data too slow, closing connection */
    R_TOO_MANY_JUNK,     /* 421 4.7.0 <host> Too many commands without a transaction, closing connection */
    R_SPOOL_FULL,        /* 452 4.3.1 Insufficient system storage, try again later */
    R_HOOK_ERROR_CLOSE,  /* 421 4.3.0 <host> Temporary server error, closing connection */
    R_QUEUED,            /* 250 2.0.0 Message accepted: queued as <id> */
    R_BDAT_CHUNK,        /* 250 2.0.0 <n> octets received */
    R_MAIL_ADDR_SYNTAX,  /* 501 5.1.7 Syntax error (or the parser's reason) */
    R_RCPT_ADDR_SYNTAX,  /* 501 5.1.3 Syntax error (or the parser's reason) */
    R_PATH_SYNTAX,       /* 501 5.5.4 Syntax error (or the parser's reason) */
    R_SIZE_SYNTAX,       /* 501 5.5.4 Syntax: SIZE=<number> */
    R_BODY_SYNTAX,       /* 501 5.5.4 Syntax: BODY=7BIT|8BITMIME */
    R_SMTPUTF8_VALUE,    /* 501 5.5.4 SMTPUTF8 takes no value */
    R_AUTH_PARAM_SYNTAX, /* 501 5.5.4 Syntax: AUTH=<xtext> */
    R_RET_SYNTAX,        /* 501 5.5.4 Syntax: RET=FULL|HDRS */
    R_ENVID_SYNTAX,      /* 501 5.5.4 Syntax: ENVID=<xtext of at most 100 characters> */
    R_NOTIFY_SYNTAX,     /* 501 5.5.4 Syntax: NOTIFY=NEVER or NOTIFY=SUCCESS,FAILURE,DELAY */
    R_ORCPT_SYNTAX,      /* 501 5.5.4 Syntax: ORCPT=addr-type;xtext */
    R_UTF8_ADDRESS,      /* 553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter */
    R_DELIVERY_FAILED,   /* 451 4.3.0 Delivery failed, try again later (Lua: kurir.reply) */
    R_QUEUE_FAILED,      /* 451 4.3.0 Could not queue the message, try again later */
    R_STORE_FAILED,      /* 451 4.3.0 Could not store the message, try again later */
    R_COUNT
};

struct reply_def {
    int code;
    const char *esc;     /* enhanced status code, e.g. "5.5.1"; NULL for none */
    const char *text;    /* "%h" is replaced by the host name, "%a" by the
                          * caller's argument (reply_canned_arg) */
};

const struct reply_def *reply_get(enum reply_id id);

/* The rows Lua may name (kurir.reply): "no_delivery" -> R_NO_DELIVERY, ...
 * R_COUNT for a name that is not one of them. */
enum reply_id reply_by_name(const char *name);
/* name of the i-th row Lua may name, NULL past the last (for listings) */
const char *reply_name_at(int i);

/* Default enhanced status code for a bare code at a stage (never NULL for
 * 2xx/4xx/5xx codes). */
const char *reply_default_esc(int code, enum reply_stage stage);

/* Default text for a code that came without one (e.g. hook returned 550). */
const char *reply_default_text(int code, enum reply_stage stage);

/* Append one complete reply to out.
 *  - text may contain "\n" (or "\r\n"): one reply line per line,
 *    "code-" on all but the last, "code " on the last;
 *  - lines over 510 bytes are wrapped onto further reply lines, never cut;
 *  - with enhanced = true, each line not already starting with an enhanced
 *    code (class digit matching code/100, ".x.y") gets `esc` (or the
 *    stage default when esc is NULL) prepended;
 *  - control characters other than TAB in text are replaced by '?';
 *  - host replaces "%h" in text when not NULL. */
void reply_format(struct buf *out, int code, const char *esc, const char *text, size_t tlen,
                  bool enhanced, enum reply_stage stage, const char *host);

/* Append a canned reply. */
void reply_canned(struct buf *out, enum reply_id id, bool enhanced, const char *host);

/* Append a canned reply with "%a" in its text replaced by arg (NULL: "");
 * code 0 keeps the row's code, another code of the same class replaces it
 * (the end of DATA answers a hook's bare 2xx with the row's text). */
void reply_canned_arg(struct buf *out, enum reply_id id, int code, bool enhanced, const char *host,
                      const char *arg);

/* Canned replies formatted once, then copied (a session answers MAIL, RCPT
 * and DATA with the same few rows, thousands of times per second).
 * reply_cache_put(c, ...) appends exactly what reply_canned_arg(out, id,
 * code, enhanced, host, arg) appends. A row is kept per `enhanced` as its
 * wire bytes; a row whose one-line text ends in "%a" keeps the bytes before
 * the argument, which then follows when it is short and printable (else,
 * for "%a" elsewhere and for a code other than the row's, the reply is
 * formatted as usual).
 * The cache belongs to one host string (an engine's hostname); another
 * host pointer empties it. A zeroed struct is an empty cache; c NULL
 * formats every time. */
struct reply_cache_row {
    char *wire;          /* NULL: not formatted yet */
    size_t len;          /* with arg_at_end: the bytes before the argument */
    bool arg_at_end;     /* "%a" ends the text: wire + arg + CRLF */
    bool each_time;      /* "%a" elsewhere: formatted on every use */
};

struct reply_cache {
    const char *host;
    struct reply_cache_row row[R_COUNT][2];
};

void reply_cache_put(struct reply_cache *c, struct buf *out, enum reply_id id, int code, bool enhanced,
                     const char *host, const char *arg);
void reply_cache_free(struct reply_cache *c);

/* The text of a row as a hook would return it: "esc text" ("%a" replaced
 * by arg, "%h" left for the formatter). Appends to out. */
void reply_row_text(struct buf *out, enum reply_id id, const char *arg);

/* True when s (len n) starts with an enhanced status code "d.ddd.ddd" whose
 * class digit is code/100 for 2/4/5; *esc_len receives its length. */
bool reply_has_esc(const char *s, size_t n, size_t *esc_len);

#endif
