/* session.c - runs one SMTP session: takes parser events while no hook is
 * running, dispatches command lines through the command table (check ->
 * hook -> proceed), turns hook results into replies, and owns the session's
 * timers, error counter and lifetime.
 *
 * Lifetime: a reference count. The connection holds one from session_new
 * until conn's closed callback (deferred by conn.c, never inside our own
 * callbacks); every running hook holds one (session_run_hook until
 * session_hook_finished, or until on_closed aborts it), and so does each
 * conn callback while it runs. The session is freed when the last one is
 * dropped; the disconnect hook runs first, in the session's coroutine. */
#include "smtp/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/engine_session.h"
#include "proto/logfmt.h"

#define READ_CHUNK ENGINE_INPUT_BUFSZ   /* 16 KiB: the size of the engine's kept input buffers */
#define READ_CHUNK_DATA 65536   /* inside a large message body: fewer, larger reads */

static const struct cmd *const cmd_tables[] = {
    cmd_basic_table, cmd_mail_table, cmd_data_table, cmd_auth_table, cmd_starttls_table,
};

static void session_process(struct session *s);
static void session_free(struct session *s);
static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void arm_timer(struct session *s, double secs);

static struct session *from_conn(struct conn *c)
{
    return (struct session *)((char *)c - offsetof(struct session, conn));
}

struct buf *session_log_begin(struct session *s, const char *level, const char *event)
{
    struct buf *b = &s->w->log;
    buf_reset(b);
    logfmt_begin(b, level, s->id, event);
    return b;
}

void session_log_end(struct session *s)
{
    worker_log_end(s->w);
}

/* the reply built in s->reply goes on the conn; written this iteration */
static void want_flush(struct session *s)
{
    if (buf_used(&s->reply)) {
        conn_write(&s->conn, buf_peek(&s->reply), buf_used(&s->reply));
        buf_reset(&s->reply);
    }
    worker_want_flush(s->w, &s->conn);
}

void session_flush(struct session *s)
{
    want_flush(s);
}

void session_reply(struct session *s, enum reply_id id)
{
    reply_cache_put(&s->eng->replies, &s->reply, id, 0, s->enhanced, s->eng->cfg.hostname, NULL);
    want_flush(s);
}

void session_reply_arg(struct session *s, enum reply_id id, const char *arg)
{
    reply_cache_put(&s->eng->replies, &s->reply, id, 0, s->enhanced, s->eng->cfg.hostname, arg);
    want_flush(s);
}

void session_reply_esc(struct session *s, enum reply_id id, const char *text)
{
    const struct reply_def *d = reply_get(id);
    if (!text)
        text = d->text;
    reply_format(&s->reply, d->code, d->esc, text, strlen(text), true, STAGE_OTHER, s->eng->cfg.hostname);
    want_flush(s);
}

void session_reply_stage(struct session *s, enum reply_stage st, const struct stage_reply *r,
                         const char *arg)
{
    if (!r->send)
        return;
    stage_format(&s->reply, st, r, s->enhanced, &s->eng->replies, s->eng->cfg.hostname, arg);
    want_flush(s);
    if (r->close) {
        session_close(s);
        return;
    }
    if (r->error)
        session_error(s);
    if (r->junk)
        session_junk(s);
}

void session_close(struct session *s)
{
    if (s->state == SS_CLOSED)
        return;
    ev_set_cb(&s->timer, timeout_cb);
    arm_timer(s, 10.0);   /* bound the final flush */
    conn_close(&s->conn, true);
}

void session_error(struct session *s)
{
    s->errors++;
    if (s->errors >= s->eng->cfg.errors) {
        logfmt_int(session_log_begin(s, "warn", "too_many_errors"), "errors", s->errors);
        session_log_end(s);
        session_reply(s, R_TOO_MANY_ERRORS);
        session_close(s);
    }
}

void session_junk(struct session *s)
{
    int limit = s->eng->cfg.junk_commands;
    if (s->state == SS_CLOSED || s->conn.closing || limit <= 0)
        return;
    if (++s->junk > limit) {
        logfmt_int(session_log_begin(s, "warn", "too_many_junk_commands"), "commands", s->junk);
        session_log_end(s);
        session_reply(s, R_TOO_MANY_JUNK);
        session_close(s);
    }
}

void session_junk_clear(struct session *s)
{
    s->junk = 0;
}

/* ---- timers ---------------------------------------------------------- */

