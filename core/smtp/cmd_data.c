/* cmd_data.c - DATA and BDAT (RFC 3030): the message body goes to the
 * transaction's spool file as it arrives while msg_scan watches it; errors
 * found on the way are sticky and answered once, after the terminator or
 * the last octet of the chunk, so the dialogue stays in step. At the end the
 * data hook (or kurir.default.data) decides; the 250 carries the queue id. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "smtp/engine_session.h"
#include "net/worker.h"
#include "smtp/session.h"

static int open_body(struct session *s)
{
    if (s->tx.body_started)
        return 0;
    if (spool_probe_access(&s->eng->spool_probe, s->eng->cfg.spool, ev_now(s->conn.loop)) < 0) {
        struct buf *b = session_log_begin(s, "error", "spool_failed");
        logfmt_str(b, "dir", s->eng->cfg.spool);
        logfmt_str(b, "error", strerror(errno));
        session_log_end(s);
        return -1;
    }
    spool_begin_pooled(&s->tx.spool, s->eng->cfg.spool, &s->eng->body_pool);
    msg_scan_init(&s->tx.scan);
    s->tx.body_started = true;
    return 0;
}

/* DATA ------------------------------------------------------------------------ */

static enum cmd_check data_check(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    (void)a;
    enum reply_id why = arg.len ? R_SYNTAX : s->tx.bdat ? R_BDAT_MIXED : R_COUNT;
    if (why == R_COUNT)
        return CHECK_OK;
    session_reply(s, why);
    return CHECK_REFUSED;
}

static void data_proceed(struct session *s, const struct stage_reply *r)
{
    (void)r;
    if (open_body(s) < 0) {
        session_reply(s, R_LOCAL_ERROR);
        return;
    }
    s->state = SS_DATA;
    smtp_parser_start_data(&s->parser);
    session_reply(s, R_DATA_GO);
}

void data_bytes(struct session *s, const char *p, size_t n)
{
    struct tx *t = &s->tx;
    if (!t->body_started || t->bdat_bad || t->too_big)
        return;
    if (t->spool.size + n > s->eng->cfg.message_size) {
        t->too_big = true;
        return;
    }
    if (s->drop_data && t->spool.size + n >= s->drop_data_at) {
        /* fault injection (s:drop(n)): cut the connection mid-body */
        s->drop_data = false;
        t->too_big = true;
        struct buf *lb = session_log_begin(s, "info", "dropped");
        logfmt_str(lb, "stage", "data");
        logfmt_int(lb, "bytes", (long long)(t->spool.size + n));
        session_log_end(s);
        conn_abort(&s->conn);
        return;
    }
    spool_append(&t->spool, p, n);
    msg_scan_feed(&t->scan, p, n);
}

/* The end of a message (DATA terminator or BDAT LAST) --------------------------- */

static void log_summary(struct session *s, int code, size_t reply_at)
{
    /* the reply just queued: from reply_at to the end of the output queue */
    size_t rlen;
    const char *reply = conn_queued_since(&s->conn, reply_at, &rlen);
    while (rlen && (reply[rlen - 1] == '\n' || reply[rlen - 1] == '\r'))
        rlen--;
    /* the envelope, not the script's tables: what the message is */
    const struct envelope *e = s->tx.env;
    struct buf *rc = &s->scratch;
    buf_reset(rc);
    for (int i = 0, n = 0; e && i < e->nrcpts; i++) {
        if (!envelope_rcpt_accepted(e, i))
            continue;
        if (n++ > 0)
            buf_append(rc, ",", 1);
        buf_appends(rc, e->rcpts[i].addr.address);
    }
    const char *from = e && e->has_from ? e->from.address : "";
    struct buf *b = session_log_begin(s, code < 300 ? "info" : "warn", "message");
    logfmt_str(b, "id", s->tx.id);
    logfmt_str(b, "from", from);
    logfmt_mem(b, "rcpts", buf_peek(rc), buf_used(rc));
    logfmt_int(b, "size", (long long)s->tx.spool.size);
    logfmt_int(b, "code", code);
    logfmt_mem(b, "reply", reply, rlen);
    session_log_end(s);
}

