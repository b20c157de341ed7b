/* lua_queue.c - msg:enqueue(rcpts), the waiting method that commits the
 * message of a data hook to the queue for the given recipients (each with
 * a route made by a factory): the envelope is built from the transaction
 * (sender with RET/ENVID, recipients with NOTIFY/ORCPT, client), the body
 * is the spool plus the headers kurir adds, and the hook waits until the
 * queue_store threads made it durable. kurir.default.data calls it; so may
 * a script's own data hook. */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/engine_session.h"
#include "queue/lua_route.h"
#include "queue/queue.h"
#include "app/server.h"
#include "lua/task.h"

struct enqueue_op {
    struct task_waiter waiter;     /* first: cancel gets &op->waiter */
    struct task *t;
    struct queue_commit *commit;
};

static void op_cancel(struct task_waiter *w)
{
    struct enqueue_op *op = (struct enqueue_op *)w;
    queue_commit_detach(op->commit);   /* it still becomes durable; nobody waits */
    free(op);
}

static void op_done(void *arg, int err, const char *errtext)
{
    struct enqueue_op *op = arg;
    struct task *t = op->t;
    if (err) {
        lua_pushnil(t->co);
        lua_pushstring(t->co, errtext);
        task_wake(t, 2);
    } else {
        lua_pushboolean(t->co, 1);
        task_wake(t, 1);
    }
    free(op);
}

static int enqueue_continue(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    return lua_gettop(L) - (int)ctx;
}

/* a string field of the table at idx (raw), malloc'ed, or NULL */
static char *field(lua_State *L, int idx, const char *k)
{
    lua_pushstring(L, k);
    lua_rawget(L, idx);
    char *v = lua_type(L, -1) == LUA_TSTRING ? xstrdup(lua_tostring(L, -1)) : NULL;
    lua_pop(L, 1);
    return v;
}

/* params[k] of the address table at idx, malloc'ed, or NULL */
static char *param(lua_State *L, int idx, const char *k)
{
    lua_pushliteral(L, "params");
    lua_rawget(L, idx);
    char *v = NULL;
    if (lua_istable(L, -1))
        v = field(L, lua_gettop(L), k);
    lua_pop(L, 1);
    return v;
}

static unsigned notify_bits(const char *v)
{
    if (!v)
        return 0;
    unsigned n = 0;
    const char *p = v;
    while (*p) {
        size_t l = strcspn(p, ",");
        if (ascii_caseeq(p, l, "NEVER"))
            n |= QN_NEVER;
        else if (ascii_caseeq(p, l, "SUCCESS"))
            n |= QN_SUCCESS;
        else if (ascii_caseeq(p, l, "FAILURE"))
            n |= QN_FAILURE;
        else if (ascii_caseeq(p, l, "DELAY"))
            n |= QN_DELAY;
        p += l;
        if (*p)
            p++;
    }
    return n;
}

/* (message session, {rcpt...}) -> true | nil, err; waits */
int lqueue_enqueue(lua_State *L, struct session *s)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    if (s->tx.queued)
        return luaL_error(L, "msg:enqueue: this message is already queued");
    struct qenv env;
    memset(&env, 0, sizeof(env));
    int n = (int)lua_rawlen(L, 2);
    if (n == 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "no recipients to queue");
        return 2;
    }
    char err[256];
    env.rcpts = xcalloc((size_t)n, sizeof(*env.rcpts));
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        int r = lua_gettop(L);
        struct qrcpt *q = &env.rcpts[env.nrcpts];
        if (!lua_istable(L, r)) {
            queue_file_free(&env);
            return luaL_error(L, "msg:enqueue: recipient %d is not an address table", i);
        }
        q->address = field(L, r, "address");
        env.nrcpts++;
        if (!q->address) {
            queue_file_free(&env);
            return luaL_error(L, "msg:enqueue: recipient %d has no address", i);
        }
        char *nt = param(L, r, "NOTIFY");
        q->notify = notify_bits(nt);
        free(nt);
        q->orcpt = param(L, r, "ORCPT");
        lua_pushliteral(L, "route");
        lua_rawget(L, r);
        struct buf rb;
        buf_init(&rb);
        int rc = lroute_serialize(L, -1, &rb, err, sizeof(err));
        lua_pop(L, 2);
        if (rc < 0) {
            buf_free(&rb);
            lua_pushnil(L);
            lua_pushfstring(L, "<%s>: %s", q->address, err);
            queue_file_free(&env);
            return 2;
        }
        q->route = xmemdup(buf_peek(&rb), buf_used(&rb));
        buf_free(&rb);
    }
    struct queue *qu = server_queue(s->srv, err, sizeof(err));
    if (!qu) {
        queue_file_free(&env);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    snprintf(env.id, sizeof(env.id), "%s", s->tx.id);
    env.arrival = time_wall();
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->tx.from_ref);
    if (lua_istable(L, -1)) {
        int f = lua_gettop(L);
        env.from = field(L, f, "address");
        env.ret = param(L, f, "RET");
        env.envid = param(L, f, "ENVID");
    }
    lua_pop(L, 1);
    if (!env.from)
        env.from = xstrdup("");
    if (env.ret)
        for (char *p = env.ret; *p; p++)
            *p = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32) : *p;
    env.client = xstrdup(s->conn.peer_ip);
    env.helo = s->helo ? xstrdup(s->helo) : NULL;
    struct task *t = task_waiting(L);
    if (!t || t != &s->task) {
        queue_file_free(&env);
        return luaL_error(L, "msg:enqueue: only inside the data hook of this message's session");
    }
    struct enqueue_op *op = xcalloc(1, sizeof(*op));
    op->waiter.cancel = op_cancel;
    op->t = t;
    s->tx.queued = true;
    s->tx.handed = true;   /* the queue has it: not a dropped message */
    op->commit = queue_commit(qu, &env, &s->tx.added, &s->tx.spool, op_done, op);
    if (!op->commit) {
        free(op);
        s->tx.queued = false;
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read the message body: %s", strerror(errno));
        return 2;
    }
    return task_suspend(L, &op->waiter, -1, enqueue_continue, (lua_KContext)lua_gettop(L));
}

