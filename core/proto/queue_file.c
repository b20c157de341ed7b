/* queue_file.c - format and parse the envelope header of a queued message
 * and its status log (the format is in docs/queue.md). Lines are
 * "keyword token..." with tokens percent-encoded so that no client byte
 * can break a line or a field. Pure: no I/O. */
#include "proto/queue_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool needs_escape(unsigned char c)
{
    return c <= 0x20 || c >= 0x7f || c == '%' || c == '=';
}

void queue_file_token(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!s || n == 0) {
        buf_append(b, "-", 1);
        return;
    }
    if (n == 1 && s[0] == '-') {
        buf_appends(b, "%2D");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (needs_escape(c)) {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(b, e, 3);
        } else {
            buf_append(b, &s[i], 1);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

char *queue_file_untoken(const char *p, size_t n)
{
    if (n == 0 || (n == 1 && p[0] == '-'))
        return NULL;
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            out[o++] = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
            i += 2;
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = '\0';
    return out;
}

static void tok(struct buf *b, const char *s)
{
    buf_append(b, " ", 1);
    queue_file_token(b, s, s ? strlen(s) : 0);
}

static const char *notify_text(unsigned n, char *out, size_t cap)
{
    if (n == 0)
        return "-";
    if (n & QN_NEVER)
        return "NEVER";
    snprintf(out, cap, "%s%s%s", (n & QN_SUCCESS) ? "SUCCESS," : "", (n & QN_FAILURE) ? "FAILURE," : "",
             (n & QN_DELAY) ? "DELAY," : "");
    size_t l = strlen(out);
    if (l)
        out[l - 1] = '\0';
    return out;
}

void queue_file_format(const struct qenv *e, struct buf *out)
{
    buf_appends(out, QUEUE_FILE_MAGIC "\n");
    buf_printf(out, "id %s\n", e->id);
    buf_printf(out, "arrival %.3f\n", e->arrival);
    buf_appends(out, "from");
    tok(out, e->from ? e->from : "");
    buf_appends(out, "\nret");
    tok(out, e->ret);
    buf_appends(out, "\nenvid");
    tok(out, e->envid);
    buf_appends(out, "\nclient");
    tok(out, e->client);
    buf_appends(out, "\nhelo");
    tok(out, e->helo);
    buf_appends(out, "\n");
    for (int i = 0; i < e->nrcpts; i++) {
        const struct qrcpt *r = &e->rcpts[i];
        char nb[64];
        buf_appends(out, "rcpt");
        tok(out, r->address);
        buf_printf(out, " %s", notify_text(r->notify, nb, sizeof(nb)));
        tok(out, r->orcpt);
        buf_printf(out, " %s\n", r->route);   /* already encoded tokens */
    }
    if (e->body_off)   /* a linked spool file: the message starts there, zeros before it */
        buf_printf(out, "body %llu\n", (unsigned long long)e->body_off);
    buf_appends(out, "\n");
}

/* next space-separated token of line [*p, end) */
static bool next_tok(const char **p, const char *end, const char **t, size_t *tn)
{
    while (*p < end && **p == ' ')
        (*p)++;
    if (*p >= end)
        return false;
    *t = *p;
    while (*p < end && **p != ' ')
        (*p)++;
    *tn = (size_t)(*p - *t);
    return true;
}

unsigned queue_file_notify(const char *p, size_t n)
{
    unsigned v = 0;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] != ',')
            j++;
        if (ascii_caseeq(p + i, j - i, "NEVER"))
            v |= QN_NEVER;
        else if (ascii_caseeq(p + i, j - i, "SUCCESS"))
            v |= QN_SUCCESS;
        else if (ascii_caseeq(p + i, j - i, "FAILURE"))
            v |= QN_FAILURE;
        else if (ascii_caseeq(p + i, j - i, "DELAY"))
            v |= QN_DELAY;
        i = j + 1;
    }
    return v;
}