static void pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct session *s = w->data;
    ev_timer_stop(loop, w);
    void (*then)(struct session *) = s->pause_then;
    s->pausing = false;
    s->pause_then = NULL;
    if (s->state == SS_CLOSED || s->conn.closing || s->conn.closed)
        return;
    arm_timer(s, s->eng->cfg.t_command);
    if (then)
        then(s);
    if (!s->in_hook && !s->processing && s->state != SS_CLOSED)
        session_process(s);
}

void session_pause(struct session *s, double secs, void (*then)(struct session *s))
{
    if (secs <= 0) {
        then(s);
        return;
    }
    s->pausing = true;
    s->pause_then = then;
    conn_set_reading(&s->conn, false);
    ev_timer_set(&s->pause_timer, secs, 0);
    ev_timer_start(s->conn.loop, &s->pause_timer);
}

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct session *s = w->data;
    ev_timer_stop(loop, w);   /* arm_timer's repeat: a deadline fires once */
    if (s->conn.closing) {
        conn_close(&s->conn, false);   /* the client does not read its last replies */
        return;
    }
    if (s->in_hook || s->pausing)
        return;   /* hooks have their own limit (engine.c); a pause ends by itself */
    bool data = s->state == SS_DATA || s->state == SS_BDAT;
    if (data && s->tx.data_deadline > 0 && ev_now(loop) >= s->tx.data_deadline) {
        struct buf *b = session_log_begin(s, "info", "timeout");
        logfmt_str(b, "state", "data");
        logfmt_str(b, "reason", "min_data_rate");
        logfmt_int(b, "bytes", (long long)s->tx.spool.size);
        session_log_end(s);
        session_reply(s, R_TOO_SLOW);
        session_close(s);
        return;
    }
    logfmt_str(session_log_begin(s, "info", "timeout"), "state", data ? "data" : "command");
    session_log_end(s);
    session_reply(s, R_TIMEOUT);
    session_close(s);
}

/* Restart the session deadline: one heap adjustment (ev_timer_again), as
 * this runs for every command. */
static void arm_timer(struct session *s, double secs)
{
    s->timer.repeat = secs;
    ev_timer_again(s->conn.loop, &s->timer);
}

/* The message deadline (DATA, BDAT): timeouts.data from the first chunk,
 * extended by one second per limits.min_data_rate bytes received, so a
 * client that trickles cannot hold the session. The timer fires at the
 * earlier of that deadline and timeouts.data without input. */
static void arm_data_timer(struct session *s, size_t nread)
{
    const struct config *c = &s->eng->cfg;
    double now = ev_now(s->conn.loop);
    double secs = c->t_data;
    if (c->min_data_rate > 0) {
        if (s->tx.data_deadline <= 0)
            s->tx.data_deadline = now + c->t_data;
        s->tx.data_deadline += (double)nread / c->min_data_rate;
        double left = s->tx.data_deadline - now;
        if (left < secs)
            secs = left;
        if (secs < 0.001)
            secs = 0.001;   /* past the deadline: fire at once (repeat 0 would stop the timer) */
    }
    arm_timer(s, secs);
}

/* ---- transactions ---------------------------------------------------- */

void session_new_queue_id(struct session *s, char *out)
{
    worker_new_id(s->w, out);
}

void session_tx_begin(struct session *s)
{
    struct tx *t = &s->tx;
    session_tx_reset(s);
    t->active = true;
    session_new_queue_id(s, t->id);
}

void session_tx_reset(struct session *s)
{
    struct tx *t = &s->tx;
    engine_tx_release(s);
    envelope_unref(t->env);
    spool_close_pooled(&t->spool, &s->eng->body_pool);
    /* the added headers' buffer stays for the next transaction's
     * Received header (session_free frees it) */
    struct buf added = t->added;
    buf_reset(&added);
    buf_shrink(&added, 4096);
    memset(t, 0, sizeof(*t));
    spool_init(&t->spool);
    t->added = added;
    t->from_ref = t->msg_ref = LUA_NOREF;
    /* a hook error between a header read and its release left the copy */
    buf_reset(&s->scratch);
    buf_shrink(&s->scratch, 4096);
    if (s->state == SS_MAIL || s->state == SS_RCPT || s->state == SS_DATA || s->state == SS_BDAT)
        s->state = SS_READY;
}

/* ---- hooks ----------------------------------------------------------- */

