/* stage.h - the one table of SMTP stages and the one function that turns
 * what a hook returned into the reply and its consequences (SPEC 2.1).
 *
 * A stage is a point of the dialogue a hook decides: connect, helo, auth,
 * mail, rcpt, the end of data, starttls, an unknown command, ... Each row
 * says which hook decides it, the reply for nil/true (success), for false
 * (the standard rejection, also a hook error under on_error = "reject") and
 * for a hook error under "tempfail", and the stage's own rules (flags).
 * stage_apply() knows nothing of sessions or sockets: the session layer
 * sends what it decided (session_reply_stage) and the command's proceed
 * step acts on `ok`. */
#ifndef KURIR_STAGE_H
#define KURIR_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include "lua/engine.h"
#include "proto/reply.h"

/* What a hook returned, as engine.c read it (convert_result). */
struct hook_result {
    enum { HR_DEFAULT, HR_REJECT, HR_REPLY, HR_ERROR } kind;
    int code;            /* HR_REPLY */
    const char *text;    /* HR_REPLY: points into session->hook_text; may be empty */
    size_t tlen;
};

/* the stage's own rules */
#define STAGE_F_GREETING  0x01   /* connect: 2xx -> 220, 4xx -> 421 and close, 5xx -> 554 and only QUIT */
#define STAGE_F_CLOSES    0x02   /* starttls: a refusal is 421 (4xx) or 554 (5xx), then close */
#define STAGE_F_UNKNOWN   0x04   /* command: nil/false leave the verb unknown; a 5xx counts as an error */
#define STAGE_F_QUEUE_ID  0x08   /* data end: the success reply (also a bare 2xx) names the queue id */
#define STAGE_F_IGNORED   0x10   /* the result is ignored (reset after a transaction, disconnect) */
#define STAGE_F_JUNK      0x20   /* rcpt: a refusal counts toward limits.junk_commands */
#define STAGE_F_DELAYED   0x40   /* auth: a refusal (but 421) waits auth.failure_delay, counts as an error */

struct stage_def {
    const char *name;        /* for logs and tests */
    enum hook hook;          /* HOOK_NONE: no hook decides (the result is always nil) */
    enum reply_id ok;        /* nil, true; R_COUNT: success sends nothing */
    enum reply_id reject;    /* false; a hook error under on_error = "reject" */
    enum reply_id error;     /* a hook error under on_error = "tempfail" (enhanced code always shown) */
    unsigned flags;
};

const struct stage_def *stage_get(enum reply_stage st);

/* What to answer and what follows. */
struct stage_reply {
    bool ok;                 /* the stage's action goes ahead (2xx/3xx, nil, true) */
    bool send;               /* false: nothing is sent (ignored stages) */
    enum reply_id id;        /* a row of reply.c, or R_COUNT: the hook's code and text */
    int code;                /* the code that goes out */
    const char *text;        /* id == R_COUNT: the hook's text (empty: the default for code) */
    size_t tlen;
    bool force_esc;          /* the enhanced code even before EHLO (hook errors) */
    bool close;              /* close after the reply (every 421) */
    bool refuse;             /* connect: every later command but QUIT gets 503 */
    bool error;              /* counts toward limits.errors */
    bool junk;               /* counts toward limits.junk_commands */
    bool delay;              /* answered after auth.failure_delay */
    bool hook_error;         /* the hook failed (tempfail) */
};

/* The one place where a hook result becomes a reply: r at stage st, with
 * the hook's on_error policy pol for HR_ERROR. */
void stage_apply(enum reply_stage st, const struct hook_result *r, enum err_policy pol,
                 struct stage_reply *out);

/* Append the reply out decided to buf; arg replaces "%a" in a row's text
 * (the queue id at the end of DATA). A row comes from cache (formatted
 * once per engine; NULL: formatted here). */
void stage_format(struct buf *out, enum reply_stage st, const struct stage_reply *r, bool enhanced,
                  struct reply_cache *cache, const char *host, const char *arg);

#endif
