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

static enum cmd_check helo_check_common(struct session *s, struct smtp_span arg, struct cmd_args *a,
                                       bool esmtp)
{
    if (!smtp_valid_helo(arg.ptr, arg.len)) {
        session_reply(s, R_HELO_SYNTAX);
        return CHECK_REFUSED;
    }
    a->esmtp = esmtp;
    return CHECK_OK;
}

static enum cmd_check ehlo_check(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    return helo_check_common(s, arg, a, true);
}

static enum cmd_check helo_check(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    return helo_check_common(s, arg, a, false);
}

/* s.esmtp tells the helo hook which verb it was; a refusal restores it */
static int helo_push(struct session *s, lua_State *co)
{
    s->esmtp_before = s->esmtp;
    s->esmtp = s->args.esmtp;
    return engine_push_line_arg(s, co);
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
    char *p = buf_reserve(o, keep);   /* once per connection: one copy, not a call per byte */
    for (size_t i = 0; i < keep; i++) {
        unsigned char ch = (unsigned char)name[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '-' || ch == '.' || ch == ':' || ch == '[' || ch == ']';
        p[i] = ok ? (char)ch : '?';
    }
    buf_commit(o, keep);
    if (keep < n)
        buf_appends(o, "...");
}

/* First line of the EHLO/HELO reply: "250-" or "250 ", then either the
 * script's text (one line, control bytes neutralised, clipped) or the
 * standard "host Hello name [ip]". */
static void greeting_line(struct session *s, const char *sep, const struct stage_reply *r)
{
    const struct config *c = &s->eng->cfg;
    struct buf *o = &s->reply;
    buf_appends(o, "250");
    buf_appends(o, sep);
    if (r && r->id == R_COUNT && r->tlen) {
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
    buf_appends(o, c->hostname);
    buf_appends(o, " Hello ");
    append_helo_echo(o, s->helo);
    buf_appends(o, " [");
    buf_appends(o, s->conn.peer_ip);
    buf_appends(o, "]\r\n");
}

static void ehlo_reply(struct session *s, const struct stage_reply *r)
{
    const struct config *c = &s->eng->cfg;
    struct buf *o = &s->reply;
    greeting_line(s, "-", r);
    buf_appends(o, "250-PIPELINING\r\n");
    buf_appends(o, "250-SIZE ");
    buf_append_uint(o, (unsigned long long)c->message_size);
    buf_appends(o, "\r\n");
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
static void helo_proceed(struct session *s, const struct stage_reply *r)
{
    if (!r->ok) {
        s->esmtp = s->esmtp_before;
        session_reply_stage(s, STAGE_HELO, r, NULL);
        return;
    }
    s->esmtp = s->args.esmtp;
    set_helo(s);
    if (s->esmtp) {
        ehlo_reply(s, r);
    } else if (r->id == R_COUNT) {
        session_reply_stage(s, STAGE_HELO, r, NULL);   /* HELO: exactly the hook's reply */
        return;
    } else {
        greeting_line(s, " ", NULL);
    }
    session_flush(s);
}

/* RSET, NOOP, QUIT ------------------------------------------------------------ */

/* RSET and QUIT take no argument (RFC 5321 4.1.1.5, 4.1.1.10) */
static enum cmd_check no_arg(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    (void)a;
    if (arg.len) {
        session_reply(s, R_SYNTAX);
        return CHECK_REFUSED;
    }
    return CHECK_OK;
}

static void rset_proceed(struct session *s, const struct stage_reply *r)
{
    session_tx_reset(s);
    session_reply_stage(s, STAGE_RESET, r, NULL);
}

static void noop_proceed(struct session *s, const struct stage_reply *r)
{
    (void)r;
    session_reply(s, R_ACCEPT);
}

static void quit_proceed(struct session *s, const struct stage_reply *r)
{
    (void)r;
    session_reply(s, R_CLOSING);
    session_close(s);
}

/* VRFY, EXPN, HELP ----------------------------------------------------------- */

static enum cmd_check need_arg(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    (void)a;
    if (arg.len == 0) {
        session_reply(s, R_SYNTAX);
        return CHECK_REFUSED;
    }
    return CHECK_OK;
}

static void vrfy_proceed(struct session *s, const struct stage_reply *r)
{
    session_reply_stage(s, STAGE_VRFY, r, NULL);
}

static void expn_proceed(struct session *s, const struct stage_reply *r)
{
    session_reply_stage(s, STAGE_EXPN, r, NULL);
}

static void help_proceed(struct session *s, const struct stage_reply *r)
{
    (void)r;
    session_reply(s, R_HELP);
}

#define ALL_STATES (ST(SS_INIT) | ST(SS_READY) | ST(SS_MAIL) | ST(SS_RCPT) | ST(SS_REFUSED))

/* RFC 2920 3.1: EHLO, VRFY, EXPN, QUIT and NOOP end a pipelined group;
 * Postfix also lets HELO, EHLO, RSET, NOOP and QUIT through before TLS. */
#define GREET (CMD_BEFORE_TLS | CMD_ENDS_GROUP)

const struct cmd cmd_basic_table[] = {
    {"EHLO", ST_GREETED, GREET | CMD_ESMTP, ehlo_check, STAGE_HELO, helo_push, helo_proceed},
    {"HELO", ST_GREETED, GREET, helo_check, STAGE_HELO, helo_push, helo_proceed},
    {"RSET", ST_GREETED, CMD_BEFORE_TLS | CMD_JUNK, no_arg, STAGE_RESET, NULL, rset_proceed},
    {"NOOP", ST_GREETED, GREET | CMD_JUNK, NULL, STAGE_OTHER, NULL, noop_proceed},
    {"QUIT", ALL_STATES, GREET, no_arg, STAGE_OTHER, NULL, quit_proceed},
    {"VRFY", ST_GREETED, CMD_ENDS_GROUP | CMD_JUNK, need_arg, STAGE_VRFY, engine_push_line_arg, vrfy_proceed},
    {"EXPN", ST_GREETED, CMD_ENDS_GROUP | CMD_JUNK, need_arg, STAGE_EXPN, engine_push_line_arg, expn_proceed},
    {"HELP", ST_GREETED, CMD_JUNK, NULL, STAGE_OTHER, NULL, help_proceed},
    {NULL, 0, 0, NULL, STAGE_OTHER, NULL, NULL},
};
