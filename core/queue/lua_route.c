/* lua_route.c - turns route objects (tables whose metatable carries
 * __kurir_route, made by lua/kurir/route.lua) into the flat route string a
 * queue file stores, and runs the rcpt hook for kurir's own messages. The
 * string is the agent name then key=value tokens, sorted, nested arrays
 * flattened as key.N, so that equal routes give equal strings (the
 * per-destination limit groups by it). */
#include "queue/lua_route.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "proto/queue_file.h"
#include "lua/task.h"

bool lroute_is(lua_State *L, int idx)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx))
        return false;
    lua_pushliteral(L, "__kurir_route");
    lua_rawget(L, -2);
    bool ok = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return ok;
}

struct kv {
    char *k;
    char *v;
};

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const struct kv *)a)->k, ((const struct kv *)b)->k);
}

static bool scalar(lua_State *L, int idx, struct buf *b)
{
    int t = lua_type(L, idx);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);   /* a copy for numbers: idx is a copy below */
        buf_append(b, s, n);
        return true;
    }
    if (t == LUA_TBOOLEAN) {
        buf_appends(b, lua_toboolean(L, idx) ? "true" : "false");
        return true;
    }
    return false;
}

int lroute_serialize(lua_State *L, int idx, struct buf *out, char *err, size_t cap)
{
    idx = lua_absindex(L, idx);
    if (!lroute_is(L, idx)) {
        snprintf(err, cap, "not a route (make one with kurir.maildir, kurir.mbox, kurir.pipe, kurir.discard)");
        return -1;
    }
    lua_getfield(L, idx, "agent");
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        snprintf(err, cap, "route without an agent name");
        return -1;
    }
    struct buf agent;
    buf_init(&agent);
    buf_appends(&agent, lua_tostring(L, -1));
    lua_pop(L, 1);
    struct kv *kvs = NULL;
    size_t n = 0, capn = 0;
    int rc = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 1);
            continue;
        }
        const char *key = lua_tostring(L, -2);
        if (!strcmp(key, "agent") || lua_type(L, -1) == LUA_TFUNCTION) {
            lua_pop(L, 1);
            continue;
        }
        int vi = lua_gettop(L);
        int items = lua_istable(L, vi) ? (int)lua_rawlen(L, vi) : 1;
        for (int i = 1; i <= items; i++) {
            struct buf k, v;
            buf_init(&k);
            buf_init(&v);
            buf_appends(&k, key);
            bool ok;
            if (lua_istable(L, vi)) {
                buf_printf(&k, ".%d", i);
                lua_rawgeti(L, vi, i);
                lua_pushvalue(L, -1);
                ok = scalar(L, -1, &v);
                lua_pop(L, 2);
            } else {
                lua_pushvalue(L, vi);
                ok = scalar(L, -1, &v);
                lua_pop(L, 1);
            }
            if (!ok) {
                snprintf(err, cap, "route field %s: only strings, numbers, booleans and lists of them", key);
                buf_free(&k);
                buf_free(&v);
                rc = -1;
                break;
            }
            if (n == capn) {
                capn = capn ? capn * 2 : 8;
                kvs = xrealloc(kvs, size_mul(capn, sizeof(*kvs)));
            }
            kvs[n].k = xmemdup(buf_peek(&k), buf_used(&k));
            kvs[n].v = xmemdup(buf_peek(&v), buf_used(&v));
            n++;
            buf_free(&k);
            buf_free(&v);
        }
        lua_pop(L, 1);
        if (rc < 0) {
            lua_pop(L, 1);   /* the key */
            break;
        }
    }
    if (rc == 0) {
        qsort(kvs, n, sizeof(*kvs), kv_cmp);
        queue_file_token(out, buf_peek(&agent), buf_used(&agent));
        for (size_t i = 0; i < n; i++) {
            buf_append(out, " ", 1);
            queue_file_token(out, kvs[i].k, strlen(kvs[i].k));
            buf_append(out, "=", 1);
            queue_file_token(out, kvs[i].v, strlen(kvs[i].v));
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(kvs[i].k);
        free(kvs[i].v);
    }
    free(kvs);
    buf_free(&agent);
    return rc;
}

struct route_run {
    struct task task;            /* first: the task callbacks get it */
    struct engine *eng;
    lroute_cb cb;
    void *arg;
    char err[256];
};

static void run_free(struct route_run *r)
{
    task_close(&r->task);
    engine_unref(r->eng);
    free(r);
}

static void run_error(struct task *t, const char *msg, const char *tb)
{
    (void)tb;
    struct route_run *r = (struct route_run *)t;
    snprintf(r->err, sizeof(r->err), "rcpt hook: %s", msg ? msg : "?");
}

static void run_done(struct task *t, bool ok, int nres)
{
    struct route_run *r = (struct route_run *)t;
    lua_State *co = t->co;
    struct buf route;
    buf_init(&route);
    int rc = -1;
    if (ok) {
        int base = lua_gettop(co) - nres + 1;
        if (nres >= 1 && !lua_isnil(co, base))
            rc = lroute_serialize(co, base, &route, r->err, sizeof(r->err));
        else
            snprintf(r->err, sizeof(r->err), "%s",
                     nres >= 2 && lua_tostring(co, base + 1) ? lua_tostring(co, base + 1) : "no route");
    }
    lua_settop(co, 0);
    lroute_cb cb = r->cb;
    void *arg = r->arg;
    char err[256];
    snprintf(err, sizeof(err), "%s", r->err);
    run_free(r);
    buf_append(&route, "", 1);
    cb(arg, rc, rc == 0 ? buf_peek(&route) : NULL, rc == 0 ? NULL : err);
    buf_free(&route);
}

static const struct task_ops run_ops = {run_error, run_done};

struct route_run *lroute_internal(struct engine *eng, const char *id, const char *address, lroute_cb cb,
                                     void *arg)
{
    lua_State *L = eng->L;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "kurir.route");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
        lua_settop(L, top);
        return NULL;
    }
    struct route_run *r = xcalloc(1, sizeof(*r));
    r->eng = eng;
    engine_ref(eng);
    r->cb = cb;
    r->arg = arg;
    task_init(&r->task, eng, L, &run_ops, eng->cfg.t_hook);
    lua_State *co = r->task.co;
    lua_getfield(L, -1, "internal");
    lua_xmove(L, co, 1);
    lua_settop(L, top);
    if (eng->hook_ref[HOOK_RCPT] != LUA_NOREF)
        lua_rawgeti(co, LUA_REGISTRYINDEX, eng->hook_ref[HOOK_RCPT]);
    else
        lua_pushnil(co);
    lua_pushstring(co, id);
    lua_pushstring(co, address);
    task_run(&r->task, 3);   /* r may be gone (cb called) */
    return r;
}

void lroute_internal_cancel(struct route_run *r)
{
    task_abort(&r->task);
    run_free(r);
}
