/* cmd_starttls.c - STARTTLS (RFC 3207) and implicit TLS (RFC 8314).
 * After the 220 everything the client pipelined is discarded
 * (CVE-2011-0411) and the session is reset to "no HELO"; the handshake
 * runs non-blocking in the connection layer under its own timeout; then
 * the starttls hook may still refuse the session. */
#include <stdlib.h>
#include <string.h>

#include "smtp/engine_session.h"
#include "smtp/session.h"
#include "net/tls.h"

static void handshake_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct session *s = w->data;
    if (s->state != SS_TLS)
        return;
    session_log_begin(s, "info", "tls_timeout");
    session_log_end(s);
    conn_abort(&s->conn);
}

void starttls_begin(struct session *s)
{
    s->state = SS_TLS;
    ev_timer_stop(s->conn.loop, &s->timer);
    ev_set_cb(&s->timer, handshake_timeout);
    ev_timer_set(&s->timer, s->eng->cfg.t_handshake, 0);
    ev_timer_start(s->conn.loop, &s->timer);
    smtp_parser_discard(&s->parser);
    void *st = s->eng->tls ? tls_conn_new(s->eng->tls, s->conn.fd) : NULL;
    if (!st) {
        logfmt_str(session_log_begin(s, "error", "tls_failed"), "error", "cannot create TLS state");
        session_log_end(s);
        conn_abort(&s->conn);
        return;
    }
    conn_start_handshake(&s->conn, &tls_transport, st);
}

static void starttls_hook_done(struct session *s, const struct stage_reply *r)
{
    if (!r->ok) {
        /* refused after the handshake: say why, then close (stage.c,
         * STAGE_F_CLOSES) */
        session_reply_stage(s, STAGE_STARTTLS, r, NULL);
        return;
    }
    if (s->tls_required && s->state == SS_INIT && !s->greeted) {
        session_greet(s);
        return;
    }
    conn_set_reading(&s->conn, true);
}

void starttls_done(struct session *s, bool ok)
{
    (void)ok;
    s->tls = true;
    s->state = SS_INIT;
    session_timeouts_reset(s);
    struct tls_info ti;
    tls_conn_info(&s->conn, &ti);
    struct buf *b = session_log_begin(s, "info", "tls");
    logfmt_str(b, "version", ti.version ? ti.version : "");
    logfmt_str(b, "cipher", ti.cipher ? ti.cipher : "");
    logfmt_str(b, "client_subject", ti.peer_subject ? ti.peer_subject : "");
    session_log_end(s);
    session_run_hook(s, STAGE_STARTTLS, NULL, starttls_hook_done);
}

static enum cmd_check starttls_check(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    (void)a;
    enum reply_id why = !s->eng->tls ? R_NOT_IMPLEMENTED : s->tls ? R_ALREADY_TLS : arg.len ? R_SYNTAX : R_COUNT;
    if (why == R_COUNT)
        return CHECK_OK;
    session_reply(s, why);
    return CHECK_REFUSED;
}

static void starttls_proceed(struct session *s, const struct stage_reply *r)
{
    (void)r;
    session_reply(s, R_STARTTLS_GO);
    conn_flush(&s->conn);
    /* RFC 3207 4.2: forget everything learnt before TLS */
    session_tx_reset(s);
    free(s->helo);
    s->helo = NULL;
    free(s->user);   /* an AUTH before TLS could have been injected */
    s->user = NULL;
    sasl_reset(&s->sasl);
    s->esmtp = false;
    s->enhanced = false;
    starttls_begin(s);
}

const struct cmd cmd_starttls_table[] = {
    {"STARTTLS", ST(SS_INIT) | ST(SS_READY), CMD_BEFORE_TLS | CMD_ENDS_GROUP, starttls_check, STAGE_OTHER, NULL,
     starttls_proceed},
    {NULL, 0, 0, NULL, STAGE_OTHER, NULL, NULL},
};
