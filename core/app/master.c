/* master.c - the master of N worker processes (`workers = N`, `-w N`).
 *
 * It binds the listeners once and forks N workers that accept on those
 * same sockets (one shared socket per listener, not SO_REUSEPORT: a worker
 * that stops or is replaced leaves no connections stranded in a backlog of
 * its own, -l ADDR:0 needs no port hand-over, and the master never
 * rebinds). It touches no connection. It restarts a worker that dies, with
 * a backoff that doubles while workers die young (logged); on SIGHUP it
 * loads the new script itself first, refuses a broken one before any
 * worker changes, then starts a new worker per id and retires the old one
 * (SIGUSR1: it accepts no more, and exits once its sessions ended on their
 * own) as soon as its replacement is ready (rolling reload); SIGTERM and
 * SIGINT stop every worker gracefully. It runs no event loop: signals are
 * taken with sigtimedwait, and a worker reports "ready" with a queued
 * real-time signal. Owns the listener sockets, the shared connection
 * counts (conn_limit.c) and the worker table. */
#include "app/master.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sys/conn_limit.h"
#include "proto/logfmt.h"
#include "sys/privdrop.h"
#include "app/server.h"
#include "sys/shared_dict.h"

#define MAX_WORKERS 64
#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 10.0
#define YOUNG 10.0        /* a worker that dies younger than this backs off more */

struct worker_proc {
    pid_t pid;
    int id;
    int slot;
    unsigned long long gen;
    bool ready;
    bool retiring;
    double started;
};

struct master {
    struct engine *eng;
    const struct master_opts *o;
    int n;
    pid_t pid;
    struct listener *ls;
    int nls;
    struct conn_limit *cl;
    struct worker_proc w[2 * MAX_WORKERS + 2];
    int nw;
    int nslots;
    double restart_at[MAX_WORKERS];   /* 0: none due */
    double backoff[MAX_WORKERS];
    unsigned long long gen;
    bool stopping;
    bool failed;                      /* a first worker could not load the script */
    int child_slot;                   /* in a new worker: its slot */
    double kill_at;
    sigset_t sigs;
    struct buf log;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int master_workers(const struct engine *e, int cli)
{
    int n = cli > 0 ? cli : e->cfg.workers;
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    return n > MAX_WORKERS ? MAX_WORKERS : n;
}

static struct buf *mlog(struct master *m, const char *level, const char *event)
{
    buf_reset(&m->log);
    logfmt_begin(&m->log, level, NULL, event);
    return &m->log;
}

static void mlog_end(struct master *m)
{
    logfmt_emit(&m->log, 2);
}

static bool slot_used(const struct master *m, int slot)
{
    for (int i = 0; i < m->nw; i++)
        if (m->w[i].slot == slot)
            return true;
    return false;
}

/* The worker process: load the script, serve, return its exit code. */
static int worker_main(struct master *m, int id, int slot)
{
    sigset_t none;
    sigemptyset(&none);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != m->pid)
        return 0;   /* the master is gone already */
    shared_dict_freeze();
    engine_unref(m->eng);
    m->eng = NULL;
    buf_free(&m->log);
    lkurir_set_worker(id, m->n);
    char *err = NULL;
    struct engine *e = engine_load(m->o->script, server_open_lua, m->o->argc, m->o->argv, m->o->listen, m->o->nlisten, &err);
    if (!e) {
        struct buf b;
        buf_init(&b);
        logfmt_begin(&b, "error", NULL, "worker_failed");
        logfmt_int(&b, "worker", id);
        logfmt_str(&b, "error", err ? err : "cannot load script");
        logfmt_emit(&b, 2);
        buf_free(&b);
        free(err);
        free(m->ls);
        return 1;
    }
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    struct server srv;
    struct server_worker wk = {.id = id, .ls = m->ls, .nls = m->nls, .climit = m->cl, .slot = slot};
    int rc = 1;
    if (server_init_worker(&srv, loop, e, &wk) == 0) {
        srv.script = m->o->script;
        srv.argc = m->o->argc;
        srv.argv = m->o->argv;
        srv.listen_override = m->o->listen;
        srv.nlisten_override = m->o->nlisten;
        union sigval v = {.sival_int = id};
        sigqueue(m->pid, SIGRTMIN, v);
        rc = server_run(&srv);
    }
    server_free(&srv);
    ev_loop_destroy(loop);
    free(m->ls);
    return rc;
}

