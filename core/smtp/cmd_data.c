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
#include "app/server.h"
#include "smtp/session.h"

static int open_body(struct session *s)
{
    if (s->tx.body_started)
        return 0;
    if (spool_open(&s->tx.spool, s->eng->cfg.spool) < 0) {
        struct buf *b = session_log_begin(s, "error", "spool_failed");
        logfmt_str(b, "dir", s->eng->cfg.spool);
        logfmt_str(b, "error", strerror(errno));
        session_log_end(s);
        return -1;
    }
    msg_scan_init(&s->tx.scan);
    s->tx.body_started = true;
    return 0;
}

/* DATA ------------------------------------------------------------------------ */

static int data_check(struct session *s, struct smtp_span arg)
{
    if (arg.len) {
        session_reply(s, R_SYNTAX);
        session_error(s);
        return -1;
    }
    if (s->tx.bdat) {
        session_reply(s, R_BDAT_MIXED);
        session_error(s);
        return -1;
    }
    return 0;
}

static void data_proceed(struct session *s, const struct hook_result *r)
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
        s->conn.eof = true;
        conn_close(&s->conn, false);
        return;
    }
    spool_append(&t->spool, p, n);
    msg_scan_feed(&t->scan, p, n);
}

/* The end of a message (DATA terminator or BDAT LAST) --------------------------- */

static void log_summary(struct session *s, int code, size_t reply_at)
{
    /* the reply just queued: from reply_at to the end of the output queue */
    size_t used = conn_queued(&s->conn);
    const char *reply = buf_peek(&s->conn.out) + (reply_at <= used ? reply_at : used);
    size_t rlen = reply_at <= used ? used - reply_at : 0;
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

static void reset_after(struct session *s, const struct hook_result *r)
{
    (void)s;
    (void)r;
}

static void end_transaction(struct session *s)
{
    session_tx_reset(s);
    s->state = SS_READY;
    session_run_hook(s, HOOK_RESET, NULL, reset_after);
    if (s->shutdown && !s->in_hook) {
        session_reply(s, R_SHUTDOWN);
        session_close(s);
    }
}

static void message_done(struct session *s, const struct hook_result *r)
{
    int code;
    size_t at = conn_queued(&s->conn);
    if (r->kind == HR_DEFAULT || (r->kind == HR_REPLY && r->code / 100 == 2 && r->tlen == 0)) {
        /* the standard acceptance carries the queue id (SPEC 3) */
        const struct reply_def *d = reply_get(R_ACCEPT);
        buf_reset(&s->scratch);
        buf_printf(&s->scratch, "Message accepted: queued as %s", s->tx.id);
        code = r->kind == HR_REPLY ? r->code : d->code;
        session_reply_code(s, code, buf_peek(&s->scratch), buf_used(&s->scratch), STAGE_DATA);
    } else if (r->kind == HR_REJECT || r->kind == HR_ERROR) {
        session_reply(s, R_DATA_REJECT);
        code = reply_get(R_DATA_REJECT)->code;
    } else {
        session_reply_code(s, r->code, r->text, r->tlen, STAGE_DATA);
        code = r->code;
    }
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
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    const char *with = s->esmtp ? (s->tls ? (s->user ? "ESMTPSA" : "ESMTPS") : (s->user ? "ESMTPA" : "ESMTP"))
                                : "SMTP";
    if (s->tx.env && s->tx.env->smtputf8)
        with = s->tls ? (s->user ? "UTF8SMTPSA" : "UTF8SMTPS") : (s->user ? "UTF8SMTPA" : "UTF8SMTP");
    struct buf *b = &s->tx.added;
    struct buf nb;
    buf_init(&nb);
    buf_appends(&nb, "Received: from ");
    /* the HELO name is client data: keep only printable ASCII */
    const char *h = s->helo ? s->helo : "unknown";
    for (const char *p = h; *p; p++)
        buf_append(&nb, (*p > 32 && *p < 127 && *p != '(' && *p != ')') ? p : "?", 1);
    buf_printf(&nb, " ([%s])\r\n\tby %s (kurir) with %s id %s;\r\n\t%s\r\n", s->conn.peer_ip,
               s->eng->cfg.hostname, with, s->tx.id, date);
    buf_append(&nb, buf_peek(b), buf_used(b));
    buf_free(b);
    *b = nb;
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
    session_run_hook(s, HOOK_DATA, engine_push_message, message_done);
}

void data_end(struct session *s)
{
    finish_message(s);
}

/* BDAT size [LAST] -------------------------------------------------------------- */

static int bdat_check(struct session *s, struct smtp_span arg)
{
    const char *p = arg.ptr ? arg.ptr : "";
    size_t n = arg.len, i = 0;
    while (i < n && p[i] != ' ')
        i++;
    unsigned long long size;
    if (!smtp_parse_u64(p, i, ~0ull, &size)) {
        session_reply(s, R_BDAT_SYNTAX);
        session_error(s);
        return -1;
    }
    while (i < n && p[i] == ' ')
        i++;
    bool last = false;
    if (i < n) {
        if (!ascii_caseeq(p + i, n - i, "LAST")) {
            session_reply(s, R_BDAT_SYNTAX);
            session_error(s);
            return -1;
        }
        last = true;
    }
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
    return -1;   /* no hook for BDAT itself: the chunk events follow */
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
    buf_reset(&s->scratch);
    buf_printf(&s->scratch, "%llu octets received", (unsigned long long)t->bdat_size);
    session_reply_code(s, 250, buf_peek(&s->scratch), buf_used(&s->scratch), STAGE_DATA);
}

#define ST_ANY_CMD (ST(SS_INIT) | ST(SS_READY) | ST(SS_MAIL) | ST(SS_RCPT))

const struct cmd cmd_data_table[] = {
    {"DATA", ST(SS_RCPT), 0, data_check, HOOK_NONE, NULL, data_proceed, STAGE_DATA},
    {"BDAT", ST_ANY_CMD, 0, bdat_check, HOOK_NONE, NULL, NULL, STAGE_DATA},
    {NULL, 0, 0, NULL, HOOK_NONE, NULL, NULL, STAGE_OTHER},
};
