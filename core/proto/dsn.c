/* dsn.c - builds RFC 3464 delivery status notifications: a human-readable
 * part, message/delivery-status with one block per recipient
 * (Final-Recipient, Action, Status, Diagnostic-Code, Original-Recipient
 * from ORCPT), and the original headers or message (RET). Reads the
 * original from the queue file; owns nothing. */
#include "proto/dsn.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DSN_FULL_MAX (10u * 1024 * 1024)


/* header field text: no CR/LF, printable */
static void clean(struct buf *b, const char *s)
{
    for (; s && *s; s++)
        buf_append(b, (*s == '\r' || *s == '\n') ? " " : s, 1);
}

/* xtext (RFC 3461 4): "+XX" is the byte XX */
static void clean_xtext(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; s && *s; s++) {
        const char *h1 = s[0] == '+' && s[1] ? strchr(hex, s[1]) : NULL;
        const char *h2 = h1 && s[2] ? strchr(hex, s[2]) : NULL;
        if (h1 && h2) {
            char c = (char)((h1 - hex) * 16 + (h2 - hex));
            buf_append(b, (c == '\r' || c == '\n' || c == '\0') ? " " : &c, 1);
            s += 2;
        } else {
            buf_append(b, (*s == '\r' || *s == '\n') ? " " : s, 1);
        }
    }
}

bool dsn_wants(const struct qenv *env, const struct qrcpt *r, bool delay)
{
    if (!env->from || !*env->from || (r->notify & QN_NEVER))
        return false;
    if (delay)   /* RFC 3461 4.1: no NOTIFY means FAILURE,DELAY */
        return r->status == QS_DEFERRED && !r->warned && (r->notify == 0 || (r->notify & QN_DELAY));
    if (r->notified)
        return false;
    if (r->status == QS_FAILED)
        return r->notify == 0 || (r->notify & QN_FAILURE);
    if (r->status == QS_DELIVERED)
        return (r->notify & QN_SUCCESS) != 0;
    return false;
}

static const char *status_of(const struct qrcpt *r)
{
    if (r->dsn_code && *r->dsn_code && r->status != QS_DEFERRED)
        return r->dsn_code;
    if (r->status == QS_DEFERRED)   /* a delay: the last temporary status, else 4.0.0 */
        return r->dsn_code && r->dsn_code[0] == '4' ? r->dsn_code : "4.0.0";
    return r->status == QS_DELIVERED ? "2.0.0" : "5.0.0";
}

static const char *action_of(const struct qrcpt *r)
{
    return r->status == QS_FAILED ? "failed" : r->status == QS_DELIVERED ? "delivered" : "delayed";
}

/* Read the original into b: the header section (up to the blank line) or
 * everything when full. */
static void read_original(int fd, uint64_t off, bool full, struct buf *b)
{
    size_t limit = full ? DSN_FULL_MAX : 256 * 1024;
    for (;;) {
        if (buf_used(b) >= limit)
            break;
        char *p = buf_reserve(b, 65536);
        ssize_t n = pread(fd, p, 65536, (off_t)(off + buf_used(b)));
        if (n <= 0)
            break;
        buf_commit(b, (size_t)n);
        if (!full) {
            const char *end = NULL;
            const char *d = buf_peek(b);
            size_t len = buf_used(b);
            if (len >= 2 && !memcmp(d, "\r\n", 2))
                end = d;
            for (size_t i = 0; !end && i + 4 <= len; i++)
                if (!memcmp(d + i, "\r\n\r\n", 4))
                    end = d + i + 2;
            if (end) {
                size_t keep = (size_t)(end - d);
                struct buf t;
                buf_init(&t);
                buf_append(&t, d, keep);
                buf_free(b);
                *b = t;
                return;
            }
        }
    }
}

