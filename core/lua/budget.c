/* budget.c - the CPU budget of Lua runs (see budget.h).
 *
 * Owns: the CPU-time timer of the thread that runs Lua and its SIGPROF
 * handler, the record of the run in progress (its ticks, its limit, the
 * task's coroutine and the innermost thread being resumed), the count hook
 * that raises the budget error, and the replacements of coroutine.resume,
 * coroutine.wrap and coroutine.close.
 * Uses: Lua's C API only. Who runs (a task) is task.c's business.
 *
 * Why no count hook during a run: with any hook set, Lua 5.4 calls
 * luaG_traceexec before every VM instruction, whatever the count. Here a
 * run costs two stores at its start and end, and a script's resume two
 * more; the hook is set only once the budget is gone.
 *
 * The handler touches only volatile sig_atomic_t and lock-free atomics,
 * and calls lua_sethook, the one Lua function meant to be called
 * asynchronously (lua.c does it from its SIGINT handler). It runs on the
 * Lua thread only: the timer counts that thread's CPU time and signals
 * that thread (SIGEV_THREAD_ID), so the queue's disk threads neither
 * receive it nor use up a script's budget. fork() does not copy the timer:
 * each serving process starts its own; the master, which runs no hook,
 * has none. */
#include "lua/budget.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define TICK_MAX 0.010
#define TICK_MIN 0.001

_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2, "the SIGPROF handler needs lock-free pointers");

/* The run in progress. active is set last when a run starts and cleared
 * first when it ends, so the handler never sees a half-made record. */
static volatile sig_atomic_t run_active;
static volatile sig_atomic_t run_ticks;     /* ticks seen during the run */
static volatile sig_atomic_t run_limit;     /* ticks allowed: ceil(budget / tick) */
static volatile sig_atomic_t run_exceeded;
static _Atomic(lua_State *) run_base;       /* the task's coroutine */
static _Atomic(lua_State *) run_cur;        /* the innermost thread being resumed */
static double run_seconds;                  /* the budget, for the error message */

static timer_t tick_timer;
static pid_t tick_pid;                      /* the process that made tick_timer */
static double tick_seconds;

static lua_State *load_thread(_Atomic(lua_State *) *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

static void store_thread(_Atomic(lua_State *) *p, lua_State *L)
{
    atomic_store_explicit(p, L, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
}

/* Raises the budget error on every instruction while the run in progress
 * is over its budget; a hook left on a thread by an earlier run removes
 * itself. */
static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (!run_active || !run_exceeded) {
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    luaL_error(L, "CPU budget of %f s exceeded", run_seconds);
}

static void arm_hook(lua_State *L)
{
    if (L)
        lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
}

static void on_tick(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    if (si->si_code != SI_TIMER || !run_active)
        return;   /* a SIGPROF someone sent, or no run: nothing to count */
    int saved = errno;
    /* expirations the kernel merged into this signal count too */
    sig_atomic_t n = si->si_overrun >= 0 && si->si_overrun < INT_MAX - 1 ? si->si_overrun + 1
                                                                          : INT_MAX - 1;
    if (run_exceeded || n > run_limit - run_ticks) {
        run_exceeded = 1;
        /* the innermost thread stops at its next instruction, the task's
         * coroutine when control comes back to it; the script's threads in
         * between are hooked by the resume that returns to them */
        arm_hook(load_thread(&run_cur));
        arm_hook(load_thread(&run_base));
    } else {
        run_ticks += n;
    }
    errno = saved;
}

int budget_start(double seconds, char *err, size_t cap)
{
    double tick = seconds / 10;
    if (!(tick <= TICK_MAX))
        tick = TICK_MAX;
    if (tick < TICK_MIN)
        tick = TICK_MIN;
    pid_t pid = getpid();
    if (tick_pid != pid) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = on_tick;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGPROF, &sa, NULL) < 0) {
            snprintf(err, cap, "sigaction(SIGPROF): %s", strerror(errno));
            return -1;
        }
        struct sigevent ev;
        memset(&ev, 0, sizeof(ev));
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = SIGPROF;
        ev.sigev_notify_thread_id = gettid();
        if (timer_create(CLOCK_THREAD_CPUTIME_ID, &ev, &tick_timer) < 0) {
            snprintf(err, cap, "timer_create(CLOCK_THREAD_CPUTIME_ID): %s", strerror(errno));
            return -1;
        }
        tick_pid = pid;
        tick_seconds = 0;
    }
    if (tick == tick_seconds)
        return 0;
    struct itimerspec its;
    its.it_interval.tv_sec = 0;
    its.it_interval.tv_nsec = (long)(tick * 1e9);
    its.it_value = its.it_interval;
    if (timer_settime(tick_timer, 0, &its, NULL) < 0) {
        snprintf(err, cap, "timer_settime: %s", strerror(errno));
        return -1;
    }
    tick_seconds = tick;
    return 0;
}

