/* agent_lua.c - delivery agents written in Lua, run in a task of the
 * current engine: kurir.deliver(fn) (the script's own function),
 * kurir.relay (SMTP to a smart host or the recipient domain's MX) and
 * kurir.lmtp. The Lua side is lua/kurir/agents.lua: it gets the route
 * string and the queued message (id, sender, recipient, queue file) and
 * returns an SMTP-style result: code and text (2xx delivered, 4xx retried,
 * 5xx failed), or true / false, why / nil, why. A Lua error is a temporary
 * failure. Owns its runs (q->lua_runs) until the task ends. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/engine.h"
#include "queue/queue.h"
#include "net/worker.h"
#include "lua/task.h"

#define AGENT_LUA_LIMIT 600.0   /* seconds one delivery may take */

struct lua_run {
    struct task task;            /* first: the task callbacks get it */
    struct lua_run *next;
    struct delivery *d;
    struct engine *eng;
};

static void run_unlink(struct lua_run *r)
{
    struct lua_run **pp = &r->d->q->lua_runs;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
}

static void run_free(struct lua_run *r)
{
    run_unlink(r);
    task_close(&r->task);
    engine_unref(r->eng);
    free(r);
}

static void run_error(struct task *t, const char *msg, const char *tb)
{
    (void)tb;
    struct lua_run *r = (struct lua_run *)t;
    r->d->result = 1;
    snprintf(r->d->code, sizeof(r->d->code), "4.3.0");
    buf_reset(&r->d->diag);
    buf_printf(&r->d->diag, "agent error: %s", msg ? msg : "?");
}

/* Enhanced status code at the start of text ("5.1.1 ..."), if any. */
static void enhanced(const char *text, int cls, char *out, size_t cap)
{
    int a, b, c, n = 0;
    if (text && sscanf(text, "%d.%d.%d%n", &a, &b, &c, &n) == 3 && n > 0 && a == cls)
        snprintf(out, cap, "%d.%d.%d", a, b, c);
    else
        snprintf(out, cap, "%d.0.0", cls);
}

static void run_done(struct task *t, bool ok, int nres)
{
    struct lua_run *r = (struct lua_run *)t;
    struct delivery *d = r->d;
    lua_State *co = t->co;
    if (ok) {
        int base = lua_gettop(co) - nres + 1;
        int ty = nres > 0 ? lua_type(co, base) : LUA_TNIL;
        const char *text = nres > 1 ? lua_tostring(co, base + 1) : NULL;
        int cls;
        if (ty == LUA_TBOOLEAN && lua_toboolean(co, base)) {
            cls = 2;
        } else if (ty == LUA_TNUMBER) {
            int code = (int)lua_tointeger(co, base);
            cls = code / 100;
            if (cls != 2 && cls != 4 && cls != 5)
                cls = 4;
        } else if (ty == LUA_TBOOLEAN) {
            cls = 5;   /* false, why */
        } else {
            cls = 4;   /* nil, why */
        }
        d->result = cls == 2 ? 0 : cls == 4 ? 1 : 2;
        enhanced(text, cls, d->code, sizeof(d->code));
        buf_reset(&d->diag);
        if (text)
            buf_appends(&d->diag, text);
        else if (cls != 2)
            buf_appends(&d->diag, "the agent gave no reason");
    }
    lua_settop(co, 0);
    run_free(r);
    queue_delivery_done(d);
}

static const struct task_ops run_ops = {run_error, run_done};

static void fail_now(struct delivery *d, const char *why)
{
    d->result = 1;
    snprintf(d->code, sizeof(d->code), "4.3.0");
    buf_appends(&d->diag, why);
    queue_delivery_done(d);
}

void agent_lua_start(struct delivery *d)
{
    struct queue *q = d->q;
    struct engine *e = q->w->eng;
    lua_State *L = e->L;
    struct qentry *en = d->e;
    struct qrcpt *rc = &en->env.rcpts[d->idx];
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "kurir.agents");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
        char why[256];
        snprintf(why, sizeof(why), "cannot load kurir.agents: %s", lua_tostring(L, -1));
        lua_settop(L, top);
        fail_now(d, why);
        return;
    }
    struct lua_run *r = xcalloc(1, sizeof(*r));
    r->d = d;
    r->eng = e;
    engine_ref(e);
    task_init(&r->task, e, L, &run_ops, AGENT_LUA_LIMIT);
    lua_State *co = r->task.co;
    lua_getfield(L, -1, "run");
    lua_xmove(L, co, 1);
    lua_settop(L, top);
    lua_pushstring(co, rc->route);
    lua_createtable(co, 0, 12);
    lua_pushstring(co, en->env.id);
    lua_setfield(co, -2, "id");
    lua_pushstring(co, en->env.from ? en->env.from : "");
    lua_setfield(co, -2, "from");
    if (en->env.ret) {
        lua_pushstring(co, en->env.ret);
        lua_setfield(co, -2, "ret");
    }
    if (en->env.envid) {
        lua_pushstring(co, en->env.envid);
        lua_setfield(co, -2, "envid");
    }
    char path[4200];
    queue_store_path(q->store.dir, "msg", en->env.id, path, sizeof(path));
    lua_pushstring(co, path);
    lua_setfield(co, -2, "path");
    lua_pushinteger(co, (lua_Integer)en->env.body_off);
    lua_setfield(co, -2, "body_off");
    lua_pushstring(co, rc->address);
    lua_setfield(co, -2, "rcpt");
    if (rc->orcpt) {
        lua_pushstring(co, rc->orcpt);
        lua_setfield(co, -2, "orcpt");
    }
    lua_pushinteger(co, (lua_Integer)rc->notify);
    lua_setfield(co, -2, "notify");
    lua_pushinteger(co, rc->attempts);
    lua_setfield(co, -2, "attempts");
    r->next = q->lua_runs;
    q->lua_runs = r;
    task_run(&r->task, 2);   /* r may be gone */
}

void agent_lua_shutdown(struct queue *q)
{
    while (q->lua_runs) {
        struct lua_run *r = q->lua_runs;
        struct delivery *d = r->d;
        task_abort(&r->task);
        run_free(r);
        /* the recipient stays pending on disk: it is tried again at start */
        buf_free(&d->diag);
        free(d);
    }
}
