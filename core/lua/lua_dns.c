/* lua_dns.c - kurir.dns: a, aaaa, addr, mx, txt, ptr. Each lookup runs on
 * the engine's c-ares channel (dns.c) and suspends only the calling task
 * (the task_suspend / task_wake protocol of task.h).
 *
 * Owns the per-lookup struct dns_op: c-ares holds it until it has called
 * back once for every query of the lookup, so it is freed in the last
 * callback, never in waiter->cancel (which only marks it cancelled and
 * forgets the task). Answers are copied in the callbacks and turned
 * into Lua values only when the whole lookup is done. */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <lauxlib.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/dns.h"
#include "lua/engine.h"
#include "proto/logfmt.h"
#include "net/worker.h"
#include "lua/task.h"
#include "proto/util.h"

enum dns_kind { K_A, K_AAAA, K_ADDR, K_MX, K_TXT, K_PTR };

struct dns_op;

struct dns_sub {
    struct dns_op *op;
    int type;                 /* ns_t_* */
    int status;
    unsigned char *abuf;      /* copy of the answer (ARES_SUCCESS only) */
    int alen;
};

struct dns_op {
    struct task_waiter waiter;     /* first: cancel gets &op->waiter */
    struct task *t;                /* NULL once cancelled */
    bool cancelled;
    bool suspended;                /* the hook yielded: wake it when done */
    enum dns_kind kind;
    int pending;                   /* queries c-ares still holds */
    int nsub;
    struct dns_sub sub[2];
    unsigned char addr[16];        /* ptr: the address asked about */
    int addrlen, family;
    struct worker *w;              /* for the dns_dropped log line */
    char sid[24];                  /* the asking session's id ("": a spawned task) */
    char *name;                    /* owned */
};

static void op_free(struct dns_op *op)
{
    for (int i = 0; i < op->nsub; i++)
        free(op->sub[i].abuf);
    free(op->name);
    free(op);
}

/* The task was aborted or the wait timed out: c-ares may still call back, so
 * the op stays allocated until then. */
static void op_cancel(struct task_waiter *w)
{
    struct dns_op *op = (struct dns_op *)w;
    op->cancelled = true;
    op->t = NULL;
}

/* ---- answers to Lua ------------------------------------------------------ */

static void append(lua_State *co, int t)
{
    lua_rawseti(co, t, (lua_Integer)lua_rawlen(co, t) + 1);
}

static int add_addrs(lua_State *co, int t, const struct dns_sub *sub)
{
    struct hostent *h = NULL;
    int rc = sub->type == ns_t_a ? ares_parse_a_reply(sub->abuf, sub->alen, &h, NULL, NULL)
                                 : ares_parse_aaaa_reply(sub->abuf, sub->alen, &h, NULL, NULL);
    if (rc != ARES_SUCCESS)
        return rc;
    for (char **p = h->h_addr_list; *p; p++) {
        char text[INET6_ADDRSTRLEN];
        if (inet_ntop(h->h_addrtype, *p, text, sizeof(text))) {
            lua_pushstring(co, text);
            append(co, t);
        }
    }
    ares_free_hostent(h);
    return ARES_SUCCESS;
}

static int mx_order(const void *a, const void *b)
{
    const struct ares_mx_reply *x = *(struct ares_mx_reply *const *)a;
    const struct ares_mx_reply *y = *(struct ares_mx_reply *const *)b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return strcmp(x->host, y->host);
}

static int add_mx(lua_State *co, int t, const struct dns_sub *sub)
{
    struct ares_mx_reply *mx = NULL;
    int rc = ares_parse_mx_reply(sub->abuf, sub->alen, &mx);
    if (rc != ARES_SUCCESS)
        return rc;
    size_t n = 0;
    for (struct ares_mx_reply *m = mx; m; m = m->next)
        n++;
    struct ares_mx_reply **v = xmalloc(size_mul(n ? n : 1, sizeof(*v)));
    n = 0;
    for (struct ares_mx_reply *m = mx; m; m = m->next)
        v[n++] = m;
    qsort(v, n, sizeof(*v), mx_order);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(co, 0, 2);
        lua_pushinteger(co, v[i]->priority);
        lua_setfield(co, -2, "preference");
        lua_pushstring(co, v[i]->host);
        lua_setfield(co, -2, "host");
        append(co, t);
    }
    free(v);
    ares_free_data(mx);
    return ARES_SUCCESS;
}

