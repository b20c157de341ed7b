/* cmd_mail.c - MAIL and RCPT: path and ESMTP parameter checks (grammar in
 * smtp_addr.c), size and recipient limits, the address objects the mail and
 * rcpt hooks get, and the transaction state they start or extend. */
#include <string.h>

#include "smtp/engine_session.h"
#include "smtp/session.h"

/* a bad path: the parser's reason in the row's reply (5.1.7 for a sender,
 * 5.1.3 for a recipient, 5.5.4 for the rest of the grammar) */
static enum cmd_check path_error(struct session *s, enum smtp_addr_error e, bool mail, const char *why)
{
    enum reply_id id = e != SMTP_ADDR_BAD_ADDRESS ? R_PATH_SYNTAX : mail ? R_MAIL_ADDR_SYNTAX : R_RCPT_ADDR_SYNTAX;
    session_reply_esc(s, id, why);
    return CHECK_REFUSED;
}

static enum cmd_check refuse(struct session *s, enum reply_id id)
{
    session_reply_esc(s, id, NULL);
    return CHECK_REFUSED;
}

/* limits.spool_reserve: below it no message is taken (RFC 5321 4.5.3.1.10:
 * 452 at MAIL, so the client has sent nothing it must send again). */
static bool spool_short(struct session *s)
{
    uint64_t reserve = s->eng->cfg.spool_reserve, avail;
    if (!reserve ||
        spool_probe_space(&s->eng->spool_probe, s->eng->cfg.spool, ev_now(s->conn.loop), &avail) < 0 ||
        avail >= reserve)
        return false;
    struct buf *b = session_log_begin(s, "warn", "spool_full");
    logfmt_str(b, "dir", s->eng->cfg.spool);
    logfmt_int(b, "available", (long long)avail);
    logfmt_int(b, "reserve", (long long)reserve);
    session_log_end(s);
    return true;
}

/* MAIL FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [AUTH=xtext] */
static enum cmd_check mail_check(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    struct smtp_path p;
    const char *why = NULL;
    enum smtp_addr_error e = smtp_path_parse(SMTP_PATH_MAIL, arg.ptr, arg.len, &p, &why);
    if (e != SMTP_ADDR_OK)
        return path_error(s, e, true, why);
    bool utf8 = false;
    uint64_t size = 0;
    for (int i = 0; i < p.nparams; i++) {
        const struct smtp_param *pr = &p.params[i];
        const char *k = pr->key.ptr;
        size_t kl = pr->key.len;
        if (ascii_caseeq(k, kl, "SIZE")) {
            unsigned long long v;
            if (!pr->value.ptr || !smtp_parse_u64(pr->value.ptr, pr->value.len, ~0ull, &v))
                return refuse(s, R_SIZE_SYNTAX);
            size = v;
        } else if (ascii_caseeq(k, kl, "BODY")) {
            if (!pr->value.ptr || !(ascii_caseeq(pr->value.ptr, pr->value.len, "7BIT") ||
                                    ascii_caseeq(pr->value.ptr, pr->value.len, "8BITMIME")))
                return refuse(s, R_BODY_SYNTAX);
        } else if (ascii_caseeq(k, kl, "SMTPUTF8")) {
            if (pr->value.ptr)
                return refuse(s, R_SMTPUTF8_VALUE);
            utf8 = true;
        } else if (ascii_caseeq(k, kl, "AUTH")) {
            char tmp[512];
            if (!pr->value.ptr || smtp_xtext_decode(pr->value.ptr, pr->value.len, tmp, sizeof(tmp)) < 0)
                return refuse(s, R_AUTH_PARAM_SYNTAX);
        } else if (ascii_caseeq(k, kl, "RET")) {   /* RFC 3461 4.3 */
            if (!pr->value.ptr || !(ascii_caseeq(pr->value.ptr, pr->value.len, "FULL") ||
                                    ascii_caseeq(pr->value.ptr, pr->value.len, "HDRS")))
                return refuse(s, R_RET_SYNTAX);
        } else if (ascii_caseeq(k, kl, "ENVID")) {   /* RFC 3461 4.4: xtext, at most 100 chars */
            char tmp[512];
            if (!pr->value.ptr || pr->value.len > 100 ||
                smtp_xtext_decode(pr->value.ptr, pr->value.len, tmp, sizeof(tmp)) < 0)
                return refuse(s, R_ENVID_SYNTAX);
        } else {
            session_reply(s, R_PARAM_UNKNOWN);
            return CHECK_REFUSED;
        }
    }
    enum reply_id limit = R_COUNT;
    if (p.utf8 && !utf8)
        limit = R_UTF8_ADDRESS;
    else if (size > s->eng->cfg.message_size)
        limit = R_SIZE_EXCEEDED;
    else if (spool_short(s))
        limit = R_SPOOL_FULL;
    if (limit == R_UTF8_ADDRESS) {
        session_reply_esc(s, limit, NULL);
        return CHECK_REPLIED;
    }
    if (limit != R_COUNT) {
        session_reply(s, limit);
        return CHECK_REPLIED;
    }
    a->env = envelope_new();
    envelope_set_from(a->env, &p);
    a->ref = engine_address_ref(s, a->env, -1);
    return CHECK_OK;
}

