/* cmd_basic.c - command rows for the session basics: HELO, EHLO, RSET,
 * NOOP, QUIT, VRFY, EXPN, HELP. Each row: states where valid, a check, the
 * Lua hook, and a proceed that changes state and replies. */
#include <stdlib.h>
#include <string.h>

#include "smtp/engine_session.h"
#include "proto/sasl.h"
#include "smtp/session.h"

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

/* The client's name as the reply shows it: never verbatim (it is the
 * client's text in our reply, and unbounded). Only what a domain or an
 * address literal may hold is kept, anything else becomes '?', and the
 * whole is clipped so that the reply line stays within RFC 5321's 512. */
#define HELO_ECHO_MAX 64

static void append_helo_echo(struct buf *o, const char *name)
{
    size_t n = strlen(name);
    size_t keep = n > HELO_ECHO_MAX ? HELO_ECHO_MAX : n;
    for (size_t i = 0; i < keep; i++) {
        unsigned char ch = (unsigned char)name[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '-' || ch == '.' || ch == ':' || ch == '[' || ch == ']';
        buf_append(o, ok ? (const char *)&name[i] : "?", 1);
    }
    if (keep < n)
        buf_appends(o, "...");
}

/* First line of the EHLO/HELO reply: "250-" or "250 ", then either the
 * script's text (one line, control bytes neutralised, clipped) or the
 * standard "host Hello name [ip]". */
static void greeting_line(struct session *s, const char *sep, const struct hook_result *r)
{
    const struct config *c = &s->eng->cfg;
    struct buf *o = &s->conn.out;
    buf_printf(o, "250%s", sep);
    if (r && r->kind == HR_REPLY && r->tlen) {
        size_t n = r->tlen > 400 ? 400 : r->tlen;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)r->text[i];
            if (ch == '\r' || ch == '\n')
                break;   /* the first line only: the extension list follows */
            buf_append(o, ch < 32 || ch == 127 ? "?" : &r->text[i], 1);
        }
        buf_appends(o, "\r\n");
        return;
    }
    buf_printf(o, "%s Hello ", c->hostname);
    append_helo_echo(o, s->helo);
    buf_printf(o, " [%s]\r\n", s->conn.peer_ip);
}

static void ehlo_reply(struct session *s, const struct hook_result *r)
{
    const struct config *c = &s->eng->cfg;
    struct buf *o = &s->conn.out;
    greeting_line(s, "-", r);
    buf_appends(o, "250-PIPELINING\r\n");
    buf_printf(o, "250-SIZE %llu\r\n", (unsigned long long)c->message_size);
    buf_appends(o, "250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n");
    buf_appends(o, "250-DSN\r\n");
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
 * accepted one resets the transaction and answers with the standard reply
 * (EHLO: with the extension list), the first line's text replaced by the
 * hook's when it returned 2xx with a text (SPEC 2.1). HELO with a hook
 * reply is exactly that reply. */
static void helo_proceed(struct session *s, const struct hook_result *r)
{
    if (!session_result_ok(r)) {
        s->esmtp = s->esmtp_before;
        session_reply_result(s, r, R_ACCEPT, R_HELO_REJECT, STAGE_HELO);
        return;
    }
    set_helo(s);
    if (s->esmtp) {
        ehlo_reply(s, r);
    } else if (r->kind == HR_REPLY) {
        session_reply_code(s, r->code, r->text, r->tlen, STAGE_HELO);
        return;
    } else {
        greeting_line(s, " ", NULL);
    }
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
    session_junk(s);
}

static void noop_proceed(struct session *s, const struct hook_result *r)
{
    (void)r;
    session_reply(s, R_ACCEPT);
    session_junk(s);
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
    session_junk(s);
}

static void expn_proceed(struct session *s, const struct hook_result *r)
{
    session_reply_result(s, r, R_EXPN_DEFAULT, R_EXPN_DEFAULT, STAGE_EXPN);
    session_junk(s);
}

static void help_proceed(struct session *s, const struct hook_result *r)
{
    (void)r;
    session_reply(s, R_HELP);
    session_junk(s);
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