static void reset_after(struct session *s, const struct stage_reply *r)
{
    (void)s;
    (void)r;
}

static void end_transaction(struct session *s)
{
    session_tx_reset(s);
    s->state = SS_READY;
    session_run_hook(s, STAGE_TX_END, NULL, reset_after);
    if (s->shutdown && !s->in_hook) {
        session_reply(s, R_SHUTDOWN);
        session_close(s);
    }
}

static void message_done(struct session *s, const struct stage_reply *r)
{
    size_t at = conn_queued(&s->conn);
    int code = r->code;
    /* the standard acceptance carries the queue id (SPEC 3; R_QUEUED) */
    session_reply_stage(s, STAGE_DATA, r, s->tx.id);
    log_summary(s, code, at);
    if (code / 100 == 2 && !s->tx.handed) {
        struct buf *b = session_log_begin(s, "warn", "message_dropped");
        logfmt_str(b, "id", s->tx.id);
        logfmt_str(b, "why", "the data hook accepted the message without storing or routing it; "
                             "call msg:discard() (or route to kurir.discard()) if that is intended");
        session_log_end(s);
    }
    if (code / 100 == 2)
        session_junk_clear(s);
    if (s->state != SS_CLOSED)
        end_transaction(s);
}

static void received_header(struct session *s)
{
    char date[32];
    size_t dlen = date_rfc5322(time(NULL), date);
    const char *with = s->esmtp ? (s->tls ? (s->user ? "ESMTPSA" : "ESMTPS") : (s->user ? "ESMTPA" : "ESMTP"))
                                : "SMTP";
    if (s->tx.env && s->tx.env->smtputf8)
        with = s->tls ? (s->user ? "UTF8SMTPSA" : "UTF8SMTPS") : (s->user ? "UTF8SMTPA" : "UTF8SMTP");
    /* The header goes first: straight into tx.added when nothing was
     * added before it (the common case), else into a new buffer that the
     * earlier additions are appended to. */
    struct buf *b = &s->tx.added;
    struct buf nb;
    buf_init(&nb);
    struct buf *o = buf_used(b) ? &nb : b;
    buf_appends(o, "Received: from ");
    /* the HELO name is client data: keep only printable ASCII */
    const char *h = s->helo ? s->helo : "unknown";
    size_t hl = strlen(h);
    char *hp = buf_reserve(o, hl);
    for (size_t i = 0; i < hl; i++) {
        char c = h[i];
        hp[i] = (c > 32 && c < 127 && c != '(' && c != ')') ? c : '?';
    }
    buf_commit(o, hl);
    buf_appends(o, " ([");
    buf_appends(o, s->conn.peer_ip);
    buf_appends(o, "])\r\n\tby ");
    buf_appends(o, s->eng->cfg.hostname);
    buf_appends(o, " (kurir) with ");
    buf_appends(o, with);
    buf_appends(o, " id ");
    buf_appends(o, s->tx.id);
    buf_appends(o, ";\r\n\t");
    buf_append(o, date, dlen);
    buf_appends(o, "\r\n");
    if (o == &nb) {
        buf_append(&nb, buf_peek(b), buf_used(b));
        buf_free(b);
        *b = nb;
    }
}

static void finish_message(struct session *s)
{
    struct tx *t = &s->tx;
    msg_scan_finish(&t->scan);
    enum reply_id err = R_COUNT;
    if (spool_finish(&t->spool) < 0)
        err = R_LOCAL_ERROR;
    else if (t->too_big)
        err = R_SIZE_EXCEEDED;
    else if (t->scan.header_len > s->eng->cfg.header_size)
        err = R_HEADER_TOO_BIG;
    else if (t->scan.bare_lf && s->eng->cfg.bare_lf_reject)
        err = R_BARE_LF;
    else if (t->scan.bare_cr && s->eng->cfg.bare_cr_reject)
        err = R_BARE_CR;
    else if (s->eng->cfg.text_line_length && t->scan.max_line_seen > s->eng->cfg.text_line_length)
        err = R_DATA_LINE_TOO_LONG;
    s->state = SS_RCPT;
    if (err != R_COUNT) {
        size_t at = conn_queued(&s->conn);
        session_reply(s, err);
        log_summary(s, reply_get(err)->code, at);
        end_transaction(s);
        return;
    }
    received_header(s);
    session_run_hook(s, STAGE_DATA, engine_push_message, message_done);
}

