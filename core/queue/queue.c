/* queue.c - the queue manager: the in-memory list of queued messages
 * (recovered from queue.dir at start), the scheduler that hands each due
 * recipient to its route's agent with a per-destination limit, retries
 * and expiry, status lines, delivery status notifications and removal of
 * finished messages. Runs in the event loop; all disk waits go through
 * queue_store's threads. Owns its entries; an entry is freed only after
 * its files are gone and no delivery runs. */
#include "queue/queue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/dsn.h"
#include "proto/logfmt.h"
#include "queue/lua_route.h"
#include "queue/queue_ctl.h"
#include "lua/engine.h"
#include "net/worker.h"

#define QUEUE_MAX_INFLIGHT 256

static struct buf *qlog(struct queue *q, const char *level, const char *event, const char *id)
{
    struct buf *b = &q->w->log;
    buf_reset(b);
    logfmt_begin(b, level, NULL, event);
    if (id)
        logfmt_str(b, "id", id);
    return b;
}

static void qlog_end(struct queue *q)
{
    worker_log_end(q->w);
}

static const struct config *cfg(struct queue *q)
{
    return &q->w->eng->cfg;
}

static void kick(struct queue *q)
{
    if (!q->open || !q->owner)
        return;
    if (q->scheduling) {
        /* a delivery finished inside schedule() (an agent that did not
         * have to wait): run it again right after, whatever it sets */
        q->rekick = true;
        return;
    }
    ev_timer_stop(q->w->loop, &q->timer);
    ev_timer_set(&q->timer, 0, 0);
    ev_timer_start(q->w->loop, &q->timer);
}

/* ---- entries ---------------------------------------------------------------- */

#define QUEUE_ID_BUCKETS 8192u

static unsigned id_bucket(const char *id)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h % QUEUE_ID_BUCKETS;
}

static struct qentry *entry_add(struct queue *q, struct qenv *env)
{
    struct qentry *e = xcalloc(1, sizeof(*e));
    e->env = *env;
    memset(env, 0, sizeof(*env));
    unsigned b = id_bucket(e->env.id);
    e->hnext = q->byid[b];
    q->byid[b] = e;
    e->next = q->head;
    if (q->head)
        q->head->prev = e;
    q->head = e;
    q->count++;
    return e;
}