/* One string per TXT record: its character-strings concatenated. */
static int add_txt(lua_State *co, int t, const struct dns_sub *sub)
{
    struct ares_txt_ext *txt = NULL;
    int rc = ares_parse_txt_reply_ext(sub->abuf, sub->alen, &txt);
    if (rc != ARES_SUCCESS)
        return rc;
    struct buf b;
    buf_init(&b);
    bool open = false;
    for (struct ares_txt_ext *x = txt; x; x = x->next) {
        if (x->record_start && open) {
            lua_pushlstring(co, buf_peek(&b), buf_used(&b));
            append(co, t);
            buf_reset(&b);
        }
        open = true;
        buf_append(&b, x->txt, x->length);
    }
    if (open) {
        lua_pushlstring(co, buf_peek(&b), buf_used(&b));
        append(co, t);
    }
    buf_free(&b);
    ares_free_data(txt);
    return ARES_SUCCESS;
}

/* c-ares puts every PTR name in h_aliases (h_name is the last of them). */
static int add_ptr(lua_State *co, int t, const struct dns_sub *sub, const struct dns_op *op)
{
    struct hostent *h = NULL;
    int rc = ares_parse_ptr_reply(sub->abuf, sub->alen, op->addr, op->addrlen, op->family, &h);
    if (rc != ARES_SUCCESS)
        return rc;
    if (h->h_aliases && h->h_aliases[0]) {
        for (char **p = h->h_aliases; *p; p++) {
            lua_pushstring(co, *p);
            append(co, t);
        }
    } else if (h->h_name) {
        lua_pushstring(co, h->h_name);
        append(co, t);
    }
    ares_free_hostent(h);
    return ARES_SUCCESS;
}

static const char *error_name(int status)
{
    switch (status) {
    case ARES_ENOTFOUND: return "NXDOMAIN";
    case ARES_ETIMEOUT: return "timeout";
    case ARES_ESERVFAIL: return "servfail";
    case ARES_EREFUSED: return "refused";
    default: return ares_strerror(status);
    }
}

/* Push the lookup's results on co: a table (empty when the name exists
 * without such records), or nil and an error. addr gives the addresses
 * of both families if either has some. */
static int push_results(lua_State *co, const struct dns_op *op)
{
    lua_newtable(co);
    int t = lua_gettop(co);
    int err = ARES_SUCCESS;
    int nxdomain = 0;
    for (int i = 0; i < op->nsub; i++) {
        const struct dns_sub *sub = &op->sub[i];
        int rc = sub->status;
        if (rc == ARES_SUCCESS) {
            switch (op->kind) {
            case K_MX: rc = add_mx(co, t, sub); break;
            case K_TXT: rc = add_txt(co, t, sub); break;
            case K_PTR: rc = add_ptr(co, t, sub, op); break;
            default: rc = add_addrs(co, t, sub); break;
            }
        }
        if (rc == ARES_ENOTFOUND)
            nxdomain++;
        else if (rc != ARES_SUCCESS && rc != ARES_ENODATA && err == ARES_SUCCESS)
            err = rc;
    }
    if (lua_rawlen(co, t) > 0)
        return 1;
    if (err == ARES_SUCCESS && nxdomain == op->nsub)
        err = ARES_ENOTFOUND;
    if (err == ARES_SUCCESS)
        return 1;
    lua_pop(co, 1);
    lua_pushnil(co);
    lua_pushstring(co, error_name(err));
    return 2;
}

/* ---- queries -------------------------------------------------------------- */

static void query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_sub *sub = arg;
    struct dns_op *op = sub->op;
    sub->status = status;
    if (status == ARES_SUCCESS && abuf && alen > 0) {
        sub->abuf = (unsigned char *)xmemdup(abuf, (size_t)alen);
        sub->alen = alen;
    }
    if (--op->pending > 0)
        return;
    if (op->cancelled) {
        /* One line per abandoned lookup once c-ares is done with it, so
         * that a late answer or timeout is seen to be dropped. Not while
         * the channel is destroyed: the server may be gone by then. */
        if (status != ARES_EDESTRUCTION && op->w) {
            struct buf *b = &op->w->log;
            buf_reset(b);
            logfmt_begin(b, "info", op->sid[0] ? op->sid : NULL, "dns_dropped");
            logfmt_str(b, "name", op->name);
            logfmt_str(b, "status", ares_strerror(status));
            worker_log_end(op->w);
        }
        op_free(op);
        return;
    }
    if (!op->suspended)
        return;   /* answered inside dns_query: lookup() takes it from here */
    /* A waiting op is never destroyed with its channel: the channel goes at
     * lua_close, after every task (and so every wait) has ended. */
    struct task *t = op->t;
    int n = push_results(t->co, op);
    op_free(op);
    task_wake(t, n);
}

