/* cmd_mail.c - MAIL and RCPT: path and ESMTP parameter checks (grammar in
 * smtp_addr.c), size and recipient limits, the address objects the mail and
 * rcpt hooks get, and the transaction state they start or extend. */
#include <string.h>

#include "smtp/engine_session.h"
#include "smtp/session.h"

static int path_error(struct session *s, enum smtp_addr_error e, bool mail, const char *why)
{
    const char *esc = e == SMTP_ADDR_BAD_ADDRESS ? (mail ? "5.1.7" : "5.1.3") : "5.5.4";
    int code = 501;
    buf_reset(&s->scratch);
    buf_printf(&s->scratch, "%s %s", esc, why ? why : "Syntax error");
    session_reply_code(s, code, buf_peek(&s->scratch), buf_used(&s->scratch),
                       mail ? STAGE_MAIL : STAGE_RCPT);
    session_error(s);
    return -1;
}

static int reply_text(struct session *s, int code, const char *text, enum reply_stage st, bool count)
{
    session_reply_code(s, code, text, strlen(text), st);
    if (count)
        session_error(s);
    return -1;
}

/* limits.spool_reserve: below it no message is taken (RFC 5321 4.5.3.1.10:
 * 452 at MAIL, so the client has sent nothing it must send again). */
static bool spool_short(struct session *s)
{
    uint64_t reserve = s->eng->cfg.spool_reserve, avail;
    bool tmpfs;
    if (!reserve || spool_space(s->eng->cfg.spool, &avail, &tmpfs) < 0 || avail >= reserve)
        return false;
    struct buf *b = session_log_begin(s, "warn", "spool_full");
    logfmt_str(b, "dir", s->eng->cfg.spool);
    logfmt_int(b, "available", (long long)avail);
    logfmt_int(b, "reserve", (long long)reserve);
    session_log_end(s);
    session_reply(s, R_SPOOL_FULL);
    return true;
}

/* MAIL FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [AUTH=xtext] */
static int mail_check(struct session *s, struct smtp_span arg)
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
                return reply_text(s, 501, "5.5.4 Syntax: SIZE=<number>", STAGE_MAIL, true);
            size = v;
        } else if (ascii_caseeq(k, kl, "BODY")) {
            if (!pr->value.ptr || !(ascii_caseeq(pr->value.ptr, pr->value.len, "7BIT") ||
                                    ascii_caseeq(pr->value.ptr, pr->value.len, "8BITMIME")))
                return reply_text(s, 501, "5.5.4 Syntax: BODY=7BIT|8BITMIME", STAGE_MAIL, true);
        } else if (ascii_caseeq(k, kl, "SMTPUTF8")) {
            if (pr->value.ptr)
                return reply_text(s, 501, "5.5.4 SMTPUTF8 takes no value", STAGE_MAIL, true);
            utf8 = true;
        } else if (ascii_caseeq(k, kl, "AUTH")) {
            char tmp[512];
            if (!pr->value.ptr || smtp_xtext_decode(pr->value.ptr, pr->value.len, tmp, sizeof(tmp)) < 0)
                return reply_text(s, 501, "5.5.4 Syntax: AUTH=<xtext>", STAGE_MAIL, true);
        } else if (ascii_caseeq(k, kl, "RET")) {   /* RFC 3461 4.3 */
            if (!pr->value.ptr || !(ascii_caseeq(pr->value.ptr, pr->value.len, "FULL") ||
                                    ascii_caseeq(pr->value.ptr, pr->value.len, "HDRS")))
                return reply_text(s, 501, "5.5.4 Syntax: RET=FULL|HDRS", STAGE_MAIL, true);
        } else if (ascii_caseeq(k, kl, "ENVID")) {   /* RFC 3461 4.4: xtext, at most 100 chars */
            char tmp[512];
            if (!pr->value.ptr || pr->value.len > 100 ||
                smtp_xtext_decode(pr->value.ptr, pr->value.len, tmp, sizeof(tmp)) < 0)
                return reply_text(s, 501, "5.5.4 Syntax: ENVID=<xtext of at most 100 characters>", STAGE_MAIL,
                                  true);
        } else {
            session_reply(s, R_PARAM_UNKNOWN);
            session_error(s);
            return -1;
        }
    }
    if (p.utf8 && !utf8)
        return reply_text(s, 553, "5.6.7 Non-ASCII address requires the SMTPUTF8 parameter",
                          STAGE_MAIL, false);
    if (size > s->eng->cfg.message_size) {
        session_reply(s, R_SIZE_EXCEEDED);
        return -1;
    }
    if (spool_short(s))
        return -1;
    engine_release_ref(s, &s->arg_ref);
    envelope_unref(s->arg_env);
    s->arg_env = envelope_new();
    envelope_set_from(s->arg_env, &p);
    s->arg_ref = engine_address_ref(s, s->arg_env, -1);
    return 0;
}

