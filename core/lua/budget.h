/* budget.h - the CPU budget of Lua runs, without a hook while the budget
 * lasts.
 *
 * A CPU-time timer of the thread that runs Lua (the event loop's) sends
 * SIGPROF every tick of its CPU time. The handler counts the ticks of the
 * run in progress; once they pass the run's budget it sets a count hook
 * (count 1) on every thread being resumed, so the next VM instruction of
 * any of them raises "CPU budget of ... exceeded", and keeps raising until
 * the error has left the run (a pcall in the script cannot swallow it).
 * Which threads are being resumed is known because every resume goes
 * through here: the task's own (budget_enter) and the script's
 * (coroutine.resume, coroutine.wrap and coroutine.close are replaced by
 * budget_open).
 *
 * A run uses between its budget and its budget plus one tick of CPU before
 * it is stopped (plus the kernel's timer granularity). */
#ifndef KURIR_BUDGET_H
#define KURIR_BUDGET_H

#include <stdbool.h>
#include <signal.h>
#include <lua.h>

/* What budget_enter replaced, put back by budget_leave (a run may start
 * while another one is in progress: a task aborted by a running hook
 * resets its coroutine, and its __close handlers are a run of their own). */
struct budget_run {
    sig_atomic_t active, ticks, limit, exceeded;
    double seconds;
    lua_State *base, *cur;
};

/* Start the ticks in this process, on the calling thread (the one that
 * runs Lua), every min(seconds / 10, 10 ms) of its CPU time, at least
 * 1 ms. Called again (a reload, a new process after fork) it adopts the
 * new tick. -1 with err filled if the timer cannot be made. */
int budget_start(double seconds, char *err, size_t cap);

/* A run of co under `seconds` of CPU starts / ends. budget_leave returns
 * whether the run went over its budget. */
void budget_enter(struct budget_run *save, lua_State *co, double seconds);
bool budget_leave(const struct budget_run *save);
/* The run in progress starts over with its whole budget (the __close
 * handlers that a failed run unwinds get one of their own). */
void budget_restart(void);

/* Replace coroutine.resume, coroutine.wrap and coroutine.close of L (its
 * coroutine library must be open) with versions that behave as Lua's own
 * and tell the budget which thread runs. */
void budget_open(lua_State *L);

#endif