/* Fork the worker id of the current generation. Returns its pid in the
 * master, 0 in the child, -1 when fork failed (retried later). */
static pid_t spawn(struct master *m, int id)
{
    int slot = 0;
    while (slot < m->nslots && slot_used(m, slot))
        slot++;
    if (slot == m->nslots || m->nw == (int)(sizeof(m->w) / sizeof(m->w[0]))) {
        mlog(m, "error", "worker_spawn_failed");
        logfmt_int(&m->log, "worker", id);
        logfmt_str(&m->log, "error", "no free worker slot");
        mlog_end(m);
        m->restart_at[id] = now() + BACKOFF_MAX;
        return -1;
    }
    conn_limit_clear(m->cl, slot);
    m->child_slot = slot;
    pid_t pid = fork();
    if (pid < 0) {
        mlog(m, "error", "worker_spawn_failed");
        logfmt_int(&m->log, "worker", id);
        logfmt_str(&m->log, "error", strerror(errno));
        mlog_end(m);
        m->restart_at[id] = now() + BACKOFF_MAX;
        return -1;
    }
    if (pid == 0)
        return 0;
    struct worker_proc *w = &m->w[m->nw++];
    memset(w, 0, sizeof(*w));
    w->pid = pid;
    w->id = id;
    w->slot = slot;
    w->gen = m->gen;
    w->started = now();
    m->restart_at[id] = 0;
    return pid;
}

static struct worker_proc *by_pid(struct master *m, pid_t pid)
{
    for (int i = 0; i < m->nw; i++)
        if (m->w[i].pid == pid)
            return &m->w[i];
    return NULL;
}

static bool current_alive(const struct master *m, int id)
{
    for (int i = 0; i < m->nw; i++)
        if (m->w[i].id == id && m->w[i].gen == m->gen && !m->w[i].retiring)
            return true;
    return false;
}

static void exited(struct master *m, pid_t pid, int status)
{
    struct worker_proc *wp = by_pid(m, pid);
    if (!wp)
        return;
    struct worker_proc w = *wp;
    *wp = m->w[--m->nw];
    conn_limit_clear(m->cl, w.slot);
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (m->stopping || w.retiring) {
        mlog(m, clean ? "info" : "warn", "worker_exited");
    } else {
        mlog(m, "error", "worker_died");
    }
    logfmt_int(&m->log, "worker", w.id);
    logfmt_int(&m->log, "pid", pid);
    if (WIFSIGNALED(status))
        logfmt_str(&m->log, "signal", strsignal(WTERMSIG(status)));
    else
        logfmt_int(&m->log, "status", WEXITSTATUS(status));
    if (m->stopping || w.retiring) {
        mlog_end(m);
        return;
    }
    if (!w.ready && w.gen == 1 && WIFEXITED(status) && WEXITSTATUS(status) == 1) {
        /* the first workers cannot load what the master loaded: give up */
        mlog_end(m);
        m->failed = true;
        return;
    }
    if (current_alive(m, w.id) || w.id >= m->n) {
        mlog_end(m);
        return;
    }
    double t = now();
    double *b = &m->backoff[w.id];
    if (t - w.started < YOUNG)
        *b = *b < BACKOFF_MIN ? BACKOFF_MIN : (*b * 2 > BACKOFF_MAX ? BACKOFF_MAX : *b * 2);
    else
        *b = BACKOFF_MIN;
    m->restart_at[w.id] = t + *b;
    logfmt_dbl(&m->log, "restart_in", *b);
    mlog_end(m);
}

