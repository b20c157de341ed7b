/* cmd_basic.c - command rows for the session basics: HELO, EHLO, RSET,
 * NOOP, QUIT, VRFY, EXPN, HELP. Each row: states where valid, a check, the
 * Lua hook, and a proceed that changes state and replies. */
#include <stdlib.h>
#include <string.h>

#include "engine_session.h"
#include "sasl.h"
#include "session.h"

#define ST_GREETED (ST(SS_INIT) | ST(SS_READY) | ST(SS_MAIL) | ST(SS_RCPT))

/* HELO / EHLO -------------------------------------------------------------- */

static int helo_check_common(struct session *s, struct smtp_span arg, bool esmtp)
{
    if (esmtp)
        s->enhanced = true;   /* enhanced codes on every reply once the client used EHLO */
    if (!smtp_valid_helo(arg.ptr, arg.len)) {
        session_reply(s, R_HELO_SYNTAX);
        session_error(s);
        return -1;
    }
    s->esmtp_before = s->esmtp;
    s->esmtp = esmtp;   /* s.esmtp tells the hook which verb it was */
    return 0;
}

static int ehlo_check(struct session *s, struct smtp_span arg)
{
    return helo_check_common(s, arg, true);
}

static int helo_check(struct session *s, struct smtp_span arg)
{
    return helo_check_common(s, arg, false);
}

static void set_helo(struct session *s)
{
    struct smtp_span a = session_arg(s);
    free(s->helo);
    s->helo = xmemdup(a.ptr, a.len);
    session_tx_reset(s);
    s->state = SS_READY;
}

static bool auth_offered(struct session *s)
{
    const struct config *c = &s->eng->cfg;
    return engine_has_user_hook(s->eng, HOOK_AUTH) && c->auth_mechs && !s->user &&
           (s->tls || c->auth_plaintext);
}

static void ehlo_reply(struct session *s)
{
    const struct config *c = &s->eng->cfg;
    struct buf *o = &s->conn.out;
    buf_printf(o, "250-%s Hello %s [%s]\r\n", c->hostname, s->helo, s->conn.peer_ip);
    buf_appends(o, "250-PIPELINING\r\n");
    buf_printf(o, "250-SIZE %llu\r\n", (unsigned long long)c->message_size);
    buf_appends(o, "250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n");
    if (s->eng->tls && !s->tls)
        buf_appends(o, "250-STARTTLS\r\n");
    if (auth_offered(s)) {
        buf_appends(o, "250-AUTH");
        for (int i = 0; i < c->nauth_order; i++)
            buf_printf(o, " %s", sasl_mech_name((enum sasl_mech)c->auth_order[i]));
        buf_appends(o, "\r\n");
    }
    buf_appends(o, "250 HELP\r\n");
}

/* HELO and EHLO: a rejected greeting leaves the state as it was; an
 * accepted one resets the transaction and answers with the hook's reply or
 * the standard one (EHLO: with the extension list). */
static void helo_proceed(struct session *s, const struct hook_result *r)
{
    if (!session_result_ok(r)) {
        s->esmtp = s->esmtp_before;
        session_reply_result(s, r, R_ACCEPT, R_HELO_REJECT, STAGE_HELO);
        return;
    }
    set_helo(s);
    if (r->kind == HR_REPLY) {   /* exactly the script's reply (SPEC 2.1) */
        session_reply_code(s, r->code, r->text, r->tlen, STAGE_HELO);
        return;
    }
    if (s->esmtp)
        ehlo_reply(s);
    else
        buf_printf(&s->conn.out, "250 %s Hello %s [%s]\r\n", s->eng->cfg.hostname, s->helo,
                   s->conn.peer_ip);
    session_flush(s);
}

/* RSET, NOOP, QUIT ------------------------------------------------------------ */

/* RSET and QUIT take no argument (RFC 5321 4.1.1.5, 4.1.1.10) */
static int no_arg(struct session *s, struct smtp_span arg)
{
    if (arg.len) {
        session_reply(s, R_SYNTAX);
        session_error(s);
        return -1;
    }
    return 0;
}

static void rset_proceed(struct session *s, const struct hook_result *r)
{
    session_tx_reset(s);
    session_reply_result(s, r, R_ACCEPT, R_GENERIC_REJECT, STAGE_RESET);
}

static void noop_proceed(struct session *s, const struct hook_result *r)
{
    (void)r;
    session_reply(s, R_ACCEPT);
}

static void quit_proceed(struct session *s, const struct hook_result *r)
{
    (void)r;
    session_reply(s, R_CLOSING);
    session_close(s);
}

/* VRFY, EXPN, HELP ----------------------------------------------------------- */

static int need_arg(struct session *s, struct smtp_span arg)
{
    if (arg.len == 0) {
        session_reply(s, R_SYNTAX);
        session_error(s);
        return -1;
    }
    return 0;
}

static void vrfy_proceed(struct session *s, const struct hook_result *r)
{
    session_reply_result(s, r, R_VRFY_DEFAULT, R_GENERIC_REJECT, STAGE_VRFY);
}

static void expn_proceed(struct session *s, const struct hook_result *r)
{
    session_reply_result(s, r, R_EXPN_DEFAULT, R_EXPN_DEFAULT, STAGE_EXPN);
}

static void help_proceed(struct session *s, const struct hook_result *r)
{
    (void)r;
    session_reply(s, R_HELP);
}

#define ALL_STATES (ST(SS_INIT) | ST(SS_READY) | ST(SS_MAIL) | ST(SS_RCPT) | ST(SS_REFUSED))

const struct cmd cmd_basic_table[] = {
    {"EHLO", ST_GREETED, 0, ehlo_check, HOOK_HELO, engine_push_line_arg, helo_proceed, STAGE_HELO},
    {"HELO", ST_GREETED, 0, helo_check, HOOK_HELO, engine_push_line_arg, helo_proceed, STAGE_HELO},
    {"RSET", ST_GREETED, 0, no_arg, HOOK_RESET, NULL, rset_proceed, STAGE_RESET},
    {"NOOP", ST_GREETED, 0, NULL, HOOK_NONE, NULL, noop_proceed, STAGE_OTHER},
    {"QUIT", ALL_STATES, 0, no_arg, HOOK_NONE, NULL, quit_proceed, STAGE_OTHER},
    {"VRFY", ST_GREETED, 0, need_arg, HOOK_VRFY, engine_push_line_arg, vrfy_proceed, STAGE_VRFY},
    {"EXPN", ST_GREETED, 0, need_arg, HOOK_EXPN, engine_push_line_arg, expn_proceed, STAGE_EXPN},
    {"HELP", ST_GREETED, 0, NULL, HOOK_NONE, NULL, help_proceed, STAGE_OTHER},
    {NULL, 0, 0, NULL, HOOK_NONE, NULL, NULL, STAGE_OTHER},
};
