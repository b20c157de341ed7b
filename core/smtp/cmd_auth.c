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
    buf_append(&s->reply, buf_peek(&s->scratch), buf_used(&s->scratch));
    buf_reset(&s->scratch);
    session_flush(s);
    session_error(s);
}

static void auth_hook_done(struct session *s, const struct stage_reply *r)
{
    const char *mech = sasl_mech_name(s->sasl.mech);
    char *user = xstrdup(s->sasl.user ? s->sasl.user : "");
    lcred_invalidate(s->eng->L, s->arg_ref);
    engine_release_ref(s, &s->arg_ref);
    sasl_reset(&s->sasl);
    s->parser.max_line = s->eng->cfg.line_length;
    s->state = s->state_before_auth;
    struct buf *b = session_log_begin(s, r->ok ? "info" : "warn", "auth");
    logfmt_str(b, "mechanism", mech);
    logfmt_str(b, "user", user);
    logfmt_str(b, "result", r->ok ? "ok" : "failed");
    session_log_end(s);
    if (r->ok) {
        free(s->user);
        s->user = user;
        session_reply_stage(s, STAGE_AUTH, r, NULL);
        return;
    }
    free(user);
    if (!r->delay) {
        session_reply_stage(s, STAGE_AUTH, r, NULL);   /* 421: closes */
        return;
    }
    /* The refusal waits auth.failure_delay (a timer: other sessions go on
     * meanwhile), so that one connection cannot try passwords at the
     * speed of the network. The reply is formatted now, sent then. */
    buf_reset(&s->scratch);
    stage_format(&s->scratch, STAGE_AUTH, r, s->enhanced, &s->eng->replies, s->eng->cfg.hostname, NULL);
    session_pause(s, s->eng->cfg.auth_failure_delay, auth_failed_reply);
}

static void auth_result(struct session *s, enum sasl_result res, struct buf *challenge)
{
    switch (res) {
    case SASL_CONTINUE:
        s->state = SS_AUTH;
        s->parser.max_line = AUTH_LINE_MAX;   /* RFC 4954 4: 12288 octets */
        buf_appends(&s->reply, "334 ");
        buf_append(&s->reply, buf_peek(challenge), buf_used(challenge));
        buf_appends(&s->reply, "\r\n");
        session_flush(s);
        break;
    case SASL_DONE:
        s->state = SS_AUTH;   /* no commands until the hook decided */
        session_run_hook(s, STAGE_AUTH, engine_push_cred, auth_hook_done);
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

static enum cmd_check auth_check(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    const struct config *c = &s->eng->cfg;
    enum reply_id why = R_COUNT;
    if (s->user)
        why = R_ALREADY_AUTH;
    else if (!s->esmtp)   /* AUTH is an ESMTP extension: only after EHLO */
        why = R_BAD_SEQUENCE;
    else if (!engine_has_user_hook(s->eng, HOOK_AUTH) || !c->auth_mechs)
        why = R_NOT_IMPLEMENTED;
    else if (!s->tls && !c->auth_plaintext)
        why = R_AUTH_NEEDS_TLS;
    const char *p = arg.ptr ? arg.ptr : "";
    size_t n = arg.len, i = 0;
    while (i < n && p[i] != ' ')
        i++;
    enum sasl_mech m = sasl_mech_from_name(p, i);
    if (why == R_COUNT && (m == SASL_NONE || !(c->auth_mechs & (1u << m))))
        why = i ? R_MECH_UNKNOWN : R_SYNTAX;
    if (why != R_COUNT) {
        session_reply(s, why);
        return CHECK_REFUSED;
    }
    size_t j = i;
    while (j < n && p[j] == ' ')
        j++;
    a->mech = m;
    a->has_initial = j < n;
    a->initial.ptr = p + j;
    a->initial.len = n - j;
    return CHECK_OK;
}

/* no hook yet: the auth hook decides once the exchange gave credentials */
static void auth_proceed(struct session *s, const struct stage_reply *r)
{
    (void)r;
    const struct cmd_args *a = &s->args;
    s->state_before_auth = s->state;
    buf_reset(&s->scratch);
    enum sasl_result res = sasl_start(&s->sasl, a->mech, a->initial.ptr, a->initial.len, a->has_initial,
                                      s->eng->cfg.hostname, &s->scratch);
    auth_result(s, res, &s->scratch);
}

const struct cmd cmd_auth_table[] = {
    {"AUTH", ST(SS_READY), 0, auth_check, STAGE_OTHER, NULL, auth_proceed},
    {NULL, 0, 0, NULL, STAGE_OTHER, NULL, NULL},
};