void session_run_hook(struct session *s, enum reply_stage st, int (*push)(struct session *, lua_State *),
                      session_proceed_fn proceed)
{
    enum hook h = stage_get(st)->hook;
    s->cur_stage = st;
    if (h == HOOK_NONE || !engine_has_hook(s->eng, h)) {
        struct hook_result none = {HR_DEFAULT, 0, NULL, 0};
        struct stage_reply r;
        stage_apply(st, &none, ERR_TEMPFAIL, &r);
        proceed(s, &r);
        return;
    }
    s->pending = proceed;
    s->cur_hook = h;
    s->in_hook = true;
    session_ref(s);   /* the hook's: dropped in session_hook_finished, or when aborted */
    conn_set_reading(&s->conn, false);
    engine_start_hook(s, h, push);
}

static void hook_finished(struct session *s, const struct hook_result *res);

void session_hook_finished(struct session *s, const struct hook_result *res)
{
    hook_finished(s, res);
    session_unref(s);   /* the finished hook's reference */
}

static void hook_finished(struct session *s, const struct hook_result *res)
{
    struct stage_reply r;
    stage_apply(s->cur_stage, res, s->eng->cfg.on_error[s->cur_hook], &r);
    session_proceed_fn p = s->pending;
    s->pending = NULL;
    s->in_hook = false;
    if (s->state == SS_CLOSED || s->conn.closed) {
        /* the disconnect hook, run after the connection went away; the
         * hook's reference, the last one, is dropped by our caller */
        if (p && s->cur_hook == HOOK_DISCONNECT)
            p(s, &r);
        return;
    }
    if (s->drop_now) {
        /* fault injection: the peer sees the connection end, no reply */
        s->drop_now = false;
        logfmt_str(session_log_begin(s, "info", "dropped"), "stage", engine_hook_name(s->cur_hook));
        session_log_end(s);
        conn_abort(&s->conn);
        return;
    }
    /* the timer did not fire for us while the hook ran: start it again */
    if (!s->conn.closing && s->state != SS_TLS) {
        if (s->state == SS_DATA || s->state == SS_BDAT)
            arm_data_timer(s, 0);
        else
            arm_timer(s, s->eng->cfg.t_command);
    }
    if (p)
        p(s, &r);
    if (!s->in_hook && !s->processing && s->state != SS_CLOSED) {
        session_process(s);
    }
}

/* ---- greeting -------------------------------------------------------- */

void session_timeouts_reset(struct session *s)
{
    ev_set_cb(&s->timer, timeout_cb);
    arm_timer(s, s->eng->cfg.t_command);
}

/* SPEC 2.1 at connect: a greeting is 220, 421 (and close) or 554 (then
 * only QUIT), whatever code the script chose (stage.c, STAGE_F_GREETING). */
static void connect_done(struct session *s, const struct stage_reply *r)
{
    s->state = SS_INIT;
    s->greeted = true;
    arm_timer(s, s->eng->cfg.t_command);
    session_reply_stage(s, STAGE_CONNECT, r, NULL);
    if (r->refuse)
        s->state = SS_REFUSED;
    if (!s->conn.closing)
        conn_set_reading(&s->conn, true);
}

void session_greet(struct session *s)
{
    s->state = SS_GREETING;
    session_run_hook(s, STAGE_CONNECT, NULL, connect_done);
}

/* ---- command dispatch ------------------------------------------------ */

static const struct cmd *find_cmd(const char *verb, size_t len)
{
    if (len == 0)
        return NULL;
    char first = (char)((verb[0] >= 'a' && verb[0] <= 'z') ? verb[0] - 32 : verb[0]);
    for (size_t t = 0; t < sizeof(cmd_tables) / sizeof(cmd_tables[0]); t++)
        for (const struct cmd *c = cmd_tables[t]; c->verb; c++)
            if (c->verb[0] == first && ascii_caseeq(verb, len, c->verb))   /* verbs are upper case */
                return c;
    return NULL;
}

/* the command hook decides a verb the table does not know (stage.c,
 * STAGE_F_UNKNOWN) */
static void unknown_done(struct session *s, const struct stage_reply *r)
{
    session_reply_stage(s, STAGE_COMMAND, r, NULL);
}

