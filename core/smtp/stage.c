/* stage.c - the table of SMTP stages and stage_apply(), the one function
 * that maps a hook result (nil/true, false, code[, text], error) to a reply
 * at a stage; see stage.h. Pure: no session, socket or Lua state; unit-
 * tested in tests/unit/test_stage.c. */
#include "smtp/stage.h"

#include <string.h>

static const struct stage_def stage_table[STAGE_COUNT] = {
    [STAGE_CONNECT]    = { "connect", HOOK_CONNECT, R_GREETING, R_CONNECT_REJECT, R_HOOK_ERROR_CLOSE,
                           STAGE_F_GREETING },
    [STAGE_HELO]       = { "helo", HOOK_HELO, R_ACCEPT, R_HELO_REJECT, R_HOOK_ERROR, 0 },
    [STAGE_STARTTLS]   = { "starttls", HOOK_STARTTLS, R_COUNT, R_CONNECT_REJECT, R_HOOK_ERROR, STAGE_F_CLOSES },
    [STAGE_AUTH]       = { "auth", HOOK_AUTH, R_AUTH_OK, R_AUTH_FAILED, R_HOOK_ERROR, STAGE_F_DELAYED },
    [STAGE_MAIL]       = { "mail", HOOK_MAIL, R_MAIL_OK, R_MAIL_REJECT, R_HOOK_ERROR, 0 },
    [STAGE_RCPT]       = { "rcpt", HOOK_RCPT, R_RCPT_OK, R_RCPT_REJECT, R_HOOK_ERROR, STAGE_F_JUNK },
    [STAGE_DATA]       = { "data", HOOK_DATA, R_QUEUED, R_DATA_REJECT, R_HOOK_ERROR, STAGE_F_QUEUE_ID },
    [STAGE_VRFY]       = { "vrfy", HOOK_VRFY, R_VRFY_DEFAULT, R_GENERIC_REJECT, R_HOOK_ERROR, 0 },
    [STAGE_EXPN]       = { "expn", HOOK_EXPN, R_EXPN_DEFAULT, R_EXPN_DEFAULT, R_HOOK_ERROR, 0 },
    [STAGE_COMMAND]    = { "command", HOOK_COMMAND, R_UNKNOWN_CMD, R_UNKNOWN_CMD, R_HOOK_ERROR, STAGE_F_UNKNOWN },
    [STAGE_RESET]      = { "reset", HOOK_RESET, R_ACCEPT, R_GENERIC_REJECT, R_HOOK_ERROR, 0 },
    [STAGE_OTHER]      = { "other", HOOK_NONE, R_ACCEPT, R_GENERIC_REJECT, R_HOOK_ERROR, 0 },
    [STAGE_TX_END]     = { "tx_end", HOOK_RESET, R_ACCEPT, R_ACCEPT, R_ACCEPT, STAGE_F_IGNORED },
    [STAGE_DISCONNECT] = { "disconnect", HOOK_DISCONNECT, R_ACCEPT, R_ACCEPT, R_ACCEPT, STAGE_F_IGNORED },
};

const struct stage_def *stage_get(enum reply_stage st)
{
    if ((unsigned)st >= STAGE_COUNT)
        st = STAGE_OTHER;
    return &stage_table[st];
}

void stage_apply(enum reply_stage st, const struct hook_result *r, enum err_policy pol,
                 struct stage_reply *out)
{
    const struct stage_def *d = stage_get(st);
    memset(out, 0, sizeof(*out));
    out->id = R_COUNT;
    if (d->flags & STAGE_F_IGNORED) {
        out->ok = true;
        return;
    }
    out->send = true;
    int kind = r->kind;
    if (kind == HR_ERROR)
        kind = pol == ERR_REJECT ? HR_REJECT : pol == ERR_CONTINUE ? HR_DEFAULT : HR_ERROR;
    switch (kind) {
    case HR_DEFAULT:
        out->ok = true;
        out->id = d->ok;
        break;
    case HR_REJECT:
        out->id = d->reject;
        break;
    case HR_REPLY:
        out->ok = r->code >= 200 && r->code < 400;
        out->code = r->code;
        out->text = r->text;
        out->tlen = r->text ? r->tlen : 0;
        break;
    default:   /* HR_ERROR, on_error = "tempfail" */
        out->id = d->error;
        out->hook_error = true;
        out->force_esc = true;
        break;
    }

    if (d->flags & STAGE_F_GREETING) {
        /* RFC 5321 3.1, 4.1.1.1: the only greetings are 220, 421 and 554 */
        if (kind == HR_REPLY && out->ok) {
            if (out->tlen) {
                out->code = 220;
            } else {
                out->id = R_GREETING;
                out->code = 0;
            }
        } else if (kind == HR_REPLY) {
            out->code = out->code < 500 ? 421 : 554;
            out->refuse = out->code == 554;
            out->ok = false;
        } else if (kind == HR_REJECT) {
            out->refuse = true;
        }
    }
    if ((d->flags & STAGE_F_CLOSES) && !out->ok) {
        /* no command is outstanding: say why, then close */
        if (kind == HR_REPLY)
            out->code = out->code >= 500 ? 554 : 421;
        else if (kind == HR_ERROR)
            out->code = 421;
        out->close = true;
    }
    if (d->flags & STAGE_F_UNKNOWN) {
        if (kind == HR_DEFAULT || kind == HR_REJECT) {
            out->ok = false;
            out->error = true;
        } else if (kind == HR_REPLY && out->code >= 500) {
            out->error = true;
        }
    }
    if (out->ok && d->ok == R_COUNT) {
        out->send = false;   /* a stage without a success reply (starttls: its 220 came before) */
        out->id = R_COUNT;
        return;
    }
    if ((d->flags & STAGE_F_QUEUE_ID) && kind == HR_REPLY && out->code / 100 == 2 && out->tlen == 0)
        out->id = d->ok;   /* the standard acceptance with the hook's code */

    if (out->id != R_COUNT) {
        const struct reply_def *row = reply_get(out->id);
        if (out->code == 0 || out->code / 100 != row->code / 100)
            out->code = row->code;
        out->text = NULL;
        out->tlen = 0;
    }
    if (out->code == 421)
        out->close = true;
    if ((d->flags & STAGE_F_JUNK) && !out->ok && !out->close)
        out->junk = true;
    if ((d->flags & STAGE_F_DELAYED) && !out->ok && !out->close) {
        out->delay = true;
        out->error = true;
    }
}

void stage_format(struct buf *out, enum reply_stage st, const struct stage_reply *r, bool enhanced,
                  struct reply_cache *cache, const char *host, const char *arg)
{
    if (!r->send)
        return;
    if (r->id != R_COUNT)
        reply_cache_put(cache, out, r->id, r->code, enhanced || r->force_esc, host, arg);
    else
        reply_format(out, r->code, NULL, r->text, r->tlen, enhanced || r->force_esc, st, host);
}
