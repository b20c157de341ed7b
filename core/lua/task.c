/* task.c - Lua coroutines that may wait, whoever owns them.
 *
 * Owns: the single resume helper through which every run starts and every
 * waiting function comes back, the wall-clock limit of a run, the wait
 * timer and the deferred wake-up.
 * Uses: the engine's Lua state and event loop; budget.c for the CPU budget
 * of each resume (and of the __close handlers a reset runs). What a run's results mean
 * (a hook's reply, nothing for kurir.spawn) is the owner's business,
 * reported through struct task_ops. */
#include "lua/task.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lua/budget.h"
#include "lua/engine.h"
#include "net/worker.h"
#include "proto/util.h"

static struct ev_loop *loop_of(const struct task *t)
{
    return t->eng->w ? t->eng->w->loop : NULL;
}

struct task *task_current(lua_State *L)
{
    return *(struct task **)lua_getextraspace(L);
}

void task_init(struct task *t, struct engine *e, lua_State *L, const struct task_ops *ops,
               double limit)
{
    t->eng = e;
    t->ops = ops;
    t->limit = limit;
    t->co = lua_newthread(L);
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    *(struct task **)lua_getextraspace(t->co) = t;
    ev_timer_init(&t->timer, NULL, 0, 0);
    t->timer.data = t;
}

static void stop_timer(struct task *t)
{
    struct ev_loop *loop = loop_of(t);
    if (loop)
        ev_timer_stop(loop, &t->timer);
}

/* Make the main thread's extra space name t while t runs (returns what it
 * named before): threads the script creates during the run copy it
 * (lua_newthread), so they know their task. */
static struct task *set_running(struct task *t, struct task *running)
{
    struct task **slot = (struct task **)lua_getextraspace(t->eng->L);
    struct task *prev = *slot;
    *slot = running;
    return prev;
}

/* A run's function is called by body(), in a pcall inside the coroutine.
 * An error raised by a hook (the CPU budget's) leaves Lua's "hooks
 * allowed" flag of its thread off, and only a pcall of that thread puts
 * it back: were the coroutine to die of the error, no hook, so no budget,
 * would ever fire in it again (its next runs, its __close handlers). So
 * the error is caught in the coroutine; body() returns the marker, the
 * message and the traceback instead. */
static const char run_failed = 0;

/* The message handler: the message and the traceback where it was raised.
 * The __close handlers the pcall unwinds next get a fresh budget. */
static int body_msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = luaL_typename(L, 1);
    lua_createtable(L, 2, 0);
    lua_pushstring(L, msg);
    lua_rawseti(L, -2, 1);
    luaL_traceback(L, L, msg, 1);
    /* the last frame is body() itself: not the script's */
    size_t len;
    const char *tb = lua_tolstring(L, -1, &len);
    static const char tail[] = "\n\t[C]: in ?";
    if (len >= sizeof(tail) - 1 && !memcmp(tb + len - (sizeof(tail) - 1), tail, sizeof(tail) - 1)) {
        lua_pushlstring(L, tb, len - (sizeof(tail) - 1));
        lua_remove(L, -2);
    }
    lua_rawseti(L, -2, 2);
    budget_restart();
    return 1;
}

static int body_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    if (status == LUA_OK || status == LUA_YIELD)
        return lua_gettop(L) - 1;   /* the results, above the message handler */
    lua_pushlightuserdata(L, (void *)&run_failed);
    if (lua_istable(L, -2)) {
        lua_rawgeti(L, -2, 1);
        lua_rawgeti(L, -3, 2);
    } else {
        /* the message handler itself failed (out of memory) */
        const char *msg = lua_tostring(L, -2);
        lua_pushstring(L, msg ? msg : luaL_typename(L, -2));
        lua_pushnil(L);
    }
    return 3;
}