/* A row's proceed, then what its flags ask for. */
static void row_proceed(struct session *s, const struct stage_reply *r)
{
    const struct cmd *c = s->cur_cmd;
    s->cur_cmd = NULL;
    c->proceed(s, r);
    if (c->flags & CMD_JUNK)
        session_junk(s);
    /* The group ends here: the client waits for these replies before it
     * sends more, so they go out now, in one write. A client that sent
     * past the end anyway (bodies before the 354) is answered in the
     * iteration's one write, as if it were one group. */
    if ((c->flags & CMD_ENDS_GROUP) && !s->conn.closing && !s->conn.closed &&
        smtp_parser_pending(&s->parser) == 0)
        conn_flush(&s->conn);
}

static enum reply_id sequence_error(struct session *s, const struct cmd *c)
{
    if (s->state == SS_INIT)
        return R_NEED_HELO;
    if (!strcmp(c->verb, "MAIL"))
        return R_NESTED_MAIL;
    if (!strcmp(c->verb, "RCPT"))
        return R_NEED_MAIL;
    if (!strcmp(c->verb, "DATA"))
        return s->state == SS_MAIL ? R_NEED_RCPT : R_NEED_MAIL;
    if (!strcmp(c->verb, "STARTTLS") && s->tls)
        return R_ALREADY_TLS;
    return R_BAD_SEQUENCE;
}

struct smtp_span session_arg(struct session *s)
{
    struct smtp_span verb, arg;
    smtp_cmd_split(buf_peek(&s->line), buf_used(&s->line), &verb, &arg);
    return arg;
}

static void handle_command(struct session *s, const char *line, size_t len)
{
    buf_reset(&s->line);
    buf_append(&s->line, line, len);
    arm_timer(s, s->eng->cfg.t_command);
    if (s->state == SS_AUTH) {
        auth_line(s, buf_peek(&s->line), len);
        return;
    }
    struct smtp_span verb, arg;
    smtp_cmd_split(buf_peek(&s->line), len, &verb, &arg);
    const struct cmd *c = find_cmd(verb.ptr, verb.len);
    if (s->state == SS_REFUSED && !(c && !strcmp(c->verb, "QUIT"))) {
        session_reply(s, R_REFUSED_SESSION);
        session_error(s);
        return;
    }
    if (!c) {
        if (verb.len == 0) {
            session_reply(s, R_UNKNOWN_CMD);
            session_error(s);
            return;
        }
        session_run_hook(s, STAGE_COMMAND, engine_push_command_args, unknown_done);
        return;
    }
    if (c->flags & CMD_ESMTP)
        s->enhanced = true;   /* enhanced codes on every reply once the client used EHLO */
    enum reply_id refused = R_COUNT;
    /* TLS first: in clear on a port that requires it, no command but the
     * pre-TLS rows says anything about the session's state */
    if (s->eng->cfg.tls_required && s->eng->tls && !s->tls && !(c->flags & CMD_BEFORE_TLS))
        refused = R_TLS_REQUIRED;
    else if (!(c->states & ST(s->state)))
        refused = sequence_error(s, c);
    else if (s->eng->cfg.auth_required && !s->user && (c->flags & CMD_NEEDS_AUTH))
        refused = R_AUTH_REQUIRED;
    if (refused != R_COUNT) {
        session_reply(s, refused);
        session_error(s);
        return;
    }
    struct cmd_args a = {.ref = LUA_NOREF};
    enum cmd_check rc = c->check ? c->check(s, arg, &a) : CHECK_OK;
    if (rc != CHECK_OK) {
        engine_release_ref(s, &a.ref);
        envelope_unref(a.env);
        if (rc == CHECK_REFUSED)
            session_error(s);
        return;
    }
    engine_release_ref(s, &s->arg_ref);
    s->arg_ref = a.ref;   /* the hook's argument; proceed takes it over or releases it */
    a.ref = LUA_NOREF;
    envelope_unref(s->args.env);   /* a proceed step took it, or nothing is left */
    s->args = a;
    s->cur_cmd = c;
    session_run_hook(s, c->stage, c->push, row_proceed);
}

