/* envelope.c - the envelope of a transaction (sender, recipients with their
 * ESMTP parameters, routes and states) and its conversion into the queue
 * file's envelope. Owns copies of every string: nothing points into the
 * command line the values came from. Pure: no I/O. */
#include "proto/envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* room for the first ENV_RCPTS_INLINE recipients right after the struct:
 * most messages need no second allocation for them */
#define ENV_RCPTS_INLINE 4

struct envelope *envelope_new(void)
{
    struct envelope *e = xcalloc(1, sizeof(*e) + ENV_RCPTS_INLINE * sizeof(struct env_rcpt));
    e->refs = 1;
    e->rcpts = (struct env_rcpt *)(e + 1);
    e->cap = ENV_RCPTS_INLINE;
    return e;
}

static bool rcpts_inline(const struct envelope *e)
{
    return e->rcpts == (const struct env_rcpt *)(e + 1);
}

void envelope_ref(struct envelope *e)
{
    e->refs++;
}

static void addr_free(struct env_addr *a)
{
    free(a->address);   /* user and domain live in the same block */
    for (int i = 0; i < a->nparams; i++) {
        free(a->params[i].key);
        free(a->params[i].value);
    }
    free(a->params);
    memset(a, 0, sizeof(*a));
}

void envelope_unref(struct envelope *e)
{
    if (!e || --e->refs > 0)
        return;
    addr_free(&e->from);
    free(e->ret);
    free(e->envid);
    free(e->auth);
    for (int i = 0; i < e->nrcpts; i++) {
        addr_free(&e->rcpts[i].addr);
        free(e->rcpts[i].orcpt);
        free(e->rcpts[i].route);
    }
    if (!rcpts_inline(e))
        free(e->rcpts);
    free(e);
}

static char *span_dup(struct smtp_span s)
{
    return xmemdup(s.ptr ? s.ptr : "", s.ptr ? s.len : 0);
}

static void addr_set(struct env_addr *a, const struct smtp_path *p)
{
    addr_free(a);
    /* address, user and domain: one block of three NUL-terminated strings */
    size_t al = p->address.ptr ? p->address.len : 0;
    size_t ul = p->local.ptr ? p->local.len : 0;
    size_t dl = p->domain.ptr ? p->domain.len : 0;
    char *m = xmalloc(size_add(size_add(al, ul), size_add(dl, 3)));
    a->address = m;
    a->user = m + al + 1;
    a->domain = a->user + ul + 1;
    if (al)
        memcpy(a->address, p->address.ptr, al);
    if (ul)
        memcpy(a->user, p->local.ptr, ul);
    if (dl)
        memcpy(a->domain, p->domain.ptr, dl);
    a->address[al] = a->user[ul] = a->domain[dl] = '\0';
    if (p->nparams > 0)
        a->params = xcalloc((size_t)p->nparams, sizeof(*a->params));
    for (int i = 0; i < p->nparams; i++) {
        const struct smtp_param *pr = &p->params[i];
        char *k = span_dup(pr->key);
        for (char *c = k; *c; c++)
            if (*c >= 'a' && *c <= 'z')
                *c = (char)(*c - 32);
        a->params[i].key = k;
        a->params[i].value = pr->value.ptr ? span_dup(pr->value) : NULL;
    }
    a->nparams = p->nparams;
}

bool envelope_param(const struct env_addr *a, const char *key, const char **value)
{
    for (int i = 0; i < a->nparams; i++) {
        if (ascii_caseeq(a->params[i].key, strlen(a->params[i].key), key)) {
            if (value)
                *value = a->params[i].value;
            return true;
        }
    }
    if (value)
        *value = NULL;
    return false;
}

static char *param_dup(const struct env_addr *a, const char *key)
{
    const char *v;
    return envelope_param(a, key, &v) && v ? xstrdup(v) : NULL;
}

void envelope_set_from(struct envelope *e, const struct smtp_path *p)
{
    addr_set(&e->from, p);
    e->has_from = true;
    const char *v;
    e->size = 0;
    if (envelope_param(&e->from, "SIZE", &v) && v)
        e->size = strtoull(v, NULL, 10);
    e->body = ENV_BODY_UNSET;
    if (envelope_param(&e->from, "BODY", &v) && v)
        e->body = ascii_caseeq(v, strlen(v), "8BITMIME") ? ENV_BODY_8BITMIME : ENV_BODY_7BIT;
    free(e->ret);
    e->ret = param_dup(&e->from, "RET");
    for (char *c = e->ret; c && *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 32);
    free(e->envid);
    e->envid = param_dup(&e->from, "ENVID");
    free(e->auth);
    e->auth = param_dup(&e->from, "AUTH");
    e->smtputf8 = envelope_param(&e->from, "SMTPUTF8", NULL);
}