static void ready(struct master *m, pid_t pid)
{
    struct worker_proc *w = by_pid(m, pid);
    if (!w || w->ready)
        return;
    w->ready = true;
    mlog(m, "info", "worker_ready");
    logfmt_int(&m->log, "worker", w->id);
    logfmt_int(&m->log, "pid", pid);
    logfmt_int(&m->log, "generation", (long long)w->gen);
    mlog_end(m);
    if (w->gen != m->gen)
        return;
    for (int i = 0; i < m->nw; i++) {
        struct worker_proc *o = &m->w[i];
        if (o->id == w->id && o->gen < w->gen && !o->retiring) {
            o->retiring = true;
            kill(o->pid, SIGUSR1);
        }
    }
}

static void stop_all(struct master *m, int sig)
{
    m->stopping = true;
    mlog(m, "info", "shutdown");
    logfmt_str(&m->log, "signal", sig == SIGTERM ? "TERM" : sig == SIGINT ? "INT" : "none");
    logfmt_int(&m->log, "workers", m->nw);
    mlog_end(m);
    for (int i = 0; i < m->nw; i++)
        kill(m->w[i].pid, SIGTERM);
    m->kill_at = now() + m->eng->cfg.t_shutdown + 10;
}

/* SIGHUP: check the new script here; 1 when workers are to be replaced */
static int reload(struct master *m)
{
    char *err = NULL;
    lkurir_set_worker(-1, m->n);
    struct engine *e = engine_load(m->o->script, server_open_lua, m->o->argc, m->o->argv, m->o->listen, m->o->nlisten, &err);
    const char *why = err;
    if (e) {
        for (int i = 0; i < m->nls; i++)
            if (m->ls[i].proto->tls && !e->tls)
                why = "the new configuration has no tls, but an smtps:// listener is bound";
    }
    if (!e || why) {
        mlog(m, "error", "reload_failed");
        logfmt_str(&m->log, "script", m->o->script);
        logfmt_str(&m->log, "error", why ? why : "unknown");
        mlog_end(m);
        free(err);
        if (e)
            engine_unref(e);
        return 0;
    }
    engine_unref(m->eng);
    m->eng = e;
    m->gen++;
    mlog(m, "info", "reload");
    logfmt_str(&m->log, "script", m->o->script);
    logfmt_int(&m->log, "generation", (long long)m->gen);
    logfmt_int(&m->log, "workers", m->n);
    if (master_workers(e, m->o->workers) != m->n)
        logfmt_str(&m->log, "note", "a new number of workers takes effect at restart");
    mlog_end(m);
    return 1;
}

static void free_master(struct master *m)
{
    for (int i = 0; i < m->nls; i++)
        close(m->ls[i].fd);
    free(m->ls);
    conn_limit_free(m->cl);
    if (m->eng)
        engine_unref(m->eng);
    buf_free(&m->log);
}

