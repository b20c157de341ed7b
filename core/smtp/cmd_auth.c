/* cmd_auth.c - AUTH (RFC 4954) with PLAIN, LOGIN and CRAM-MD5 (the
 * exchange itself is sasl.c). Offered only over TLS unless the script
 * allows plaintext, and only when the script has an auth hook to decide.
 * The hook gets a kurir.cred; cred:verify(secret) works for every
 * mechanism. Passwords are never logged. */
#include <stdlib.h>
#include <string.h>

#include "smtp/engine_session.h"
#include "smtp/session.h"

#define AUTH_LINE_MAX 12288

static void auth_abort(struct session *s, enum reply_id id)
{
    s->parser.max_line = s->eng->cfg.line_length;
    sasl_reset(&s->sasl);
    s->state = s->state_before_auth;
    session_reply(s, id);
    session_error(s);
}

static void auth_failed_reply(struct session *s)
{
    buf_append(&s->conn.out, buf_peek(&s->scratch), buf_used(&s->scratch));
    buf_reset(&s->scratch);
    session_flush(s);
    session_error(s);
}

static void auth_hook_done(struct session *s, const struct hook_result *r)
{
    const char *mech = sasl_mech_name(s->sasl.mech);
    char *user = xstrdup(s->sasl.user ? s->sasl.user : "");
    lcred_invalidate(s->eng->L, s->arg_ref);
    engine_release_ref(s, &s->arg_ref);
    sasl_reset(&s->sasl);
    s->parser.max_line = s->eng->cfg.line_length;
    s->state = s->state_before_auth;
    if (session_result_ok(r)) {
        free(s->user);
        s->user = user;
        struct buf *b = session_log_begin(s, "info", "auth");
        logfmt_str(b, "mechanism", mech);
        logfmt_str(b, "user", user ? user : "");
        logfmt_str(b, "result", "ok");
        session_log_end(s);
        session_reply_result(s, r, R_AUTH_OK, R_AUTH_FAILED, STAGE_AUTH);
        return;
    }
    struct buf *b = session_log_begin(s, "warn", "auth");
    logfmt_str(b, "mechanism", mech);
    logfmt_str(b, "user", user ? user : "");
    logfmt_str(b, "result", "failed");
    session_log_end(s);
    free(user);
    if (r->kind == HR_REPLY && r->code == 421) {
        session_reply_result(s, r, R_AUTH_OK, R_AUTH_FAILED, STAGE_AUTH);   /* closes */
        return;
    }
    /* The refusal waits auth.failure_delay (a timer: other sessions go on
     * meanwhile), so that one connection cannot try passwords at the
     * speed of the network. The reply is formatted now, sent then. */
    const char *host = s->eng->cfg.hostname;
    buf_reset(&s->scratch);
    if (r->kind == HR_REPLY) {
        const char *text = r->tlen ? r->text : reply_default_text(r->code, STAGE_AUTH);
        size_t tlen = r->tlen ? r->tlen : strlen(text);
        reply_format(&s->scratch, r->code, NULL, text, tlen, s->enhanced, STAGE_AUTH, host);
    }
    else
        reply_canned(&s->scratch, R_AUTH_FAILED, s->enhanced, host);
    session_pause(s, s->eng->cfg.auth_failure_delay, auth_failed_reply);
}

static void auth_result(struct session *s, enum sasl_result res, struct buf *challenge)
{
    switch (res) {
    case SASL_CONTINUE:
        s->state = SS_AUTH;
        s->parser.max_line = AUTH_LINE_MAX;   /* RFC 4954 4: 12288 octets */
        buf_appends(&s->conn.out, "334 ");
        buf_append(&s->conn.out, buf_peek(challenge), buf_used(challenge));
        buf_appends(&s->conn.out, "\r\n");
        session_flush(s);
        break;
    case SASL_DONE:
        s->state = SS_AUTH;   /* no commands until the hook decided */
        session_run_hook(s, HOOK_AUTH, engine_push_cred, auth_hook_done);
        break;
    case SASL_ERR_MECH:
        auth_abort(s, R_MECH_UNKNOWN);
        break;
    case SASL_ERR_BASE64:
        auth_abort(s, R_AUTH_B64);
        break;
    case SASL_ERR_CANCEL:
        auth_abort(s, R_AUTH_CANCELLED);
        break;
    case SASL_ERR_SYNTAX:
        auth_abort(s, R_SYNTAX);
        break;
    }
}

void auth_line(struct session *s, const char *line, size_t len)
{
    buf_reset(&s->scratch);
    enum sasl_result res = sasl_step(&s->sasl, line, len, &s->scratch);
    auth_result(s, res, &s->scratch);
}

static int auth_check(struct session *s, struct smtp_span arg)
{
    const struct config *c = &s->eng->cfg;
    if (s->user) {
        session_reply(s, R_ALREADY_AUTH);
        session_error(s);
        return -1;
    }
    if (!s->esmtp) {   /* AUTH is an ESMTP extension: only after EHLO */
        session_reply(s, R_BAD_SEQUENCE);
        session_error(s);
        return -1;
    }
    if (!engine_has_user_hook(s->eng, HOOK_AUTH) || !c->auth_mechs) {
        session_reply(s, R_NOT_IMPLEMENTED);
        session_error(s);
        return -1;
    }
    if (!s->tls && !c->auth_plaintext) {
        session_reply(s, R_AUTH_NEEDS_TLS);
        session_error(s);
        return -1;
    }
    const char *p = arg.ptr ? arg.ptr : "";
    size_t n = arg.len, i = 0;
    while (i < n && p[i] != ' ')
        i++;
    enum sasl_mech m = sasl_mech_from_name(p, i);
    if (m == SASL_NONE || !(c->auth_mechs & (1u << m))) {
        session_reply(s, i ? R_MECH_UNKNOWN : R_SYNTAX);
        session_error(s);
        return -1;
    }
    size_t j = i;
    while (j < n && p[j] == ' ')
        j++;
    bool has_initial = j < n;
    s->state_before_auth = s->state;
    buf_reset(&s->scratch);
    enum sasl_result res = sasl_start(&s->sasl, m, p + j, n - j, has_initial, c->hostname, &s->scratch);
    auth_result(s, res, &s->scratch);
    return -1;
}

const struct cmd cmd_auth_table[] = {
    {"AUTH", ST(SS_READY), 0, auth_check, HOOK_NONE, NULL, NULL, STAGE_AUTH},
    {NULL, 0, 0, NULL, HOOK_NONE, NULL, NULL, STAGE_OTHER},
};