int envelope_add_rcpt(struct envelope *e, const struct smtp_path *p)
{
    if (e->nrcpts == e->cap) {
        size_t bytes = size_mul((size_t)e->cap * 2, sizeof(*e->rcpts));
        if (rcpts_inline(e)) {
            struct env_rcpt *r = xmalloc(bytes);
            memcpy(r, e->rcpts, (size_t)e->nrcpts * sizeof(*r));
            e->rcpts = r;
        } else {
            e->rcpts = xrealloc(e->rcpts, bytes);
        }
        e->cap *= 2;
    }
    struct env_rcpt *r = &e->rcpts[e->nrcpts];
    memset(r, 0, sizeof(*r));
    addr_set(&r->addr, p);
    const char *v;
    if (envelope_param(&r->addr, "NOTIFY", &v) && v)
        r->notify = queue_file_notify(v, strlen(v));
    r->orcpt = param_dup(&r->addr, "ORCPT");
    r->state = ENV_RCPT_PENDING;
    return e->nrcpts++;
}

static bool valid(const struct envelope *e, int i)
{
    return i >= 0 && i < e->nrcpts;
}

void envelope_rcpt_accept(struct envelope *e, int i)
{
    if (valid(e, i) && e->rcpts[i].state == ENV_RCPT_PENDING) {
        e->rcpts[i].state = ENV_RCPT_ACCEPTED;
        e->accepted++;
    }
}

void envelope_rcpt_refuse(struct envelope *e, int i)
{
    if (valid(e, i) && e->rcpts[i].state == ENV_RCPT_PENDING)
        e->rcpts[i].state = ENV_RCPT_REFUSED;
}

void envelope_rcpt_set_route(struct envelope *e, int i, const char *route)
{
    if (!valid(e, i))
        return;
    free(e->rcpts[i].route);
    e->rcpts[i].route = route ? xstrdup(route) : NULL;
}

static bool accepted(const struct env_rcpt *r)
{
    return r->state == ENV_RCPT_ACCEPTED || r->state == ENV_RCPT_QUEUED;
}

bool envelope_rcpt_accepted(const struct envelope *e, int i)
{
    return valid(e, i) && accepted(&e->rcpts[i]);
}

int envelope_to_qenv(const struct envelope *e, const int *idx, int n, struct qenv *out, char *err,
                     size_t cap)
{
    memset(out, 0, sizeof(*out));
    if (n <= 0) {
        snprintf(err, cap, "no recipients to queue");
        return -1;
    }
    out->rcpts = xcalloc((size_t)n, sizeof(*out->rcpts));
    for (int k = 0; k < n; k++) {
        if (!envelope_rcpt_accepted(e, idx[k])) {
            snprintf(err, cap, "recipient %d is not a recipient of this message", k + 1);
            queue_file_free(out);
            return -1;
        }
        const struct env_rcpt *r = &e->rcpts[idx[k]];
        if (!r->route) {
            snprintf(err, cap, "<%s>: no route to store", r->addr.address);
            queue_file_free(out);
            return -1;
        }
        struct qrcpt *q = &out->rcpts[out->nrcpts++];
        q->address = xstrdup(r->addr.address);
        q->notify = r->notify;
        q->orcpt = r->orcpt ? xstrdup(r->orcpt) : NULL;
        q->route = xstrdup(r->route);
    }
    out->from = xstrdup(e->has_from ? e->from.address : "");
    out->ret = e->ret ? xstrdup(e->ret) : NULL;
    out->envid = e->envid ? xstrdup(e->envid) : NULL;
    return 0;
}

void envelope_mark_queued(struct envelope *e, const int *idx, int n)
{
    for (int k = 0; k < n; k++)
        if (valid(e, idx[k]) && e->rcpts[idx[k]].state == ENV_RCPT_ACCEPTED)
            e->rcpts[idx[k]].state = ENV_RCPT_QUEUED;
}