static void mail_proceed(struct session *s, const struct stage_reply *r)
{
    if (r->ok) {
        session_tx_begin(s);
        s->tx.env = s->args.env;   /* the transaction takes the reference */
        s->args.env = NULL;
        engine_tx_set_from(s, s->arg_ref);
        s->arg_ref = LUA_NOREF;
        s->state = SS_MAIL;
    } else {
        engine_release_ref(s, &s->arg_ref);
        envelope_unref(s->args.env);
        s->args.env = NULL;
    }
    session_reply_stage(s, STAGE_MAIL, r, NULL);
}

/* NEVER alone, or a list of SUCCESS, FAILURE, DELAY */
static bool notify_ok(const char *v, size_t n)
{
    if (ascii_caseeq(v, n, "NEVER"))
        return true;
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        if (!(ascii_caseeq(v + i, j - i, "SUCCESS") || ascii_caseeq(v + i, j - i, "FAILURE") ||
              ascii_caseeq(v + i, j - i, "DELAY")))
            return false;
        i = j + 1;
    }
    return true;
}

/* RCPT TO:<path> [NOTIFY=...] [ORCPT=...] */
static enum cmd_check rcpt_check(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    struct smtp_path p;
    const char *why = NULL;
    enum smtp_addr_error e = smtp_path_parse(SMTP_PATH_RCPT, arg.ptr, arg.len, &p, &why);
    if (e != SMTP_ADDR_OK)
        return path_error(s, e, false, why);
    for (int i = 0; i < p.nparams; i++) {
        const struct smtp_param *pr = &p.params[i];
        if (ascii_caseeq(pr->key.ptr, pr->key.len, "NOTIFY")) {   /* RFC 3461 4.1 */
            if (!pr->value.ptr || !notify_ok(pr->value.ptr, pr->value.len))
                return refuse(s, R_NOTIFY_SYNTAX);
        } else if (ascii_caseeq(pr->key.ptr, pr->key.len, "ORCPT")) {   /* RFC 3461 4.2 */
            char tmp[1024];
            const char *semi = pr->value.ptr ? memchr(pr->value.ptr, ';', pr->value.len) : NULL;
            if (!semi || semi == pr->value.ptr || pr->value.len > 500 ||
                smtp_xtext_decode(semi + 1, pr->value.len - (size_t)(semi + 1 - pr->value.ptr), tmp,
                                  sizeof(tmp)) < 0)
                return refuse(s, R_ORCPT_SYNTAX);
        } else {
            session_reply(s, R_PARAM_UNKNOWN);
            return CHECK_REFUSED;
        }
    }
    enum reply_id limit = R_COUNT;
    if (p.utf8 && !s->tx.env->smtputf8)
        limit = R_UTF8_ADDRESS;
    else if (s->tx.env->accepted >= s->eng->cfg.recipients)
        limit = R_TOO_MANY_RCPTS;
    if (limit == R_UTF8_ADDRESS) {
        session_reply_esc(s, limit, NULL);
        return CHECK_REPLIED;
    }
    if (limit != R_COUNT) {
        session_reply(s, limit);
        return CHECK_REPLIED;
    }
    /* a pending recipient of the envelope (its view is the hook's
     * argument); the proceed step accepts or refuses it */
    a->rcpt = envelope_add_rcpt(s->tx.env, &p);
    a->ref = engine_address_ref(s, s->tx.env, a->rcpt);
    return CHECK_OK;
}

static void rcpt_proceed(struct session *s, const struct stage_reply *r)
{
    if (r->ok && !engine_check_route(s, s->arg_ref)) {
        /* a script bug: tempfail now rather than a misleading 451 at DATA */
        envelope_rcpt_refuse(s->tx.env, s->args.rcpt);
        engine_release_ref(s, &s->arg_ref);
        session_reply(s, R_HOOK_ERROR);
        return;
    }
    if (r->ok) {
        envelope_rcpt_accept(s->tx.env, s->args.rcpt);
        engine_tx_add_rcpt(s, s->args.rcpt, s->arg_ref);
        s->arg_ref = LUA_NOREF;
        s->state = SS_RCPT;
    } else {
        envelope_rcpt_refuse(s->tx.env, s->args.rcpt);
        engine_release_ref(s, &s->arg_ref);
    }
    session_reply_stage(s, STAGE_RCPT, r, NULL);   /* a refusal counts as junk (a directory harvest) */
}

const struct cmd cmd_mail_table[] = {
    {"MAIL", ST(SS_READY), CMD_NEEDS_AUTH, mail_check, STAGE_MAIL, engine_push_arg, mail_proceed},
    {"RCPT", ST(SS_MAIL) | ST(SS_RCPT), 0, rcpt_check, STAGE_RCPT, engine_push_arg, rcpt_proceed},
    {NULL, 0, 0, NULL, STAGE_OTHER, NULL, NULL},
};