/* (fn, ...) -> fn(...) | run_failed, message, traceback */
static int body(lua_State *L)
{
    lua_pushcfunction(L, body_msgh);
    lua_insert(L, 1);
    return body_done(L, lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 1, 0, body_done), 0);
}

/* Reset the coroutine after an error or an abort. Its __close handlers run
 * here, as a run of their own under the CPU budget. This may happen during
 * another task's run (a hook that ends a session waiting in its own). */
static void reset_coroutine(struct task *t)
{
    lua_State *co = t->co;
    struct budget_run run;
    struct task *prev = set_running(t, t);
    t->resetting = true;
    budget_enter(&run, co, t->eng->cfg.cpu_budget);
    lua_resetthread(co);
    budget_leave(&run);
    lua_sethook(co, NULL, 0, 0);   /* the budget's hook, if it was set */
    t->resetting = false;
    set_running(t, prev);
    lua_settop(co, 0);
    *(struct task **)lua_getextraspace(co) = t;
}

/* The run is over. t may be freed by done(): not used after it. */
static void finish(struct task *t, bool ok, int nres)
{
    stop_timer(t);
    t->running = false;
    t->waiting = false;
    t->waiter = NULL;
    t->ops->done(t, ok, nres);
}

static void fail(struct task *t, const char *msg)
{
    t->ops->error(t, msg, NULL);
    reset_coroutine(t);
    finish(t, false, 0);
}

/* The single resume helper: every run's start and every wake-up of a
 * waiting function comes through here. */
static void resume(struct task *t, int nargs)
{
    lua_State *co = t->co;
    lua_State *L = t->eng->L;
    int nres = 0;
    struct budget_run run;
    struct task *prev = set_running(t, t);
    budget_enter(&run, co, t->eng->cfg.cpu_budget);
    int status = lua_resume(co, NULL, nargs, &nres);
    if (budget_leave(&run))
        lua_sethook(co, NULL, 0, 0);   /* over budget: the error is out, so is the hook */
    set_running(t, prev);
    if (status == LUA_YIELD) {
        if (t->waiting)
            return;   /* a kurir waiting function: its completion resumes us */
        fail(t, "coroutine.yield() outside a coroutine of the script; use kurir waiting functions");
    } else if (status == LUA_OK && nres == 3 && lua_touserdata(co, -3) == &run_failed) {
        t->ops->error(t, lua_tostring(co, -2), lua_tostring(co, -1));
        reset_coroutine(t);
        finish(t, false, 0);
    } else if (status == LUA_OK) {
        finish(t, true, nres);
    } else {
        const char *msg = lua_tostring(co, -1);
        if (!msg)
            msg = luaL_typename(co, -1);
        luaL_traceback(L, co, msg, 0);
        t->ops->error(t, msg, lua_tostring(L, -1));
        lua_pop(L, 1);
        reset_coroutine(t);
        finish(t, false, 0);
    }
}

void task_run(struct task *t, int nargs)
{
    t->deadline = t->limit > 0 ? time_mono() + t->limit : 0;
    t->waiting = false;
    t->waiter = NULL;
    t->wake_pending = false;
    t->running = true;
    lua_pushcfunction(t->co, body);
    lua_insert(t->co, -(nargs + 2));
    resume(t, nargs + 1);
}

void task_abort(struct task *t)
{
    stop_timer(t);
    t->wake_pending = false;
    struct task_waiter *waiter = t->waiter;
    t->waiter = NULL;
    if (waiter)
        waiter->cancel(waiter);
    t->waiting = false;
    t->gen++;
    if (t->running && t->co)
        reset_coroutine(t);
    t->running = false;
}

void task_close(struct task *t)
{
    if (t->running)
        task_abort(t);
    stop_timer(t);
    if (t->co) {
        lua_settop(t->co, 0);
        *(struct task **)lua_getextraspace(t->co) = NULL;
        luaL_unref(t->eng->L, LUA_REGISTRYINDEX, t->co_ref);
    }
    t->co = NULL;
    t->co_ref = LUA_NOREF;
}

