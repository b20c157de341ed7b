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
    struct delivery *d = ((struct lua_run *)t)->d;
    for (int k = 0; k <= d->nmore; k++) {
        struct buf *diag = k == 0 ? &d->diag : &d->more[k - 1].diag;
        *(k == 0 ? &d->result : &d->more[k - 1].result) = 1;
        snprintf(k == 0 ? d->code : d->more[k - 1].code, sizeof(d->code), "4.3.0");
        buf_reset(diag);
        buf_printf(diag, "agent error: %s", msg ? msg : "?");
    }
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

/* One result (the values at co[base], co[base + 1]) into result, code, diag. */
static void take_result(lua_State *co, int base, int n, int *result, char *code, size_t cap, struct buf *diag)
{
    int ty = n > 0 ? lua_type(co, base) : LUA_TNIL;
    const char *text = n > 1 ? lua_tostring(co, base + 1) : NULL;
    int cls;
    if (ty == LUA_TBOOLEAN && lua_toboolean(co, base)) {
        cls = 2;
    } else if (ty == LUA_TNUMBER) {
        int c = (int)lua_tointeger(co, base);
        cls = c / 100;
        if (cls != 2 && cls != 4 && cls != 5)
            cls = 4;
    } else if (ty == LUA_TBOOLEAN) {
        cls = 5;   /* false, why */
    } else {
        cls = 4;   /* nil, why */
    }
    *result = cls == 2 ? 0 : cls == 4 ? 1 : 2;
    enhanced(text, cls, code, cap);
    buf_reset(diag);
    if (text)
        buf_appends(diag, text);
    else if (cls != 2)
        buf_appends(diag, "the agent gave no reason");
}

static void run_done(struct task *t, bool ok, int nres)
{
    struct lua_run *r = (struct lua_run *)t;
    struct delivery *d = r->d;
    lua_State *co = t->co;
    if (ok) {
        int base = lua_gettop(co) - nres + 1;
        if (nres > 0 && lua_type(co, base) == LUA_TTABLE) {
            /* per recipient, in the order given: { {code, text}, ... } */
            for (int k = 0; k <= d->nmore; k++) {
                lua_rawgeti(co, base, k + 1);
                int top = lua_gettop(co);
                int *res = k == 0 ? &d->result : &d->more[k - 1].result;
                char *code = k == 0 ? d->code : d->more[k - 1].code;
                struct buf *diag = k == 0 ? &d->diag : &d->more[k - 1].diag;
                if (lua_istable(co, top)) {
                    lua_rawgeti(co, top, 1);
                    lua_rawgeti(co, top, 2);
                    take_result(co, top + 1, 2, res, code, 16, diag);
                } else {
                    lua_pushnil(co);
                    lua_pushliteral(co, "4.3.0 the agent gave no result for this recipient");
                    take_result(co, top + 1, 2, res, code, 16, diag);
                }
                lua_settop(co, top - 1);
            }
        } else {
            take_result(co, base, nres, &d->result, d->code, sizeof(d->code), &d->diag);
            for (int k = 0; k < d->nmore; k++)   /* one result for all */
                take_result(co, base, nres, &d->more[k].result, d->more[k].code, sizeof(d->more[k].code),
                            &d->more[k].diag);
        }
    }
    lua_settop(co, 0);
    run_free(r);
    queue_delivery_done(d);
}

static const struct task_ops run_ops = {run_error, run_done};

static void fail_now(struct delivery *d, const char *why)
{
    for (int k = 0; k <= d->nmore; k++) {
        *(k == 0 ? &d->result : &d->more[k - 1].result) = 1;
        snprintf(k == 0 ? d->code : d->more[k - 1].code, sizeof(d->code), "4.3.0");
        buf_appends(k == 0 ? &d->diag : &d->more[k - 1].diag, why);
    }
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
    lua_createtable(co, 0, 16);
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
    /* every recipient of this delivery, in order: {address, orcpt, notify} */
    lua_createtable(co, d->nmore + 1, 0);
    for (int k = 0; k <= d->nmore; k++) {
        const struct qrcpt *x = &en->env.rcpts[k == 0 ? d->idx : d->more[k - 1].idx];
        lua_createtable(co, 0, 3);
        lua_pushstring(co, x->address);
        lua_setfield(co, -2, "address");
        if (x->orcpt) {
            lua_pushstring(co, x->orcpt);
            lua_setfield(co, -2, "orcpt");
        }
        lua_pushinteger(co, (lua_Integer)x->notify);
        lua_setfield(co, -2, "notify");
        lua_rawseti(co, -2, k + 1);
    }
    lua_setfield(co, -2, "rcpts");
    const struct config *c = &e->cfg;
    lua_pushnumber(co, c->queue_connection_idle);
    lua_setfield(co, -2, "connection_idle");
    lua_pushinteger(co, c->queue_connection_messages);
    lua_setfield(co, -2, "connection_messages");
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
        /* the recipients stay pending on disk: they are tried again at start */
        for (int k = 0; k < d->nmore; k++)
            buf_free(&d->more[k].diag);
        free(d->more);
        buf_free(&d->diag);
        free(d);
    }
}