void data_end(struct session *s)
{
    finish_message(s);
}

/* BDAT size [LAST] -------------------------------------------------------------- */

static enum cmd_check bdat_check(struct session *s, struct smtp_span arg, struct cmd_args *a)
{
    const char *p = arg.ptr ? arg.ptr : "";
    size_t n = arg.len, i = 0;
    while (i < n && p[i] != ' ')
        i++;
    unsigned long long size;
    if (!smtp_parse_u64(p, i, ~0ull, &size)) {
        session_reply(s, R_BDAT_SYNTAX);
        return CHECK_REFUSED;
    }
    while (i < n && p[i] == ' ')
        i++;
    if (i < n && !ascii_caseeq(p + i, n - i, "LAST")) {
        session_reply(s, R_BDAT_SYNTAX);
        return CHECK_REFUSED;
    }
    a->size = size;
    a->last = i < n;
    return CHECK_OK;
}

/* No hook for BDAT itself: the chunk is taken (or consumed and refused
 * after its last octet, so that the dialogue stays in step). */
static void bdat_proceed(struct session *s, const struct stage_reply *r)
{
    (void)r;
    uint64_t size = s->args.size;
    bool last = s->args.last;
    struct tx *t = &s->tx;
    t->bdat_bad = false;
    if (s->state == SS_INIT) {
        t->bdat_bad = true;
        t->bdat_err = R_NEED_HELO;
    } else if (!t->active) {
        t->bdat_bad = true;
        t->bdat_err = R_NEED_MAIL;
    } else if (!t->env || t->env->accepted == 0) {
        t->bdat_bad = true;
        t->bdat_err = R_NEED_RCPT;
    } else if (open_body(s) < 0) {
        t->bdat_bad = true;
        t->bdat_err = R_LOCAL_ERROR;
    }
    if (!t->bdat_bad) {
        t->bdat = true;
        if (size > s->eng->cfg.message_size || t->spool.size + size > s->eng->cfg.message_size)
            t->too_big = true;
    }
    t->bdat_last = last;
    t->bdat_size = size;
    s->state_before_bdat = s->state;
    s->state = SS_BDAT;
    smtp_parser_start_bdat(&s->parser, size);
}

void bdat_chunk_end(struct session *s)
{
    struct tx *t = &s->tx;
    s->state = s->state_before_bdat;
    if (t->bdat_bad) {
        t->bdat_bad = false;
        session_reply(s, t->bdat_err);
        session_error(s);
        return;
    }
    if (t->bdat_last) {
        finish_message(s);
        return;
    }
    if (t->too_big) {
        size_t at = conn_queued(&s->conn);
        session_reply(s, R_SIZE_EXCEEDED);
        log_summary(s, 552, at);
        end_transaction(s);
        return;
    }
    char n[24];
    snprintf(n, sizeof(n), "%llu", (unsigned long long)t->bdat_size);
    session_reply_arg(s, R_BDAT_CHUNK, n);
}

#define ST_ANY_CMD (ST(SS_INIT) | ST(SS_READY) | ST(SS_MAIL) | ST(SS_RCPT))

/* RFC 2920 3.1: DATA ends a pipelined group (BDAT does not, RFC 3030 4.2) */
const struct cmd cmd_data_table[] = {
    {"DATA", ST(SS_RCPT), CMD_ENDS_GROUP, data_check, STAGE_OTHER, NULL, data_proceed},
    {"BDAT", ST_ANY_CMD, 0, bdat_check, STAGE_OTHER, NULL, bdat_proceed},
    {NULL, 0, 0, NULL, STAGE_OTHER, NULL, NULL},
};
