/* lua_queue.c - msg:enqueue(rcpts), the waiting method that commits the
 * message of a data hook to the queue for the given recipients (views on
 * the transaction's envelope, each with a route made by a factory): the
 * queue envelope is made from the C envelope (sender with RET/ENVID,
 * recipients with NOTIFY/ORCPT and route string, client), the body
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
#include "lua/binding.h"
#include "lua/engine.h"
#include "net/worker.h"
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

/* (message, {rcpt...}) -> true | nil, err; waits until the queue has it */
static int l_enqueue(lua_State *L)
{
    struct session *s = lmessage_session(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (s->tx.queued)
        return luaL_error(L, "msg:enqueue: this message is already queued");
    int n = (int)lua_rawlen(L, 2);
    if (n == 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "no recipients to queue");
        return 2;
    }
    /* the recipients are views on the envelope: what is queued is read
     * from there (address, NOTIFY, ORCPT, the route string) */
    struct envelope *e = s->tx.env;
    int *idx = xcalloc((size_t)n, sizeof(*idx));
    int k = 0;
    char err[256];
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        int r = laddress_index(L, -1, e);
        if (r < 0) {
            free(idx);
            if (!lua_istable(L, -1))
                return luaL_error(L, "msg:enqueue: recipient %d is not an address table", i);
            return luaL_error(L, "msg:enqueue: recipient %d is not a recipient of this message", i);
        }
        if (!e->rcpts[r].route) {
            /* no storable route: say why, as the route check would */
            lua_getfield(L, -1, "route");
            struct buf rb;
            buf_init(&rb);
            if (lroute_serialize(L, -1, &rb, err, sizeof(err)) == 0)
                snprintf(err, sizeof(err), "the route was changed after it was set (set rcpt.route again)");
            buf_free(&rb);
            free(idx);
            lua_pushnil(L);
            lua_pushfstring(L, "<%s>: %s", e->rcpts[r].addr.address, err);
            return 2;
        }
        lua_pop(L, 1);
        bool dup = false;
        for (int j = 0; j < k; j++)
            dup = dup || idx[j] == r;
        if (!dup)
            idx[k++] = r;
    }
    struct qenv env;
    if (envelope_to_qenv(e, idx, k, &env, err, sizeof(err)) < 0) {
        free(idx);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    struct queue *qu = s->w->ops->queue(s->w, err, sizeof(err));
    if (!qu) {
        free(idx);
        queue_file_free(&env);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    snprintf(env.id, sizeof(env.id), "%s", s->tx.id);
    env.arrival = time_wall();
    env.client = xstrdup(s->conn.peer_ip);
    env.helo = s->helo ? xstrdup(s->helo) : NULL;
    struct task *t = task_waiting(L);
    if (!t || t != &s->task) {
        free(idx);
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
        free(idx);
        s->tx.queued = false;
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read the message body: %s", strerror(errno));
        return 2;
    }
    envelope_mark_queued(e, idx, k);
    free(idx);
    return task_suspend(L, &op->waiter, -1, enqueue_continue, (lua_KContext)lua_gettop(L));
}

void lqueue_register(lua_State *L)
{
    binding_add_method(L, "kurir.message", "enqueue", l_enqueue);
}