static void mail_proceed(struct session *s, const struct hook_result *r)
{
    if (session_result_ok(r)) {
        session_tx_begin(s);
        s->tx.env = s->arg_env;   /* the transaction takes the reference */
        s->arg_env = NULL;
        engine_tx_set_from(s, s->arg_ref);
        s->arg_ref = LUA_NOREF;
        s->state = SS_MAIL;
    } else {
        engine_release_ref(s, &s->arg_ref);
        envelope_unref(s->arg_env);
        s->arg_env = NULL;
    }
    session_reply_result(s, r, R_MAIL_OK, R_MAIL_REJECT, STAGE_MAIL);
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
static int rcpt_check(struct session *s, struct smtp_span arg)
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
                return reply_text(s, 501, "5.5.4 Syntax: NOTIFY=NEVER or NOTIFY=SUCCESS,FAILURE,DELAY",
                                  STAGE_RCPT, true);
        } else if (ascii_caseeq(pr->key.ptr, pr->key.len, "ORCPT")) {   /* RFC 3461 4.2 */
            char tmp[1024];
            const char *semi = pr->value.ptr ? memchr(pr->value.ptr, ';', pr->value.len) : NULL;
            if (!semi || semi == pr->value.ptr || pr->value.len > 500 ||
                smtp_xtext_decode(semi + 1, pr->value.len - (size_t)(semi + 1 - pr->value.ptr), tmp,
                                  sizeof(tmp)) < 0)
                return reply_text(s, 501, "5.5.4 Syntax: ORCPT=addr-type;xtext", STAGE_RCPT, true);
        } else {
            session_reply(s, R_PARAM_UNKNOWN);
            session_error(s);
            return -1;
        }
    }
    if (p.utf8 && !s->tx.env->smtputf8)
        return reply_text(s, 553, "5.6.7 Non-ASCII address requires the SMTPUTF8 parameter",
                          STAGE_RCPT, false);
    if (s->tx.env->accepted >= s->eng->cfg.recipients) {
        session_reply(s, R_TOO_MANY_RCPTS);
        return -1;
    }
    engine_release_ref(s, &s->arg_ref);
    s->arg_rcpt = envelope_add_rcpt(s->tx.env, &p);
    s->arg_ref = engine_address_ref(s, s->tx.env, s->arg_rcpt);
    return 0;
}

static void rcpt_proceed(struct session *s, const struct hook_result *r)
{
    if (session_result_ok(r) && !engine_check_route(s, s->arg_ref)) {
        /* a script bug: tempfail now rather than a misleading 451 at DATA */
        envelope_rcpt_refuse(s->tx.env, s->arg_rcpt);
        engine_release_ref(s, &s->arg_ref);
        session_reply(s, R_HOOK_ERROR);
        return;
    }
    if (session_result_ok(r)) {
        envelope_rcpt_accept(s->tx.env, s->arg_rcpt);
        engine_tx_add_rcpt(s, s->arg_rcpt, s->arg_ref);
        s->arg_ref = LUA_NOREF;
        s->state = SS_RCPT;
        session_reply_result(s, r, R_RCPT_OK, R_RCPT_REJECT, STAGE_RCPT);
        return;
    }
    envelope_rcpt_refuse(s->tx.env, s->arg_rcpt);
    engine_release_ref(s, &s->arg_ref);
    session_reply_result(s, r, R_RCPT_OK, R_RCPT_REJECT, STAGE_RCPT);
    session_junk(s);   /* a refused recipient: a directory harvest counts */
}

const struct cmd cmd_mail_table[] = {
    {"MAIL", ST(SS_READY), CMD_NEEDS_AUTH, mail_check, HOOK_MAIL, engine_push_arg, mail_proceed, STAGE_MAIL},
    {"RCPT", ST(SS_MAIL) | ST(SS_RCPT), 0, rcpt_check, HOOK_RCPT, engine_push_arg, rcpt_proceed, STAGE_RCPT},
    {NULL, 0, 0, NULL, HOOK_NONE, NULL, NULL, STAGE_OTHER},
};
