/* lua_route.c - runs the rcpt hook for kurir's own messages (DSNs) in a
 * task and turns the route it sets into a route string (lua/lroute.c). */
#include "queue/lua_route.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "lua/task.h"

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
