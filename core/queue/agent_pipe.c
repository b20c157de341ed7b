/* agent_pipe.c - the pipe delivery agent: fork/exec of the route's
 * argument vector (no shell; %{...} values expanded into single arguments,
 * a leading '-' made '_'), the queued message on stdin, stdout and stderr
 * collected (first 4 KiB) for the DSN, a timeout after which the child is
 * killed. Exit 0 delivered, 75 (EX_TEMPFAIL) retried, anything else a
 * permanent failure. Never blocks the loop: stdin and the output are
 * non-blocking watchers, the exit is an ev_child watcher. Owns the runs in
 * q->pipes until each has both exited and closed its output. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "queue/queue.h"
#include "lua/engine.h"
#include "net/worker.h"

#define PIPE_OUTPUT_MAX 4096
#define EX_TEMPFAIL 75

struct pipe_run {
    struct pipe_run *next;
    struct delivery *d;
    pid_t pid;
    int in_fd, out_fd, src_fd;
    uint64_t off;
    ev_io in_w, out_w;
    ev_child child;
    ev_timer timer;
    char chunk[65536];
    size_t clen, cpos;
    bool exited, timed_out, out_eof;
    int status;
    struct buf output;
    double timeout;
};

static struct ev_loop *loop_of(struct pipe_run *p)
{
    return p->d->q->w->loop;
}

static void run_unlink(struct pipe_run *p)
{
    struct pipe_run **pp = &p->d->q->pipes;
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
}

static void close_in(struct pipe_run *p)
{
    if (p->in_fd < 0)
        return;
    ev_io_stop(loop_of(p), &p->in_w);
    close(p->in_fd);
    p->in_fd = -1;
}

static void run_free(struct pipe_run *p)
{
    struct ev_loop *loop = loop_of(p);
    close_in(p);
    if (p->out_fd >= 0) {
        ev_io_stop(loop, &p->out_w);
        close(p->out_fd);
    }
    if (p->src_fd >= 0)
        close(p->src_fd);
    ev_child_stop(loop, &p->child);
    ev_timer_stop(loop, &p->timer);
    buf_free(&p->output);
    run_unlink(p);
    free(p);
}

static void output_text(struct pipe_run *p, struct buf *b)
{
    const char *o = buf_peek(&p->output);
    size_t n = buf_used(&p->output);
    while (n && (o[n - 1] == '\n' || o[n - 1] == '\r'))
        n--;
    if (n) {
        buf_appends(b, ": ");
        for (size_t i = 0; i < n; i++)
            buf_append(b, (o[i] == '\n' || o[i] == '\r' || o[i] == '\t') ? " " : &o[i], 1);
    }
}

static void maybe_finish(struct pipe_run *p)
{
    if (!p->exited || (!p->out_eof && !p->timed_out))
        return;
    struct delivery *d = p->d;
    char *cmd = queue_file_route_get(d->e->env.rcpts[d->idx].route, "argv.1");
    if (p->timed_out) {
        d->result = 1;
        snprintf(d->code, sizeof(d->code), "4.3.0");
        buf_printf(&d->diag, "%s timed out after %.0f seconds", cmd ? cmd : "command", p->timeout);
    } else if (WIFEXITED(p->status)) {
        int code = WEXITSTATUS(p->status);
        d->result = code == 0 ? 0 : code == EX_TEMPFAIL ? 1 : 2;
        snprintf(d->code, sizeof(d->code), "%s", code == 0 ? "2.0.0" : code == EX_TEMPFAIL ? "4.3.0" : "5.3.0");
        buf_printf(&d->diag, "%s exited with status %d", cmd ? cmd : "command", code);
    } else {
        d->result = 1;
        snprintf(d->code, sizeof(d->code), "4.3.0");
        buf_printf(&d->diag, "%s killed by signal %d", cmd ? cmd : "command",
                   WIFSIGNALED(p->status) ? WTERMSIG(p->status) : 0);
    }
    free(cmd);
    output_text(p, &d->diag);
    run_free(p);
    queue_delivery_done(d);
}

static void in_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct pipe_run *p = w->data;
    for (;;) {
        if (p->cpos == p->clen) {
            ssize_t r = pread(p->src_fd, p->chunk, sizeof(p->chunk), (off_t)p->off);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                close_in(p);   /* EOF for the child */
                return;
            }
            p->off += (uint64_t)r;
            p->clen = (size_t)r;
            p->cpos = 0;
        }
        ssize_t n = write(p->in_fd, p->chunk + p->cpos, p->clen - p->cpos);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                close_in(p);   /* EPIPE: the command did not read it all; its exit decides */
            return;
        }
        p->cpos += (size_t)n;
    }
}