int queue_file_parse(const char *p, size_t n, struct qenv *e, char *err, size_t cap)
{
    memset(e, 0, sizeof(*e));
    const char *end = p + n, *line = p;
    int cap_r = 0;
    bool magic = false, id = false;
    uint64_t body_at = 0;   /* a `body` line: where the message starts */
    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl) {
            snprintf(err, cap, "envelope cut off");
            goto fail;
        }
        if (nl == line) {   /* blank line: the message follows */
            if (!magic || !id) {
                snprintf(err, cap, "no %s", magic ? "id" : "header");
                goto fail;
            }
            uint64_t end_of_header = (uint64_t)(nl + 1 - p);
            if (body_at && body_at < end_of_header) {
                snprintf(err, cap, "body offset inside the envelope");
                goto fail;
            }
            e->body_off = body_at ? body_at : end_of_header;
            return 0;
        }
        if (!magic) {
            if ((size_t)(nl - line) != strlen(QUEUE_FILE_MAGIC) ||
                memcmp(line, QUEUE_FILE_MAGIC, (size_t)(nl - line)) != 0) {
                snprintf(err, cap, "not a kurir queue file");
                goto fail;
            }
            magic = true;
            line = nl + 1;
            continue;
        }
        const char *q = line, *k, *v;
        size_t kn, vn;
        if (!next_tok(&q, nl, &k, &kn)) {
            snprintf(err, cap, "empty line");
            goto fail;
        }
        bool has_v = next_tok(&q, nl, &v, &vn);
        if (!has_v) {
            v = "-";
            vn = 1;
        }
        if (ascii_caseeq(k, kn, "id")) {
            if (vn == 0 || vn >= sizeof(e->id)) {
                snprintf(err, cap, "bad id");
                goto fail;
            }
            memcpy(e->id, v, vn);
            e->id[vn] = '\0';
            id = true;
        } else if (ascii_caseeq(k, kn, "arrival")) {
            char tmp[64];
            snprintf(tmp, sizeof(tmp), "%.*s", (int)(vn < 63 ? vn : 63), v);
            e->arrival = strtod(tmp, NULL);
        } else if (ascii_caseeq(k, kn, "body")) {
            char tmp[32];
            snprintf(tmp, sizeof(tmp), "%.*s", (int)(vn < 31 ? vn : 31), v);
            char *endp;
            unsigned long long at = strtoull(tmp, &endp, 10);
            if (vn == 0 || vn > 15 || *endp || tmp[0] == '-') {
                snprintf(err, cap, "bad body offset");
                goto fail;
            }
            body_at = at;
        } else if (ascii_caseeq(k, kn, "from")) {
            e->from = queue_file_untoken(v, vn);
        } else if (ascii_caseeq(k, kn, "ret")) {
            e->ret = queue_file_untoken(v, vn);
        } else if (ascii_caseeq(k, kn, "envid")) {
            e->envid = queue_file_untoken(v, vn);
        } else if (ascii_caseeq(k, kn, "client")) {
            e->client = queue_file_untoken(v, vn);
        } else if (ascii_caseeq(k, kn, "helo")) {
            e->helo = queue_file_untoken(v, vn);
        } else if (ascii_caseeq(k, kn, "rcpt")) {
            const char *nt, *ot;
            size_t nn, on;
            if (!has_v || !next_tok(&q, nl, &nt, &nn) || !next_tok(&q, nl, &ot, &on)) {
                snprintf(err, cap, "short rcpt line");
                goto fail;
            }
            while (q < nl && *q == ' ')
                q++;
            if (q >= nl) {
                snprintf(err, cap, "rcpt line without route");
                goto fail;
            }
            if (e->nrcpts == cap_r) {
                cap_r = cap_r ? cap_r * 2 : 4;
                e->rcpts = xrealloc(e->rcpts, size_mul((size_t)cap_r, sizeof(*e->rcpts)));
            }
            struct qrcpt *r = &e->rcpts[e->nrcpts++];
            memset(r, 0, sizeof(*r));
            r->address = queue_file_untoken(v, vn);
            if (!r->address)
                r->address = xstrdup("");
            r->notify = (nn == 1 && nt[0] == '-') ? 0 : queue_file_notify(nt, nn);
            r->orcpt = queue_file_untoken(ot, on);
            r->route = xmemdup(q, (size_t)(nl - q));
        }
        /* unknown keywords are skipped: newer writers may add lines */
        line = nl + 1;
    }
    snprintf(err, cap, "envelope cut off");
fail:
    queue_file_free(e);
    return -1;
}

static void set_str(char **dst, char *v)
{
    free(*dst);
    *dst = v;
}