int master_run(struct engine *e, const struct master_opts *o, bool *is_worker)
{
    static struct master mm;
    struct master *m = &mm;
    memset(m, 0, sizeof(*m));
    *is_worker = false;
    m->eng = e;
    m->o = o;
    m->n = o->workers;
    m->pid = getpid();
    m->gen = 1;
    m->nslots = 2 * m->n + 2;
    buf_init(&m->log);
    const struct config *cfg = &e->cfg;
    m->cl = conn_limit_new(m->nslots, cfg->connections * 2);
    if (!m->cl) {
        fprintf(stderr, "kurir: cannot map the shared connection counts: %s\n", strerror(errno));
        free_master(m);
        return 1;
    }
    m->ls = xcalloc((size_t)(cfg->nlisten ? cfg->nlisten : 1), sizeof(*m->ls));
    for (int i = 0; i < cfg->nlisten; i++) {
        if (server_listen(&m->ls[i], &cfg->listen[i]) < 0) {
            free_master(m);
            return 1;
        }
        m->nls++;
    }
    /* listeners bound, TLS keys read: root is no longer needed, here or
     * in the workers that inherit the dropped credentials */
    struct privdrop_want want;
    server_privdrop_want(&e->cfg, &want);
    struct privdrop_info who;
    char perr[512];
    enum privdrop_result pr = privdrop_apply(&want, &who, perr, sizeof(perr));
    if (pr == PRIVDROP_FAILED) {
        fprintf(stderr, "kurir: %s: %s\n", o->script, perr);
        free_master(m);
        return 1;
    }
    if (pr == PRIVDROP_DROPPED || pr == PRIVDROP_ROOT_ALLOWED || pr == PRIVDROP_ROOT_WARN) {
        mlog(m, pr == PRIVDROP_ROOT_WARN ? "warn" : "info",
             pr == PRIVDROP_DROPPED ? "privileges_dropped" : "running_as_root");
        if (pr == PRIVDROP_DROPPED) {
            logfmt_str(&m->log, "user", e->cfg.user);
            logfmt_int(&m->log, "uid", (long long)who.uid);
            logfmt_int(&m->log, "gid", (long long)who.gid);
        } else {
            logfmt_str(&m->log, "why", pr == PRIVDROP_ROOT_ALLOWED ? "run_as_root = true"
                                       : "no user configured (set user = \"...\" to drop root)");
        }
        mlog_end(m);
    }
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&m->sigs);
    sigaddset(&m->sigs, SIGCHLD);
    sigaddset(&m->sigs, SIGTERM);
    sigaddset(&m->sigs, SIGINT);
    sigaddset(&m->sigs, SIGHUP);
    sigaddset(&m->sigs, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &m->sigs, NULL);
    for (int i = 0; i < m->nls; i++) {
        mlog(m, "info", "listening");
        logfmt_str(&m->log, "address", m->ls[i].name);
        logfmt_int(&m->log, "port", m->ls[i].port);
        mlog_end(m);
    }
    mlog(m, "info", "master");
    logfmt_int(&m->log, "pid", m->pid);
    logfmt_int(&m->log, "workers", m->n);
    mlog_end(m);

    int id = 0;
    for (id = 0; id < m->n; id++)
        if (spawn(m, id) == 0)
            goto child;

    while (!(m->stopping && m->nw == 0) && !m->failed) {
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
            exited(m, pid, status);
        if ((m->stopping && m->nw == 0) || m->failed)
            break;
        double t = now(), wait = 1.0;
        if (!m->stopping) {
            for (id = 0; id < m->n; id++) {
                if (m->restart_at[id] > 0 && m->restart_at[id] <= t) {
                    mlog(m, "info", "worker_restart");
                    logfmt_int(&m->log, "worker", id);
                    mlog_end(m);
                    if (spawn(m, id) == 0)
                        goto child;
                }
                if (m->restart_at[id] > 0 && m->restart_at[id] - t < wait)
                    wait = m->restart_at[id] - t;
            }
        } else if (t >= m->kill_at) {
            for (int i = 0; i < m->nw; i++)
                kill(m->w[i].pid, SIGKILL);
            m->kill_at = t + 1;
        }
        if (wait < 0.001)
            wait = 0.001;
        struct timespec ts = {.tv_sec = (time_t)wait, .tv_nsec = (long)((wait - (double)(time_t)wait) * 1e9)};
        siginfo_t si;
        int sig = sigtimedwait(&m->sigs, &si, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            if (!m->stopping)
                stop_all(m, sig);
        } else if (sig == SIGHUP) {
            if (!m->stopping && reload(m)) {
                for (id = 0; id < m->n; id++)
                    if (spawn(m, id) == 0)
                        goto child;
            }
        } else if (sig == SIGRTMIN) {
            ready(m, si.si_pid);
        }
    }
    int rc = 0;
    if (m->failed) {
        /* stop the others; the error is in the log already */
        for (int i = 0; i < m->nw; i++)
            kill(m->w[i].pid, SIGTERM);
        for (int i = 0; i < m->nw; i++)
            waitpid(m->w[i].pid, NULL, 0);
        m->nw = 0;
        rc = 1;
    }
    mlog(m, "info", "stopped");
    logfmt_int(&m->log, "pid", m->pid);
    mlog_end(m);
    free_master(m);
    return rc;

child:
    *is_worker = true;
    return worker_main(m, id, m->child_slot);
}