static void entry_free(struct queue *q, struct qentry *e)
{
    struct qentry **pp = &q->byid[id_bucket(e->env.id)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        q->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    q->count--;
    queue_file_free(&e->env);
    free(e);
}

static struct qentry *entry_find(struct queue *q, const char *id)
{
    if (!q->byid)
        return NULL;
    for (struct qentry *e = q->byid[id_bucket(id)]; e; e = e->hnext)
        if (!strcmp(e->env.id, id))
            return e;
    return NULL;
}

static struct queue_dest *dest_get(struct queue *q, const char *route)
{
    for (struct queue_dest *d = q->dests; d; d = d->next)
        if (!strcmp(d->route, route))
            return d;
    struct queue_dest *d = xcalloc(1, sizeof(*d));
    d->route = xstrdup(route);
    d->next = q->dests;
    q->dests = d;
    return d;
}

static void dest_release(struct queue *q, const char *route)
{
    struct queue_dest **pp = &q->dests;
    while (*pp) {
        struct queue_dest *d = *pp;
        if (!strcmp(d->route, route)) {
            if (--d->running <= 0) {
                *pp = d->next;
                free(d->route);
                free(d);
            }
            return;
        }
        pp = &d->next;
    }
}

static int inflight_total(struct queue *q)
{
    int n = 0;
    for (struct queue_dest *d = q->dests; d; d = d->next)
        n += d->running;
    return n;
}

/* ---- status lines ------------------------------------------------------------- */

static void status_done(struct qjob *j)
{
    struct queue *q = j->arg;
    if (j->err) {
        struct buf *b = qlog(q, "error", "queue_status_failed", j->id);
        logfmt_str(b, "error", j->errtext);
        qlog_end(q);
    }
    queue_store_job_free(j);
    kick(q);
}

static void status_write(struct queue *q, struct qentry *e, int idx, const char *word)
{
    struct qjob *j = queue_store_job(&q->store, QJ_STATUS, status_done, q);
    snprintf(j->id, sizeof(j->id), "%s", e->env.id);
    if (idx < 0) {
        queue_file_status_line(&j->head, -1, word, 0, time_wall(), NULL, NULL);
    } else {
        struct qrcpt *r = &e->env.rcpts[idx];
        queue_file_status_line(&j->head, idx, word, r->attempts, r->next_try, r->diag, r->dsn_code);
    }
    queue_store_submit(&q->store, j);
}

/* ---- commits ------------------------------------------------------------------ */

struct queue_commit {
    struct queue *q;
    struct qenv env;
    queue_commit_cb cb;
    void *arg;
};

static void commit_done(struct qjob *j)
{
    struct queue_commit *c = j->arg;
    struct queue *q = c->q;
    if (j->err) {
        struct buf *b = qlog(q, "error", "queue_commit_failed", j->id);
        logfmt_str(b, "error", j->errtext);
        qlog_end(q);
        queue_file_free(&c->env);
    } else {
        /* body: linked (the spool file became msg/ID), copied (it could not
         * be linked), written (the message was in memory) */
        struct buf *b = qlog(q, "info", "queued", j->id);
        logfmt_int(b, "rcpts", c->env.nrcpts);
        logfmt_str(b, "body", j->linked ? "linked" : j->link ? "copied" : "written");
        qlog_end(q);
        if (q->owner && !entry_find(q, c->env.id)) {
            entry_add(q, &c->env);   /* (a rescan may have found the file first) */
            kick(q);
        } else {
            queue_file_free(&c->env);   /* the owner picks it up from msg/ */
        }
    }
    if (c->cb)
        c->cb(c->arg, j->err, j->errtext);
    free(c);
    queue_store_job_free(j);
}

struct queue_commit *queue_commit(struct queue *q, struct qenv *env, const struct buf *head,
                                  const struct spool *body, queue_commit_cb cb, void *arg)
{
    struct queue_commit *c = xcalloc(1, sizeof(*c));
    c->q = q;
    c->env = *env;
    memset(env, 0, sizeof(*env));
    c->cb = cb;
    c->arg = arg;
    struct qjob *j = queue_store_job(&q->store, QJ_COMMIT, commit_done, c);
    snprintf(j->id, sizeof(j->id), "%s", c->env.id);
    /* A body spilled to a file becomes the queue file itself when the
     * envelope and the added headers fit in the room before it (the
     * envelope then names where the message starts: its `body` line). */
    size_t alen = head ? buf_used(head) : 0;
    uint64_t room = body ? spool_file_offset(body) : 0;
    c->env.body_off = 0;
    if (room > alen) {
        c->env.body_off = room - alen;
        queue_file_format(&c->env, &j->head);
        j->link = buf_used(&j->head) <= c->env.body_off;
        if (!j->link)
            buf_reset(&j->head);
    }
    if (!j->link) {
        c->env.body_off = 0;
        queue_file_format(&c->env, &j->head);
        c->env.body_off = buf_used(&j->head);
    }
    j->env_len = buf_used(&j->head);
    j->body_off = c->env.body_off;
    if (head)
        buf_append(&j->head, buf_peek(head), buf_used(head));
    if (body) {
        if (spool_dup(body, &j->body) < 0) {
            int saved = errno;
            queue_file_free(&c->env);
            free(c);
            queue_store_job_free(j);
            errno = saved;
            return NULL;   /* nothing started; the caller answers */
        }
        j->has_body = true;
    }
    queue_store_submit(&q->store, j);
    return c;
}

void queue_commit_detach(struct queue_commit *c)
{
    if (c)
        c->cb = NULL;
}

/* ---- finishing: DSN, removal ------------------------------------------------------ */

static void remove_done(struct qjob *j)
{
    struct queue *q = j->arg;
    struct qentry *e = entry_find(q, j->id);
    if (j->err) {
        struct buf *b = qlog(q, "error", "queue_remove_failed", j->id);
        logfmt_str(b, "error", j->errtext);
        qlog_end(q);
    }
    if (e) {
        struct buf *b = qlog(q, "info", "queue_done", e->env.id);
        int del = 0, fail = 0;
        for (int i = 0; i < e->env.nrcpts; i++) {
            del += e->env.rcpts[i].status == QS_DELIVERED;
            fail += e->env.rcpts[i].status == QS_FAILED;
        }
        logfmt_int(b, "delivered", del);
        logfmt_int(b, "failed", fail);
        qlog_end(q);
        entry_free(q, e);
    }
    queue_store_job_free(j);
}

static void entry_remove(struct queue *q, struct qentry *e)
{
    e->finishing = true;
    /* grouped with other commits and removals; the removal is durable
     * (msg/ fsync'ed) before the entry is forgotten */
    struct qjob *j = queue_store_job(&q->store, QJ_REMOVE, remove_done, q);
    snprintf(j->id, sizeof(j->id), "%s", e->env.id);
    queue_store_submit(&q->store, j);
}

static bool wants_dsn(const struct qenv *env, const struct qrcpt *r)
{
    return dsn_wants(env, r, false);
}

/* A report on its way: built, routed by the script's rcpt hook (to the
 * sender, else to the postmaster), committed. Final reports (delay false)
 * end with the entry's removal; delay warnings mark their recipients
 * warned. */
struct dsn_route_ctx {
    struct queue *q;
    char id[24];             /* the original message */
    bool delay;
    bool to_postmaster;      /* the sender's address was refused: the fallback */
    struct qenv denv;        /* the DSN's envelope, without its route yet */
    struct buf msg;
    int *idxs;               /* delay: the recipients this warning covers */
    int nidx;
};

static void dsn_ctx_free(struct dsn_route_ctx *c)
{
    queue_file_free(&c->denv);
    buf_free(&c->msg);
    free(c->idxs);
    free(c);
}

/* The entry is done with its report (or the report is given up): a final
 * one removes it, a delay warning lets it go on. */
static void dsn_settled(struct queue *q, struct qentry *e, bool delay)
{
    if (!delay) {
        entry_remove(q, e);
        return;
    }
    e->warning = false;
    if (e->deleted && e->inflight == 0)
        entry_remove(q, e);
    else
        kick(q);
}

static void dsn_committed(void *arg, int err, const char *errtext)
{
    struct dsn_route_ctx *c = arg;
    struct queue *q = c->q;
    struct qentry *e = entry_find(q, c->id);
    if (!e) {
        dsn_ctx_free(c);
        return;
    }
    if (err) {
        struct buf *b = qlog(q, "error", "dsn_failed", e->env.id);
        logfmt_str(b, "error", errtext);
        qlog_end(q);
    }
    if (c->delay) {
        for (int k = 0; k < c->nidx; k++) {
            struct qrcpt *r = &e->env.rcpts[c->idxs[k]];
            r->warned = true;
            status_write(q, e, c->idxs[k], "warned");
        }
    } else {
        for (int i = 0; i < e->env.nrcpts; i++) {
            struct qrcpt *r = &e->env.rcpts[i];
            if (wants_dsn(&e->env, r)) {
                r->notified = true;
                status_write(q, e, i, "notified");
            }
        }
    }
    bool delay = c->delay;
    dsn_ctx_free(c);
    dsn_settled(q, e, delay);
}

static void dsn_routed(void *arg, int rc, const char *route, const char *err);

/* Ask the script's rcpt hook for a route to address (in a task). */
static void dsn_route(struct queue *q, struct qentry *e, struct dsn_route_ctx *c, const char *address)
{
    char dsn_id[24];
    snprintf(dsn_id, sizeof(dsn_id), "%s", c->denv.id);
    e->dsn_routing = true;
    struct route_run *r = lroute_internal(q->w->eng, dsn_id, address, dsn_routed, c);
    if (!r) {
        dsn_routed(c, -1, NULL, "cannot load kurir.route");
        return;
    }
    /* the hook may have finished already: dsn_routed cleared dsn_routing
     * (e itself is freed only after its removal job, never in there) */
    if (e->dsn_routing && !e->dsn_run) {   /* (a postmaster fallback may have set its own) */
        e->dsn_run = r;
        e->dsn_ctx = c;
    }
}

static void dsn_routed(void *arg, int rc, const char *route, const char *err)
{
    struct dsn_route_ctx *c = arg;
    struct queue *q = c->q;
    struct qentry *e = entry_find(q, c->id);
    if (!e) {
        dsn_ctx_free(c);
        return;
    }
    e->dsn_run = NULL;
    e->dsn_ctx = NULL;
    e->dsn_routing = false;
    struct qenv *d = &c->denv;
    const char *kind = c->delay ? "delay" : "final";
    if (rc < 0) {
        struct buf *b = qlog(q, "warn", "dsn_unroutable", e->env.id);
        logfmt_str(b, "dsn_id", d->id);
        logfmt_str(b, "kind", kind);
        logfmt_str(b, "to", d->rcpts[0].address);
        logfmt_str(b, "error", err ? err : "?");
        qlog_end(q);
        if (c->delay) {
            /* a warning is only news: given up (logged), never retried */
            for (int k = 0; k < c->nidx; k++) {
                e->env.rcpts[c->idxs[k]].warned = true;
                status_write(q, e, c->idxs[k], "warned");
            }
            dsn_ctx_free(c);
            dsn_settled(q, e, true);
            return;
        }
        if (!c->to_postmaster) {
            /* like Postfix's double bounce: the report goes to the postmaster */
            c->to_postmaster = true;
            free(d->rcpts[0].address);
            size_t n = strlen(cfg(q)->hostname) + 16;
            d->rcpts[0].address = xcalloc(1, n);
            snprintf(d->rcpts[0].address, n, "postmaster@%s", cfg(q)->hostname);
            dsn_route(q, e, c, d->rcpts[0].address);
            return;
        }
        /* nobody to report to: the message stays, held, until an admin
         * releases it (the report is made again) or deletes it */
        b = qlog(q, "error", "dsn_held", e->env.id);
        logfmt_str(b, "to", e->env.from);
        qlog_end(q);
        dsn_ctx_free(c);
        e->env.held = true;
        e->finishing = false;
        status_write(q, e, -1, "hold");
        return;
    }
    struct buf *b = qlog(q, "info", "dsn", e->env.id);
    logfmt_str(b, "dsn_id", d->id);
    logfmt_str(b, "kind", kind);
    logfmt_str(b, "to", d->rcpts[0].address);
    qlog_end(q);
    d->rcpts[0].route = xstrdup(route);
    struct qenv denv = *d;
    memset(d, 0, sizeof(*d));
    struct buf msg = c->msg;
    buf_init(&c->msg);
    queue_commit(q, &denv, &msg, NULL, dsn_committed, c);
    buf_free(&msg);
}

/* Build a report for e and have it routed: the final one (delay false)
 * or a delay warning for the recipients that want one now. */
static void dsn_start(struct queue *q, struct qentry *e, bool delay)
{
    struct dsn_route_ctx *c = xcalloc(1, sizeof(*c));
    c->q = q;
    c->delay = delay;
    snprintf(c->id, sizeof(c->id), "%s", e->env.id);
    if (delay) {
        c->idxs = xcalloc((size_t)e->env.nrcpts, sizeof(int));
        for (int i = 0; i < e->env.nrcpts; i++)
            if (dsn_wants(&e->env, &e->env.rcpts[i], true))
                c->idxs[c->nidx++] = i;
        e->warning = true;
    }
    struct qenv *d = &c->denv;
    worker_new_id(q->w, d->id);
    buf_init(&c->msg);
    uint64_t off = 0;
    int fd = queue_open_body(q, e, &off);
    dsn_build(&e->env, fd, off, cfg(q)->hostname, d->id, delay, e->env.arrival + cfg(q)->queue_lifetime,
              &c->msg);
    if (fd >= 0)
        close(fd);
    d->arrival = time_wall();
    d->from = xstrdup("");
    d->client = xstrdup("127.0.0.1");
    d->helo = xstrdup(cfg(q)->hostname);
    d->rcpts = xcalloc(1, sizeof(*d->rcpts));
    d->nrcpts = 1;
    d->rcpts[0].address = xstrdup(e->env.from);
    dsn_route(q, e, c, e->env.from);
}

static void entry_finish(struct queue *q, struct qentry *e)
{
    e->finishing = true;
    int n = 0;
    for (int i = 0; i < e->env.nrcpts; i++)
        n += wants_dsn(&e->env, &e->env.rcpts[i]);
    if (n == 0) {
        entry_remove(q, e);
        return;
    }
    dsn_start(q, e, false);
}

/* Is a delay warning due for e (time of the next one in *when if later)? */
static bool warning_due(struct queue *q, struct qentry *e, double now, double *when)
{
    double after = cfg(q)->queue_delay_warning;
    if (after <= 0 || e->warning || e->dsn_routing || e->env.held)
        return false;
    bool any = false;
    for (int i = 0; i < e->env.nrcpts && !any; i++)
        any = dsn_wants(&e->env, &e->env.rcpts[i], true);
    if (!any)
        return false;
    if (now >= e->env.arrival + after)
        return true;
    *when = e->env.arrival + after;
    return false;
}

/* ---- deliveries ------------------------------------------------------------------ */

static double retry_delay(struct queue *q, int attempts)
{
    const struct config *c = cfg(q);
    int i = attempts - 1;
    if (i < 0)
        i = 0;
    if (i >= c->nqueue_retry)
        i = c->nqueue_retry - 1;
    return c->queue_retry[i];
}

static bool is_final(const struct qrcpt *r);

/* One recipient's result: its status and the log line; the word of its
 * status line. */
static const char *rcpt_done(struct queue *q, struct qentry *e, const char *agent, int idx, int result,
                             const char *code, struct buf *diag)
{
    struct qrcpt *r = &e->env.rcpts[idx];
    r->in_flight = false;
    e->inflight--;
    r->attempts++;
    free(r->diag);
    r->diag = buf_used(diag) ? xmemdup(buf_peek(diag), buf_used(diag)) : NULL;
    free(r->dsn_code);
    r->dsn_code = code[0] ? xstrdup(code) : NULL;
    double now = time_wall();
    const char *word;
    if (result == 0) {
        r->status = QS_DELIVERED;
        word = "delivered";
    } else if (result == 2) {
        r->status = QS_FAILED;
        word = "failed";
    } else if (now >= e->env.arrival + cfg(q)->queue_lifetime) {
        r->status = QS_FAILED;
        size_t n = buf_used(diag);
        buf_reset(diag);
        buf_printf(diag, "message expired after %.0f seconds in the queue%s", now - e->env.arrival,
                   n ? "; last error: " : "");
        if (n && r->diag)
            buf_appends(diag, r->diag);
        free(r->diag);
        r->diag = xmemdup(buf_peek(diag), buf_used(diag));
        free(r->dsn_code);
        r->dsn_code = xstrdup("4.4.7");
        word = "failed";
    } else {
        r->status = QS_DEFERRED;
        r->next_try = now + retry_delay(q, r->attempts);
        word = "deferred";
    }
    struct buf *b = qlog(q, result == 0 ? "info" : "warn", word, e->env.id);
    logfmt_str(b, "rcpt", r->address);
    logfmt_str(b, "agent", agent);
    logfmt_int(b, "attempts", r->attempts);
    if (r->dsn_code)
        logfmt_str(b, "status", r->dsn_code);
    if (r->diag)
        logfmt_str(b, "diag", r->diag);
    if (r->status == QS_DEFERRED)
        logfmt_dbl(b, "retry_in", r->next_try - now);
    qlog_end(q);
    return word;
}

void queue_delivery_done(struct delivery *d)
{
    struct queue *q = d->q;
    struct qentry *e = d->e;
    dest_release(q, e->env.rcpts[d->idx].route);
    const char *word = rcpt_done(q, e, d->agent, d->idx, d->result, d->code, &d->diag);
    const char **words = d->nmore ? xcalloc((size_t)d->nmore, sizeof(*words)) : NULL;
    for (int k = 0; k < d->nmore; k++) {
        struct delivery_rcpt *m = &d->more[k];
        words[k] = rcpt_done(q, e, d->agent, m->idx, m->result, m->code, &m->diag);
        buf_free(&m->diag);
    }
    /* The message is done and reports nothing: its durable removal (one
     * fsync of msg/, grouped) records that instead of a status line per
     * recipient that would be unlinked right after. A crash before the
     * removal is durable delivers again, as one before the status line
     * would (Maildir and mbox find their copy). */
    bool complete = e->inflight == 0 && !e->deleted && !e->env.held && !e->warning && !e->dsn_routing;
    for (int i = 0; complete && i < e->env.nrcpts; i++)
        complete = is_final(&e->env.rcpts[i]) && !wants_dsn(&e->env, &e->env.rcpts[i]);
    if (!complete) {
        status_write(q, e, d->idx, word);
        for (int k = 0; k < d->nmore; k++)
            status_write(q, e, d->more[k].idx, words[k]);
    }
    free(words);
    free(d->more);
    buf_free(&d->diag);
    free(d);
    if (e->deleted && e->inflight == 0 && !e->warning)
        entry_remove(q, e);
    kick(q);
}

/* Most recipients in one SMTP/LMTP transaction (RFC 5321 4.5.3.1.8). */
#define QUEUE_BATCH_MAX 100

static const char *domain_of(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

/* For an SMTP or LMTP route: the other due recipients of e with the same
 * route (for MX delivery, no host=, also the same domain) go with idx. */
static void batch_more(struct delivery *d, double now)
{
    if (strcmp(d->agent, "relay") && strcmp(d->agent, "lmtp"))
        return;
    struct qentry *e = d->e;
    const struct qrcpt *first = &e->env.rcpts[d->idx];
    char *host = queue_file_route_get(first->route, "host");
    bool by_domain = !host && !strcmp(d->agent, "relay");
    free(host);
    for (int j = d->idx + 1; j < e->env.nrcpts && d->nmore + 1 < QUEUE_BATCH_MAX; j++) {
        struct qrcpt *r = &e->env.rcpts[j];
        if (r->status == QS_DELIVERED || r->status == QS_FAILED || r->in_flight || r->next_try > now ||
            strcmp(r->route, first->route))
            continue;
        if (by_domain && strcasecmp(domain_of(r->address), domain_of(first->address)))
            continue;
        if (!d->more)
            d->more = xcalloc(QUEUE_BATCH_MAX, sizeof(*d->more));
        struct delivery_rcpt *m = &d->more[d->nmore++];
        m->idx = j;
        buf_init(&m->diag);
        r->in_flight = true;
        e->inflight++;
    }
}

static void delivery_start(struct queue *q, struct qentry *e, int idx)
{
    struct qrcpt *r = &e->env.rcpts[idx];
    struct delivery *d = xcalloc(1, sizeof(*d));
    d->q = q;
    d->e = e;
    d->idx = idx;
    buf_init(&d->diag);
    queue_file_route_agent(r->route, d->agent, sizeof(d->agent));
    r->in_flight = true;
    e->inflight++;
    batch_more(d, time_wall());
    dest_get(q, r->route)->running++;
    if (!strcmp(d->agent, "discard")) {
        agent_discard_start(d);
    } else if (!strcmp(d->agent, "maildir")) {
        agent_maildir_start(d);
    } else if (!strcmp(d->agent, "mbox")) {
        agent_mbox_start(d);
    } else if (!strcmp(d->agent, "pipe")) {
        agent_pipe_start(d);
    } else if (!strcmp(d->agent, "lua") || !strcmp(d->agent, "relay") || !strcmp(d->agent, "lmtp")) {
        agent_lua_start(d);
    } else {
        d->result = 1;
        snprintf(d->code, sizeof(d->code), "4.3.5");
        buf_printf(&d->diag, "no delivery agent \"%s\" in this kurir", d->agent);
        queue_delivery_done(d);
    }
}

static bool is_final(const struct qrcpt *r)
{
    return r->status == QS_DELIVERED || r->status == QS_FAILED;
}

static void schedule(struct queue *q)
{
    double now = time_wall(), next = 0;
    int limit = cfg(q)->queue_concurrency;
    q->scheduling = true;
    q->rekick = false;
    struct qentry *e = q->head;
    while (e) {
        struct qentry *en = e->next;
        if (e->finishing) {
            e = en;
            continue;
        }
        double warn_at = 0;
        if (!q->stopping && warning_due(q, e, now, &warn_at))
            dsn_start(q, e, true);   /* NOTIFY=DELAY: once per recipient */
        else if (warn_at > 0 && (next == 0 || warn_at < next))
            next = warn_at;
        bool all_final = true;
        for (int i = 0; i < e->env.nrcpts; i++) {
            struct qrcpt *r = &e->env.rcpts[i];
            if (is_final(r))
                continue;
            all_final = false;
            if (r->in_flight || e->env.held || q->stopping)
                continue;
            if (r->next_try > now) {
                if (next == 0 || r->next_try < next)
                    next = r->next_try;
                continue;
            }
            if (inflight_total(q) >= QUEUE_MAX_INFLIGHT)
                continue;
            struct queue_dest *d = dest_get(q, r->route);
            if (d->running >= limit) {
                if (d->running == 0)
                    dest_release(q, r->route);
                continue;   /* a finishing delivery kicks the scheduler again */
            }
            delivery_start(q, e, i);
        }
        if (all_final && e->inflight == 0 && !e->warning && !e->env.held)
            entry_finish(q, e);
        e = en;
    }
    q->scheduling = false;
    if (q->rekick) {
        q->rekick = false;
        kick(q);
    } else if (next > 0) {
        double in = next - time_wall();
        ev_timer_stop(q->w->loop, &q->timer);
        ev_timer_set(&q->timer, in > 0.001 ? in : 0.001, 0);
        ev_timer_start(q->w->loop, &q->timer);
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    schedule(w->data);
}

/* ---- helpers for the agents -------------------------------------------------------- */

/* The same reversible encoding as kurir.maildir: '%', control characters,
 * '/' and DEL as %XX, a leading '.' (and in a command argument a leading
 * '-') too, an empty value as "%". */
static void append_safe(struct buf *b, const char *v, size_t n, bool argument)
{
    if (n == 0) {
        buf_append(b, "%", 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        bool enc = c < 0x20 || c == 0x7f || c == '%' || c == '/' || (i == 0 && c == '.') ||
                   (i == 0 && c == '-' && argument);
        if (enc)
            buf_printf(b, "%%%02X", c);
        else
            buf_append(b, &v[i], 1);
    }
}

char *queue_expand(const char *tmpl, const char *address, bool argument)
{
    const char *at = strrchr(address, '@');
    size_t ul = at ? (size_t)(at - address) : strlen(address);
    char *domain = xstrdup(at ? at + 1 : "");
    for (char *p = domain; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    struct buf b;
    buf_init(&b);
    for (const char *p = tmpl; *p;) {
        if (!strncmp(p, "%{user}", 7)) {
            append_safe(&b, address, ul, argument);
            p += 7;
        } else if (!strncmp(p, "%{domain}", 9)) {
            append_safe(&b, domain, strlen(domain), argument);
            p += 9;
        } else if (!strncmp(p, "%{address}", 10)) {
            struct buf a;
            buf_init(&a);
            buf_append(&a, address, ul);
            if (*domain) {
                buf_append(&a, "@", 1);
                buf_appends(&a, domain);
            }
            append_safe(&b, buf_peek(&a), buf_used(&a), argument);
            buf_free(&a);
            p += 10;
        } else {
            buf_append(&b, p, 1);
            p++;
        }
    }
    free(domain);
    char *out = xmemdup(buf_peek(&b), buf_used(&b));
    buf_free(&b);
    return out;
}

int queue_open_body(struct queue *q, struct qentry *e, uint64_t *off)
{
    *off = e->env.body_off;
    return openat(q->store.msgfd, e->env.id, O_RDONLY | O_CLOEXEC);
}

/* ---- recovery ---------------------------------------------------------------------- */

static int read_file_at(int dirfd, const char *name, struct buf *out, size_t max)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    for (;;) {
        if (buf_used(out) >= max)
            break;
        char *p = buf_reserve(out, 65536);
        ssize_t n = read(fd, p, 65536);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        buf_commit(out, (size_t)n);
    }
    close(fd);
    return 0;
}

/* The envelope of msg/id (and its status log) into e. Used by the server
 * at start and by `kurir queue`. */
int queue_load(int msgfd, int stfd, const char *id, struct qenv *e, char *err, size_t cap)
{
    struct buf b;
    buf_init(&b);
    if (read_file_at(msgfd, id, &b, 1 << 20) < 0) {
        snprintf(err, cap, "%s", strerror(errno));
        buf_free(&b);
        return -1;
    }
    int rc = queue_file_parse(buf_peek(&b), buf_used(&b), e, err, cap);
    buf_reset(&b);
    if (rc == 0 && read_file_at(stfd, id, &b, 64u << 20) == 0)
        queue_file_apply_status(e, buf_peek(&b), buf_used(&b));
    buf_free(&b);
    return rc;
}

/* Load the messages of msg/ that are not in memory yet: at start (initial:
 * also drop orphaned status logs and log the count), and in the owner of a
 * queue shared by workers, for what the other workers committed. A message
 * leaves the list only after its files are unlinked, so nothing delivered
 * is found again. */
static void scan(struct queue *q, bool initial)
{
    int fd = dup(q->store.msgfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d)
        return;
    rewinddir(d);   /* a dup shares the offset that the last scan left at the end */
    struct dirent *de;
    int n = 0, bad = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        if (!initial && entry_find(q, de->d_name))
            continue;
        struct qenv env;
        char err[256];
        if (queue_load(q->store.msgfd, q->store.stfd, de->d_name, &env, err, sizeof(err)) < 0) {
            struct buf *b = qlog(q, "error", "queue_bad_file", de->d_name);
            logfmt_str(b, "error", err);
            qlog_end(q);
            bad++;
            continue;
        }
        entry_add(q, &env);
        n++;
    }
    closedir(d);
    if (!initial) {
        if (n) {
            struct buf *b = qlog(q, "info", "queue_picked_up", NULL);
            logfmt_int(b, "messages", n);
            qlog_end(q);
            kick(q);
        }
        return;
    }
    /* status logs whose message is gone (removal cut short) */
    fd = dup(q->store.stfd);
    d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d) {
        struct stat st;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.' && fstatat(q->store.msgfd, de->d_name, &st, 0) < 0 && errno == ENOENT)
                unlinkat(q->store.stfd, de->d_name, 0);
        closedir(d);
    }
    struct buf *b = qlog(q, "info", "queue_recovered", NULL);
    logfmt_str(b, "dir", q->store.dir);
    logfmt_int(b, "messages", n);
    logfmt_int(b, "unreadable", bad);
    qlog_end(q);
}

/* ---- control requests (queue_ctl.c parses them) -------------------------------------- */

int queue_control(struct queue *q, const char *verb, const char *id, struct buf *reply)
{
    struct qentry *e = id && *id ? entry_find(q, id) : NULL;
    if (!strcmp(verb, "flush")) {
        for (struct qentry *x = q->head; x; x = x->next) {
            if (id && *id && x != e)
                continue;
            for (int i = 0; i < x->env.nrcpts; i++)
                x->env.rcpts[i].next_try = 0;
        }
        if (id && *id && !e) {
            buf_printf(reply, "unknown id %s", id);
            return 1;
        }
        kick(q);
        return 0;
    }
    if (!e) {
        buf_printf(reply, "unknown id %s", id ? id : "");
        return 1;
    }
    if (!strcmp(verb, "hold") || !strcmp(verb, "release")) {
        e->env.held = !strcmp(verb, "hold");
        status_write(q, e, -1, verb);
        kick(q);
        return 0;
    }
    if (!strcmp(verb, "delete")) {
        for (int i = 0; i < e->env.nrcpts; i++)
            if (!is_final(&e->env.rcpts[i]))
                e->env.rcpts[i].notified = true;   /* deleted by the admin: no report */
        e->env.held = true;
        e->deleted = true;
        if (e->inflight == 0 && !e->finishing && !e->warning)
            entry_remove(q, e);
        else
            e->finishing = true;   /* removed when its last delivery ends */
        return 0;
    }
    buf_printf(reply, "unknown command %s", verb);
    return 2;
}

/* ---- open / close -------------------------------------------------------------------- */

/* Under workers a commit of another worker may be under way in tmp/: only
 * files nobody wrote for a minute are left over from a crash. */
#define QUEUE_TMP_STALE 60.0

static void become_owner(struct queue *q)
{
    q->owner = true;
    queue_store_clean_tmp(&q->store, q->w->id >= 0 ? QUEUE_TMP_STALE : 0);
    scan(q, true);
    queue_ctl_open(q);
    if (q->w->id >= 0)
        ev_timer_start(q->w->loop, &q->rescan);   /* the other workers' commits */
    kick(q);
}

static void lock_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct queue *q = w->data;
    if (flock(q->lockfd, LOCK_EX | LOCK_NB) < 0)
        return;
    ev_timer_stop(loop, w);
    struct buf *b = qlog(q, "info", "queue_owner", NULL);
    logfmt_int(b, "worker", q->w->id);
    qlog_end(q);
    become_owner(q);
}

static void rescan_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct queue *q = w->data;
    if (!q->stopping)
        scan(q, false);
}

