/* task.h - a task: one Lua coroutine of an engine that runs a function to
 * its end, possibly waiting (kurir.sleep, sockets, DNS) on the way. A
 * session embeds one to run its hooks; the engine owns the tasks of
 * kurir.spawn and kurir.every. The owner learns how a run ended through
 * its task_ops; the waiting functions know tasks only, never who owns one.
 *
 * The waiting-function protocol (kurir.sleep, sockets, DNS):
 *
 *   struct task *t = task_waiting(L);      NULL: refuse before starting
 *   ... start the operation, remember t ...
 *   return task_suspend(L, &op->waiter, timeout, k, ctx);
 *
 * When the operation completes, push its results on t->co and call
 * task_wake(t, nresults): the coroutine continues in k (from the event
 * loop, never nested in another run) with those results on top of its
 * stack. If `timeout` seconds pass first, waiter->cancel() runs and k gets
 * nil, "timeout". If the task is aborted, or its run's time limit passes,
 * waiter->cancel() runs and the coroutine never continues. timeout < 0:
 * only the run's limit applies. */
#ifndef KURIR_TASK_H
#define KURIR_TASK_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <lua.h>

struct engine;
struct task;

/* An operation a task is suspended on (socket I/O, DNS query). */
struct task_waiter {
    /* The wait ends without the operation: the task was aborted, the
     * operation's timeout or the run's time limit passed. Stop watchers;
     * never wake the task from here. */
    void (*cancel)(struct task_waiter *w);
};

struct task_ops {
    /* The run failed (error, CPU budget, time limit, a bare yield): log it.
     * tb is a traceback or NULL. The coroutine is reset right after. */
    void (*error)(struct task *t, const char *msg, const char *tb);
    /* The run ended: ok with nres results on top of t->co's stack (the
     * owner pops them), or !ok after error(). The owner may start the next
     * run or free the task from here. */
    void (*done)(struct task *t, bool ok, int nres);
};

struct task {
    struct engine *eng;
    const struct task_ops *ops;
    lua_State *co;
    int co_ref;
    double limit;                /* wall-clock seconds per run; <= 0: none */
    double deadline;             /* monotonic end of the running run's limit */
    bool running;                /* a run started and has not ended */
    bool waiting;                /* suspended in a waiting function */
    bool wake_pending;           /* completed; resumed at the next loop iteration */
    bool wait_expired;           /* the wait timer is the run's limit */
    bool resetting;              /* __close handlers run: they may not wait */
    int wake_nres;
    uint64_t gen;                /* bumped by every wait and abort */
    uint64_t armed_gen;          /* gen of the wait the timer belongs to */
    struct task_waiter *waiter;  /* the operation waited on (NULL: sleep) */
    const char *sid;             /* the session id its log lines carry; NULL: none (spawn/every) */
    ev_timer timer;              /* wait timeout, run limit, deferred wake */
};

/* A new coroutine in e's state, made through L (a thread of that state,
 * e.g. the caller's); ops says what the owner does with a run's end; limit
 * is the wall-clock seconds a run may take (<= 0: none). */
void task_init(struct task *t, struct engine *e, lua_State *L, const struct task_ops *ops,
               double limit);
/* Abort a running run, drop the coroutine. The task may then be freed. */
void task_close(struct task *t);
/* Run the function below nargs arguments on t->co (t must not be running). */
void task_run(struct task *t, int nargs);
/* Abandon the running run: cancel its wait, reset the coroutine (its
 * __close handlers run); neither ops callback is called. */
void task_abort(struct task *t);

/* the task whose run is executing L (also in coroutines the run made) */
struct task *task_current(lua_State *L);
/* the task whose coroutine is L if it can wait right now, else NULL */
struct task *task_waiting(lua_State *L);
int task_suspend(lua_State *L, struct task_waiter *waiter, double timeout, lua_KFunction k,
                 lua_KContext ctx);
void task_wake(struct task *t, int nres);
/* kurir.sleep */
int task_sleep(lua_State *L, double seconds);

#endif