void queue_file_apply_status(struct qenv *e, const char *p, size_t n)
{
    const char *end = p + n, *line = p;
    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl)
            break;   /* torn write: the line never became durable */
        const char *q = line, *t[6];
        size_t tn[6];
        int k = 0;
        while (k < 6 && next_tok(&q, nl, &t[k], &tn[k]))
            k++;
        line = nl + 1;
        if (k < 4)
            continue;
        char num[32];
        snprintf(num, sizeof(num), "%.*s", (int)(tn[0] < 31 ? tn[0] : 31), t[0]);
        if (num[0] == '*') {
            if (ascii_caseeq(t[1], tn[1], "hold"))
                e->held = true;
            else if (ascii_caseeq(t[1], tn[1], "release"))
                e->held = false;
            continue;
        }
        long idx = strtol(num, NULL, 10);
        if (idx < 0 || idx >= e->nrcpts)
            continue;
        struct qrcpt *r = &e->rcpts[idx];
        if (ascii_caseeq(t[1], tn[1], "mbox-begin")) {
            snprintf(num, sizeof(num), "%.*s", (int)(tn[2] < 31 ? tn[2] : 31), t[2]);
            r->mbox_off = strtoull(num, NULL, 10);
            snprintf(num, sizeof(num), "%.*s", (int)(tn[3] < 31 ? tn[3] : 31), t[3]);
            r->mbox_len = strtoull(num, NULL, 10);
            r->mbox_begun = true;
            continue;
        }
        snprintf(num, sizeof(num), "%.*s", (int)(tn[2] < 31 ? tn[2] : 31), t[2]);
        int attempts = (int)strtol(num, NULL, 10);
        snprintf(num, sizeof(num), "%.*s", (int)(tn[3] < 31 ? tn[3] : 31), t[3]);
        double when = strtod(num, NULL);
        if (ascii_caseeq(t[1], tn[1], "delivered")) {
            r->status = QS_DELIVERED;
        } else if (ascii_caseeq(t[1], tn[1], "failed")) {
            r->status = QS_FAILED;
        } else if (ascii_caseeq(t[1], tn[1], "deferred")) {
            r->status = QS_DEFERRED;
            r->next_try = when;
        } else if (ascii_caseeq(t[1], tn[1], "notified")) {
            r->notified = true;
            continue;
        } else if (ascii_caseeq(t[1], tn[1], "warned")) {
            r->warned = true;   /* the delay warning: the status stays */
            continue;
        } else {
            continue;
        }
        r->attempts = attempts;
        if (k > 4)
            set_str(&r->diag, queue_file_untoken(t[4], tn[4]));
        if (k > 5)
            set_str(&r->dsn_code, queue_file_untoken(t[5], tn[5]));
    }
}

void queue_file_status_line(struct buf *b, int idx, const char *word, int attempts, double when,
                            const char *diag, const char *code)
{
    if (idx < 0)
        buf_printf(b, "* %s %d %.3f", word, attempts, when);
    else
        buf_printf(b, "%d %s %d %.3f", idx, word, attempts, when);
    tok(b, diag);
    tok(b, code);
    buf_appends(b, "\n");
}

char *queue_file_route_get(const char *route, const char *key)
{
    const char *p = route, *end = route + strlen(route), *t;
    size_t tn, kl = strlen(key);
    next_tok(&p, end, &t, &tn);   /* the agent */
    while (next_tok(&p, end, &t, &tn)) {
        const char *eq = memchr(t, '=', tn);
        if (!eq)
            continue;
        char *k = queue_file_untoken(t, (size_t)(eq - t));
        bool match = k && strlen(k) == kl && memcmp(k, key, kl) == 0;
        free(k);
        if (match) {
            char *v = queue_file_untoken(eq + 1, tn - (size_t)(eq + 1 - t));
            return v ? v : xstrdup("");
        }
    }
    return NULL;
}

void queue_file_route_agent(const char *route, char *out, size_t cap)
{
    size_t n = strcspn(route, " ");
    snprintf(out, cap, "%.*s", (int)n, route);
}

const char *queue_file_status_name(enum qstatus st, bool held)
{
    switch (st) {
    case QS_DELIVERED:
        return "delivered";
    case QS_FAILED:
        return "failed";
    case QS_DEFERRED:
        return held ? "held" : "deferred";
    case QS_PENDING:
        break;
    }
    return held ? "held" : "pending";
}

void queue_file_free(struct qenv *e)
{
    free(e->from);
    free(e->ret);
    free(e->envid);
    free(e->client);
    free(e->helo);
    for (int i = 0; i < e->nrcpts; i++) {
        free(e->rcpts[i].address);
        free(e->rcpts[i].orcpt);
        free(e->rcpts[i].route);
        free(e->rcpts[i].diag);
        free(e->rcpts[i].dsn_code);
    }
    free(e->rcpts);
    memset(e, 0, sizeof(*e));
}