/* Continuation: the results task_wake pushed (or nil, "timeout"). */
static int lookup_continue(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    return lua_gettop(L) - (int)ctx;
}

static int lookup(lua_State *L, enum dns_kind kind, const char *name, int t1, int t2,
                  const unsigned char *addr, int addrlen, int family)
{
    struct task *t = task_waiting(L);
    if (!t)
        return luaL_error(L, "kurir.dns: lookups can only run inside a hook or a task (not at load "
                             "time or in a coroutine of the script)");
    struct dns *d = dns_channel(L);
    struct dns_op *op = xcalloc(1, sizeof(*op));
    op->waiter.cancel = op_cancel;
    op->t = t;
    op->w = t->eng->w;
    snprintf(op->sid, sizeof(op->sid), "%s", t->sid ? t->sid : "");
    op->name = xstrdup(name);
    op->kind = kind;
    op->nsub = t2 ? 2 : 1;
    op->sub[0].type = t1;
    op->sub[1].type = t2;
    if (addr) {
        memcpy(op->addr, addr, (size_t)addrlen);
        op->addrlen = addrlen;
        op->family = family;
    }
    op->pending = op->nsub;
    for (int i = 0; i < op->nsub; i++) {
        op->sub[i].op = op;
        dns_query(d, name, op->sub[i].type, query_cb, &op->sub[i]);
    }
    if (op->pending == 0) {
        int n = push_results(L, op);
        op_free(op);
        return n;
    }
    op->suspended = true;
    return task_suspend(L, &op->waiter, dns_wait_limit(d), lookup_continue,
                          (lua_KContext)lua_gettop(L));
}

static const char *check_name(lua_State *L, int i)
{
    size_t len;
    if (lua_type(L, i) != LUA_TSTRING)
        luaL_typeerror(L, i, "string");
    const char *name = lua_tolstring(L, i, &len);
    luaL_argcheck(L, len > 0 && strlen(name) == len, i, "expected a domain name");
    return name;
}

/* (string) -> {string} | nil, string */
static int dns_a(lua_State *L)
{
    return lookup(L, K_A, check_name(L, 1), ns_t_a, 0, NULL, 0, 0);
}

/* (string) -> {string} | nil, string */
static int dns_aaaa(lua_State *L)
{
    return lookup(L, K_AAAA, check_name(L, 1), ns_t_aaaa, 0, NULL, 0, 0);
}

/* (string) -> {string} | nil, string ; IPv4 then IPv6 */
static int dns_addr(lua_State *L)
{
    return lookup(L, K_ADDR, check_name(L, 1), ns_t_a, ns_t_aaaa, NULL, 0, 0);
}

/* (string) -> {{preference = integer, host = string}} | nil, string */
static int dns_mx(lua_State *L)
{
    return lookup(L, K_MX, check_name(L, 1), ns_t_mx, 0, NULL, 0, 0);
}

/* (string) -> {string} | nil, string */
static int dns_txt(lua_State *L)
{
    return lookup(L, K_TXT, check_name(L, 1), ns_t_txt, 0, NULL, 0, 0);
}

/* (string) -> {string} | nil, string ; the address's in-addr/ip6.arpa name */
static int dns_ptr(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        luaL_typeerror(L, 1, "string");
    const char *ip = lua_tostring(L, 1);
    unsigned char a[16];
    char name[80];
    if (inet_pton(AF_INET, ip, a) == 1) {
        snprintf(name, sizeof(name), "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
        return lookup(L, K_PTR, name, ns_t_ptr, 0, a, 4, AF_INET);
    }
    if (inet_pton(AF_INET6, ip, a) == 1) {
        static const char hex[] = "0123456789abcdef";
        char *p = name;
        for (int i = 15; i >= 0; i--) {
            *p++ = hex[a[i] & 15];
            *p++ = '.';
            *p++ = hex[a[i] >> 4];
            *p++ = '.';
        }
        memcpy(p, "ip6.arpa", sizeof("ip6.arpa"));
        return lookup(L, K_PTR, name, ns_t_ptr, 0, a, 16, AF_INET6);
    }
    return luaL_argerror(L, 1, "expected an IPv4 or IPv6 address");
}

static const luaL_Reg dns_funcs[] = {
    {"a", dns_a},
    {"aaaa", dns_aaaa},
    {"addr", dns_addr},
    {"mx", dns_mx},
    {"txt", dns_txt},
    {"ptr", dns_ptr},
    {NULL, NULL},
};

void ldns_open(lua_State *L)
{
    luaL_newlib(L, dns_funcs);
    lua_setfield(L, -2, "dns");
}