void budget_enter(struct budget_run *save, lua_State *co, double seconds)
{
    save->active = run_active;
    run_active = 0;
    save->ticks = run_ticks;
    save->limit = run_limit;
    save->exceeded = run_exceeded;
    save->seconds = run_seconds;
    save->base = load_thread(&run_base);
    save->cur = load_thread(&run_cur);
    /* ceil: the n-th tick of a run comes after more than (n - 1) ticks of
     * its CPU, so a run is stopped past its budget, within one tick */
    double ticks = tick_seconds > 0 ? ceil(seconds / tick_seconds - 1e-9) : 1;
    run_limit = ticks < 1 ? 1 : ticks > INT_MAX / 2 ? INT_MAX / 2 : (sig_atomic_t)ticks;
    run_ticks = 0;
    run_exceeded = 0;
    run_seconds = seconds;
    store_thread(&run_base, co);
    store_thread(&run_cur, co);
    run_active = 1;
}

bool budget_leave(const struct budget_run *save)
{
    run_active = 0;
    bool exceeded = run_exceeded;
    run_ticks = save->ticks;
    run_limit = save->limit;
    run_exceeded = save->exceeded;
    run_seconds = save->seconds;
    store_thread(&run_base, save->base);
    store_thread(&run_cur, save->cur);
    run_active = save->active;
    return exceeded;
}

void budget_restart(void)
{
    sig_atomic_t active = run_active;
    run_active = 0;
    run_ticks = 0;
    run_exceeded = 0;
    run_active = active;
}

/* ---- coroutine.resume / wrap / close ------------------------------------
 * Lua's own (lcorolib.c), with the thread they run made known to the
 * handler while it runs, and the budget hook passed on to the thread that
 * control comes back to. */

/* lua_resume(co, from) with co as the innermost thread meanwhile. */
static int resume_tracked(lua_State *co, lua_State *from, int narg, int *nres)
{
    lua_State *prev = load_thread(&run_cur);
    store_thread(&run_cur, co);
    if (run_active && run_exceeded)
        arm_hook(co);
    int status = lua_resume(co, from, narg, nres);
    store_thread(&run_cur, prev);
    if (run_active && run_exceeded)
        arm_hook(from);
    return status;
}

/* lua_resetthread(co) (its __close handlers run in co). */
static int reset_tracked(lua_State *co, lua_State *from)
{
    lua_State *prev = load_thread(&run_cur);
    store_thread(&run_cur, co);
    if (run_active && run_exceeded)
        arm_hook(co);
    int status = lua_resetthread(co);
    store_thread(&run_cur, prev);
    if (run_active && run_exceeded)
        arm_hook(from);
    return status;
}

static lua_State *getco(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "thread");
    return co;
}

/* n results moved to L, or -1 with the error value on L's top */
static int auxresume(lua_State *L, lua_State *co, int narg)
{
    int nres;
    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, narg);
    int status = resume_tracked(co, L, narg, &nres);
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushliteral(L, "too many results to resume");
            return -1;
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    return -1;
}

/* (thread, ...) -> true, ... | false, err */
static int co_resume(lua_State *L)
{
    lua_State *co = getco(L);
    int r = auxresume(L, co, lua_gettop(L) - 1);
    if (r < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -(r + 1));
    return r + 1;
}

/* the function coroutine.wrap returns: (...) -> ... | raises */
static int co_wrapped(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int r = auxresume(L, co, lua_gettop(L));
    if (r < 0) {
        int status = lua_status(co);
        if (status != LUA_OK && status != LUA_YIELD) {
            status = reset_tracked(co, L);   /* close its to-be-closed variables */
            lua_xmove(co, L, 1);
        }
        if (status != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
            luaL_where(L, 1);
            lua_insert(L, -2);
            lua_concat(L, 2);
        }
        return lua_error(L);
    }
    return r;
}

/* (function) -> function */
static int co_wrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, co_wrapped, 1);
    return 1;
}

enum co_status { COS_RUN, COS_DEAD, COS_YIELD, COS_NORM };
static const char *const co_status_name[] = {"running", "dead", "suspended", "normal"};

static enum co_status co_status_of(lua_State *L, lua_State *co)
{
    if (L == co)
        return COS_RUN;
    switch (lua_status(co)) {
    case LUA_YIELD:
        return COS_YIELD;
    case LUA_OK: {
        lua_Debug ar;
        if (lua_getstack(co, 0, &ar))
            return COS_NORM;
        return lua_gettop(co) == 0 ? COS_DEAD : COS_YIELD;
    }
    default:
        return COS_DEAD;
    }
}

/* (thread) -> true | false, err */
static int co_close(lua_State *L)
{
    lua_State *co = getco(L);
    enum co_status st = co_status_of(L, co);
    if (st != COS_DEAD && st != COS_YIELD)
        return luaL_error(L, "cannot close a %s coroutine", co_status_name[st]);
    if (reset_tracked(co, L) == LUA_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
    return 2;
}

void budget_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"resume", co_resume},
        {"wrap", co_wrap},
        {"close", co_close},
        {NULL, NULL},
    };
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_COLIBNAME);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 2);
}