/* Continuation of kurir.sleep: returns what the wake-up pushed. */
static int sleep_continue(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    return lua_gettop(L) - (int)ctx;
}

/* The wait timer: the run's time limit, a waiter's own timeout, or the end
 * of kurir.sleep. */
static void wait_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct task *t = w->data;
    if (!t->waiting || t->gen != t->armed_gen)
        return;
    t->waiting = false;
    struct task_waiter *waiter = t->waiter;
    t->waiter = NULL;
    if (waiter)
        waiter->cancel(waiter);
    if (t->wait_expired) {
        /* The run used up its limit. It is not resumed at all, so no pcall
         * in the script can catch this and go on waiting. */
        char msg[96];
        snprintf(msg, sizeof(msg), "hook time limit of %g s exceeded while waiting", t->limit);
        fail(t, msg);
        return;
    }
    if (waiter) {
        /* the operation's own timeout: an expected failure, nil + "timeout" */
        lua_pushnil(t->co);
        lua_pushliteral(t->co, "timeout");
        resume(t, 2);
        return;
    }
    resume(t, 0);
}

static bool can_wait(const struct task *t, lua_State *L)
{
    /* lua_isyieldable: a wait started where Lua cannot yield (a C call
     * boundary, a metamethod, a __close handler) must be refused before
     * any operation starts */
    return t && t->co == L && t->running && !t->waiting && !t->resetting && loop_of(t) &&
           lua_isyieldable(L);
}

struct task *task_waiting(lua_State *L)
{
    struct task *t = task_current(L);
    return can_wait(t, L) ? t : NULL;
}

int task_suspend(lua_State *L, struct task_waiter *waiter, double timeout, lua_KFunction k,
                 lua_KContext ctx)
{
    struct task *t = task_current(L);
    if (!can_wait(t, L))
        return luaL_error(L, "this function can only wait inside a hook or a task (not at load "
                             "time, in a coroutine of the script, a metamethod or a callback of a "
                             "C function)");
    t->wait_expired = false;
    if (t->limit > 0) {
        double left = t->deadline - time_mono();
        if (timeout < 0 || timeout >= left) {
            timeout = left > 0 ? left : 0;
            t->wait_expired = true;
        }
    }
    t->waiting = true;
    t->waiter = waiter;
    t->armed_gen = ++t->gen;
    struct ev_loop *loop = loop_of(t);
    ev_timer_stop(loop, &t->timer);
    ev_set_cb(&t->timer, wait_cb);
    if (timeout >= 0 && isfinite(timeout)) {
        ev_timer_set(&t->timer, timeout, 0);
        ev_timer_start(loop, &t->timer);
    }
    return lua_yieldk(L, 0, ctx, k);
}

/* The deferred half of task_wake: resume from the event loop itself. */
static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct task *t = w->data;
    if (!t->wake_pending)
        return;
    t->wake_pending = false;
    t->waiting = false;
    resume(t, t->wake_nres);
}

/* Completion of a waiting operation. The resume is deferred to the next
 * loop iteration: a completion may be reported from inside another task's
 * run (c-ares answering several queries in one call), and one run must
 * never execute nested inside another. */
void task_wake(struct task *t, int nres)
{
    if (!t->waiting || t->wake_pending || !t->co) {
        if (t->co)
            lua_pop(t->co, nres);
        return;
    }
    struct ev_loop *loop = loop_of(t);
    t->waiter = NULL;
    t->wake_pending = true;
    t->wake_nres = nres;
    ev_timer_stop(loop, &t->timer);
    ev_set_cb(&t->timer, wake_cb);
    ev_timer_set(&t->timer, 0, 0);
    ev_timer_start(loop, &t->timer);
}

int task_sleep(lua_State *L, double seconds)
{
    return task_suspend(L, NULL, seconds, sleep_continue, (lua_KContext)lua_gettop(L));
}