static void session_process(struct session *s)
{
    if (s->processing || s->state == SS_CLOSED)
        return;
    s->processing = true;
    while (!s->in_hook && !s->pausing && !s->conn.closing && !s->conn.closed && s->state != SS_TLS &&
           s->state != SS_GREETING) {
        if (s->shutdown && !s->tx.active && (s->state == SS_INIT || s->state == SS_READY)) {
            session_reply(s, R_SHUTDOWN);
            session_close(s);
            break;
        }
        if (conn_queued(&s->conn) >= s->conn.out_high)
            break;   /* the client is not reading its replies: stop until drained */
        struct smtp_event ev;
        if (smtp_parser_next(&s->parser, &ev) == SMTP_EV_NONE)
            break;
        switch (ev.type) {
        case SMTP_EV_COMMAND:
            handle_command(s, ev.ptr, ev.len);
            if ((s->state == SS_DATA || s->state == SS_BDAT) && !s->conn.closing)
                arm_data_timer(s, 0);   /* the message deadline starts (or goes on) */
            break;
        case SMTP_EV_LINE_TOO_LONG:
            logfmt_int(session_log_begin(s, "info", "line_too_long"), "bytes", (long long)ev.len);
            session_log_end(s);
            if (s->state == SS_AUTH) {
                s->state = s->state_before_auth;
                sasl_reset(&s->sasl);
                s->parser.max_line = s->eng->cfg.line_length;
            }
            session_reply(s, R_LINE_TOO_LONG);
            session_error(s);
            break;
        case SMTP_EV_DATA:
        case SMTP_EV_BDAT:
            data_bytes(s, ev.ptr, ev.len);
            break;
        case SMTP_EV_DATA_END:
            data_end(s);
            break;
        case SMTP_EV_BDAT_END:
            bdat_chunk_end(s);
            break;
        case SMTP_EV_NONE:
            break;
        }
    }
    s->processing = false;
    if (smtp_parser_pending(&s->parser) == 0 && s->state != SS_DATA && s->state != SS_BDAT)
        smtp_parser_shrink_to(&s->parser, &s->eng->input_pool);   /* idle sessions keep no input buffer */
    if (s->state != SS_CLOSED && !s->conn.closing)
        conn_set_reading(&s->conn, !s->in_hook && !s->pausing && s->state != SS_GREETING);
    if (conn_eof(&s->conn) && !s->in_hook && !s->pausing && !s->conn.closing)
        conn_close(&s->conn, true);   /* the peer may only have shut its sending side */
}

/* ---- connection callbacks ------------------------------------------- */

static void on_readable(struct conn *c)
{
    struct session *s = from_conn(c);
    session_ref(s);
    for (int i = 0; i < 8; i++) {
        /* Inside a body that fills whole reads (the buffer has grown past
         * one chunk), read 64 KiB at a time, at most 256 KiB per wake-up;
         * small messages keep 16 KiB reads and a buffer that never grows. */
        bool big = (s->state == SS_DATA || s->state == SS_BDAT) &&
                   smtp_parser_capacity(&s->parser) > READ_CHUNK;
        if (big && i >= 4)
            break;
        size_t want = big ? READ_CHUNK_DATA : READ_CHUNK;
        if (smtp_parser_capacity(&s->parser) == 0)
            smtp_parser_take(&s->parser, &s->eng->input_pool);
        char *p = smtp_parser_reserve(&s->parser, want);
        ssize_t n = conn_read(c, p, want);
        if (n > 0) {
            smtp_parser_commit(&s->parser, (size_t)n);
            if (s->state == SS_DATA || s->state == SS_BDAT)
                arm_data_timer(s, (size_t)n);
            if ((size_t)n < want && !c->tr->pending(c))
                break;
            continue;
        }
        break;   /* CONN_AGAIN, EOF (conn_eof) or error */
    }
    session_process(s);
    session_unref(s);
}

static void on_drained(struct conn *c)
{
    struct session *s = from_conn(c);
    session_ref(s);
    session_process(s);
    session_unref(s);
}

static void on_handshake(struct conn *c, bool ok)
{
    struct session *s = from_conn(c);
    if (!ok) {
        session_log_begin(s, "info", "tls_failed");
        session_log_end(s);
        conn_abort(c);
        return;
    }
    session_ref(s);
    starttls_done(s, true);   /* STARTTLS, or implicit TLS before the greeting */
    session_unref(s);
}

static void disconnect_done(struct session *s, const struct stage_reply *r)
{
    (void)r;
    s->disconnect_done = true;
}