void dsn_build(const struct qenv *env, int fd, uint64_t off, const char *hostname, const char *dsn_id,
               bool delay, double retry_until, struct buf *out)
{
    char date[64], arrival[64], boundary[80];
    date_rfc5322((time_t)time_wall(), date);
    date_rfc5322((time_t)env->arrival, arrival);
    snprintf(boundary, sizeof(boundary), "%s/%s", dsn_id, hostname);
    bool any_failed = false;
    for (int i = 0; i < env->nrcpts; i++)
        any_failed |= env->rcpts[i].status == QS_FAILED;
    /* a delay warning carries the headers only, whatever RET says */
    bool full = !delay && env->ret && !strcmp(env->ret, "FULL");

    buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", hostname);
    buf_appends(out, "To: <");
    clean(out, env->from);
    buf_appends(out, ">\r\n");
    buf_printf(out, "Subject: %s\r\n",
               delay        ? "Delayed Mail (still being retried)"
               : any_failed ? "Undelivered Mail Returned to Sender"
                            : "Successful Mail Delivery Report");
    buf_printf(out, "Date: %s\r\n", date);
    buf_printf(out, "Message-ID: <%s@%s>\r\n", dsn_id, hostname);
    buf_appends(out, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    buf_printf(out, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n",
               boundary);
    buf_appends(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    buf_printf(out, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary);
    buf_printf(out, "This is the mail system at host %s.\r\n\r\n", hostname);
    if (delay) {
        char until[64];
        date_rfc5322((time_t)retry_until, until);
        buf_printf(out, "Your message could not be delivered yet to the recipients below.\r\n"
                        "It stays in the queue and is tried again until %s.\r\n"
                        "You do not need to send it again.\r\n", until);
    } else {
        buf_appends(out, any_failed ? "Your message could not be delivered to one or more recipients.\r\n"
                                    : "Your message was delivered to the recipients below.\r\n");
    }
    buf_appends(out, "\r\n");
    for (int i = 0; i < env->nrcpts; i++) {
        const struct qrcpt *r = &env->rcpts[i];
        if (!dsn_wants(env, r, delay))
            continue;
        buf_appends(out, "<");
        clean(out, r->address);
        buf_printf(out, ">: %s", action_of(r));
        if (r->diag) {
            buf_appends(out, ": ");
            clean(out, r->diag);
        }
        buf_appends(out, "\r\n");
    }

    buf_printf(out, "\r\n--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary);
    buf_printf(out, "Reporting-MTA: dns; %s\r\n", hostname);
    buf_printf(out, "X-Kurir-Queue-ID: %s\r\n", env->id);
    if (env->envid) {
        buf_appends(out, "Original-Envelope-Id: ");
        clean_xtext(out, env->envid);
        buf_appends(out, "\r\n");
    }
    buf_printf(out, "Arrival-Date: %s\r\n", arrival);
    for (int i = 0; i < env->nrcpts; i++) {
        const struct qrcpt *r = &env->rcpts[i];
        if (!dsn_wants(env, r, delay))
            continue;
        buf_appends(out, "\r\n");
        if (r->orcpt) {
            buf_appends(out, "Original-Recipient: ");
            clean_xtext(out, r->orcpt);
            buf_appends(out, "\r\n");
        }
        buf_appends(out, "Final-Recipient: rfc822; ");
        clean(out, r->address);
        buf_printf(out, "\r\nAction: %s\r\nStatus: %s\r\n", action_of(r), status_of(r));
        if (delay) {
            char until[64];
            date_rfc5322((time_t)retry_until, until);
            buf_printf(out, "Will-Retry-Until: %s\r\n", until);
        }
        if (r->diag) {
            buf_appends(out, "Diagnostic-Code: X-kurir; ");
            clean(out, r->diag);
            buf_appends(out, "\r\n");
        }
    }

    if (fd >= 0) {
        struct buf orig;
        buf_init(&orig);
        read_original(fd, off, full, &orig);
        buf_printf(out, "\r\n--%s\r\nContent-Type: %s\r\n\r\n", boundary,
                   full ? "message/rfc822" : "text/rfc822-headers");
        buf_append(out, buf_peek(&orig), buf_used(&orig));
        buf_free(&orig);
    }
    buf_printf(out, "\r\n--%s--\r\n", boundary);
}