static void out_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct pipe_run *p = w->data;
    char b[4096];
    for (;;) {
        ssize_t n = read(p->out_fd, b, sizeof(b));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            ev_io_stop(loop, &p->out_w);
            close(p->out_fd);
            p->out_fd = -1;
            p->out_eof = true;
            maybe_finish(p);
            return;
        }
        size_t room = PIPE_OUTPUT_MAX > buf_used(&p->output) ? PIPE_OUTPUT_MAX - buf_used(&p->output) : 0;
        buf_append(&p->output, b, (size_t)n < room ? (size_t)n : room);
    }
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct pipe_run *p = w->data;
    ev_child_stop(loop, w);
    ev_timer_stop(loop, &p->timer);
    p->exited = true;
    p->status = w->rstatus;
    maybe_finish(p);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct pipe_run *p = w->data;
    p->timed_out = true;
    kill(p->pid, SIGKILL);   /* child_cb follows */
}

static void fail_now(struct delivery *d, const char *what)
{
    d->result = 1;
    snprintf(d->code, sizeof(d->code), "4.3.0");
    buf_printf(&d->diag, "%s: %s", what, strerror(errno));
    queue_delivery_done(d);
}

void agent_pipe_start(struct delivery *d)
{
    struct qentry *e = d->e;
    struct qrcpt *r = &e->env.rcpts[d->idx];
    char **argv = NULL;
    int argc = 0;
    for (;;) {
        char key[32];
        snprintf(key, sizeof(key), "argv.%d", argc + 1);
        char *a = queue_file_route_get(r->route, key);
        if (!a)
            break;
        argv = xrealloc(argv, size_mul((size_t)argc + 2, sizeof(char *)));
        char *v = argc == 0 ? a : queue_expand(a, r->address, true);
        if (argc > 0)
            free(a);
        argv[argc++] = v;
    }
    char *t = queue_file_route_get(r->route, "timeout");
    double timeout = t ? strtod(t, NULL) : 60;
    free(t);
    if (argc == 0) {
        d->result = 2;
        snprintf(d->code, sizeof(d->code), "5.3.5");
        buf_appends(&d->diag, "pipe route without a command");
        free(argv);
        queue_delivery_done(d);
        return;
    }
    argv[argc] = NULL;
    uint64_t off;
    int src = queue_open_body(d->q, e, &off);
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if (src < 0 || pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
        int saved = errno;
        if (src >= 0)
            close(src);
        for (int i = 0; i < 2; i++) {
            if (in[i] >= 0)
                close(in[i]);
            if (out[i] >= 0)
                close(out[i]);
        }
        for (int i = 0; i < argc; i++)
            free(argv[i]);
        free(argv);
        errno = saved;
        fail_now(d, "cannot start the command");
        return;
    }
    char env_sender[1024], env_rcpt[1024], env_id[64];
    snprintf(env_sender, sizeof(env_sender), "SENDER=%s", e->env.from ? e->env.from : "");
    snprintf(env_rcpt, sizeof(env_rcpt), "RECIPIENT=%s", r->address);
    snprintf(env_id, sizeof(env_id), "QUEUE_ID=%s", e->env.id);
    char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", env_sender, env_rcpt, env_id, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        /* child: stdin from the pipe, stdout+stderr into the other */
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(out[1], 2) < 0)
            _exit(EX_TEMPFAIL);
        execve(argv[0], argv, envp);
        dprintf(2, "cannot run %s: %s", argv[0], strerror(errno));
        _exit(errno == ENOENT || errno == EACCES ? 127 : EX_TEMPFAIL);
    }
    int saved = errno;
    close(in[0]);
    close(out[1]);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        close(src);
        errno = saved;
        fail_now(d, "fork");
        return;
    }
    struct pipe_run *p = xcalloc(1, sizeof(*p));
    p->d = d;
    p->pid = pid;
    p->in_fd = in[1];
    p->out_fd = out[0];
    p->src_fd = src;
    p->off = off;
    p->timeout = timeout;
    buf_init(&p->output);
    fcntl(p->in_fd, F_SETFL, O_NONBLOCK);
    fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
    struct ev_loop *loop = d->q->w->loop;
    ev_io_init(&p->in_w, in_cb, p->in_fd, EV_WRITE);
    p->in_w.data = p;
    ev_io_init(&p->out_w, out_cb, p->out_fd, EV_READ);
    p->out_w.data = p;
    ev_child_init(&p->child, child_cb, pid, 0);
    p->child.data = p;
    ev_timer_init(&p->timer, timer_cb, timeout, 0);
    p->timer.data = p;
    ev_io_start(loop, &p->in_w);
    ev_io_start(loop, &p->out_w);
    ev_child_start(loop, &p->child);
    ev_timer_start(loop, &p->timer);
    p->next = d->q->pipes;
    d->q->pipes = p;
}

void agent_pipe_shutdown(struct queue *q)
{
    while (q->pipes) {
        struct pipe_run *p = q->pipes;
        struct delivery *d = p->d;
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        run_free(p);
        /* the recipient stays pending on disk: it is tried again at start */
        buf_free(&d->diag);
        free(d);
    }
}