static void on_closed(struct conn *c)
{
    struct session *s = from_conn(c);
    s->state = SS_CLOSED;
    ev_timer_stop(c->loop, &s->timer);
    ev_timer_stop(c->loop, &s->pause_timer);
    s->pausing = false;
    worker_forget_conn(s->w, c);
    bool aborted = s->in_hook;
    if (aborted)
        engine_abort_hook(s);   /* the client left; its waiting hook is abandoned */
    s->in_hook = false;
    s->pending = NULL;
    if (aborted)
        session_unref(s);       /* the abandoned hook's reference (the conn's is still held) */
    logfmt_int(session_log_begin(s, "info", "disconnect"), "errors", s->errors);
    session_log_end(s);
    if (!s->disconnect_done && engine_has_hook(s->eng, HOOK_DISCONNECT))
        session_run_hook(s, STAGE_DISCONNECT, NULL, disconnect_done);
    session_unref(s);   /* the connection's reference */
}

static const struct conn_ops session_conn_ops = {
    on_readable, on_drained, on_handshake, on_closed,
};

/* ---- lifetime -------------------------------------------------------- */

struct session *session_new(struct worker *w, struct session_set *set, int fd, bool implicit_tls,
                            const struct sockaddr_storage *peer, const struct sockaddr_storage *local)
{
    struct session *s = xcalloc(1, sizeof(*s));
    conn_init(&s->conn, w->loop, fd, &session_conn_ops, peer, local);
    s->refs = 1;   /* the connection's, until on_closed */
    s->w = w;
    s->set = set;
    s->eng = w->eng;
    engine_ref(s->eng);
    worker_new_id(w, s->id);
    smtp_parser_init(&s->parser, s->eng->cfg.line_length);
    buf_init(&s->line);
    buf_init(&s->reply);
    buf_init(&s->hook_text);
    buf_init(&s->scratch);
    spool_init(&s->tx.spool);
    buf_init(&s->tx.added);
    s->tx.from_ref = s->tx.msg_ref = LUA_NOREF;
    s->ud_ref = s->arg_ref = s->rcpts_ref = LUA_NOREF;
    s->cur_hook = HOOK_NONE;
    ev_timer_init(&s->timer, timeout_cb, 0, 0);
    s->timer.data = s;
    ev_timer_init(&s->pause_timer, pause_cb, 0, 0);
    s->pause_timer.data = s;
    s->next = set->head;
    if (set->head)
        set->head->prev = s;
    set->head = s;
    set->n++;
    engine_session_open(s);
    struct buf *b = session_log_begin(s, "info", "connect");
    logfmt_str(b, "remote_ip", s->conn.peer_ip);
    logfmt_int(b, "remote_port", s->conn.peer_port);
    logfmt_str(b, "local_ip", s->conn.local_ip);
    logfmt_int(b, "local_port", s->conn.local_port);
    session_log_end(s);
    if (implicit_tls) {
        s->tls_required = true;
        s->state = SS_TLS;
        starttls_begin(s);
    } else {
        session_greet(s);
    }
    return s;
}

void session_ref(struct session *s)
{
    s->refs++;
}

void session_unref(struct session *s)
{
    if (--s->refs == 0)
        session_free(s);
}

static void session_free(struct session *s)
{
    ev_timer_stop(s->w->loop, &s->timer);
    ev_timer_stop(s->w->loop, &s->pause_timer);
    session_tx_reset(s);
    buf_free(&s->tx.added);
    envelope_unref(s->args.env);
    engine_session_close(s);
    sasl_reset(&s->sasl);
    smtp_parser_free(&s->parser);
    buf_free(&s->line);
    buf_free(&s->reply);
    buf_free(&s->hook_text);
    buf_free(&s->scratch);
    free(s->helo);
    free(s->user);
    /* From here no hook, timer or wait of this session can run: specs wait
     * for this line to prove that something did not happen. */
    session_log_begin(s, "info", "session_end");
    session_log_end(s);
    engine_unref(s->eng);
    struct session_set *set = s->set;
    if (s->prev)
        s->prev->next = s->next;
    else
        set->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    set->n--;
    if (set->gone)
        set->gone(set, s);
    free(s);
}

void session_shutdown(struct session *s)
{
    s->shutdown = true;
    if (!s->in_hook && !s->processing && !s->tx.active &&
        (s->state == SS_INIT || s->state == SS_READY || s->state == SS_REFUSED)) {
        session_reply(s, R_SHUTDOWN);
        session_close(s);
    }
}

void session_force_close(struct session *s)
{
    if (s->state == SS_CLOSED)
        return;
    if (!s->conn.closing)
        session_reply(s, R_SHUTDOWN);
    conn_flush(&s->conn);
    conn_abort(&s->conn);
}