int queue_open(struct queue *q, struct worker *w, char *err, size_t cap)
{
    memset(q, 0, sizeof(*q));
    q->w = w;
    q->ctlfd = q->lockfd = -1;
    const char *dir = w->eng->cfg.queue_dir;
    if (queue_store_open(&q->store, w->loop, dir, err, cap) < 0) {
        queue_store_close(&q->store);
        return -1;
    }
    q->lockfd = openat(q->store.dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (q->lockfd < 0 || (flock(q->lockfd, LOCK_EX | LOCK_NB) < 0 && !(errno == EWOULDBLOCK && w->id >= 0))) {
        snprintf(err, cap, "queue directory %s is in use by another kurir (%s)", dir, strerror(errno));
        if (q->lockfd >= 0)
            close(q->lockfd);
        q->lockfd = -1;
        queue_store_close(&q->store);
        return -1;
    }
    flock(q->lockfd, LOCK_UN);   /* taken again below, in one place */
    q->byid = xcalloc(QUEUE_ID_BUCKETS, sizeof(*q->byid));
    ev_timer_init(&q->timer, timer_cb, 0, 0);
    q->timer.data = q;
    ev_timer_init(&q->lock_retry, lock_retry_cb, 1, 1);
    q->lock_retry.data = q;
    ev_timer_init(&q->rescan, rescan_cb, 1, 1);
    q->rescan.data = q;
    q->open = true;
    if (flock(q->lockfd, LOCK_EX | LOCK_NB) == 0) {
        become_owner(q);
    } else {
        /* another worker owns the queue: commit here, deliver there; take
         * over once the owner is gone (a restart, a rolling reload) */
        ev_timer_start(w->loop, &q->lock_retry);
    }
    return 0;
}

void queue_close(struct queue *q)
{
    if (!q->open)
        return;
    q->stopping = true;
    ev_timer_stop(q->w->loop, &q->timer);
    ev_timer_stop(q->w->loop, &q->lock_retry);
    ev_timer_stop(q->w->loop, &q->rescan);
    queue_ctl_close(q);
    agent_pipe_shutdown(q);
    agent_lua_shutdown(q);
    for (struct qentry *e = q->head; e; e = e->next) {
        if (!e->dsn_run)
            continue;
        lroute_internal_cancel(e->dsn_run);   /* the DSN is made again at the next start */
        dsn_ctx_free(e->dsn_ctx);
        e->dsn_run = NULL;
        e->dsn_ctx = NULL;
    }
    queue_store_close(&q->store);   /* runs what was queued; done callbacks run here */
    struct buf *b = qlog(q, "info", "queue_closed", NULL);
    logfmt_int(b, "messages", q->count);
    logfmt_int(b, "sync_groups", (long long)q->store.batches);
    logfmt_int(b, "grouped_writes", (long long)q->store.grouped_jobs);
    logfmt_int(b, "syncs", (long long)q->store.syncs);
    qlog_end(q);
    q->open = false;
    while (q->head)
        entry_free(q, q->head);
    free(q->byid);
    q->byid = NULL;
    while (q->dests) {
        struct queue_dest *d = q->dests;
        q->dests = d->next;
        free(d->route);
        free(d);
    }
    if (q->lockfd >= 0)
        close(q->lockfd);
}
