/* worker.c - the per-process runtime every layer shares: log buffers and
 * their flush, ids, the pending-writes flush (ev_prepare). */
#include "net/worker.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "proto/logfmt.h"

/* Log lines and replies of one loop iteration go out together, just
 * before the loop waits again. */
static void flush_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = p->data;
    worker_log_flush(w);
    while (w->pending) {
        struct conn *c = w->pending;
        w->pending = c->next_pending;
        c->next_pending = NULL;
        c->pending_flush = false;
        conn_flush(c);
    }
}

void worker_init(struct worker *w, struct ev_loop *loop, int id, const struct worker_ops *ops,
                 void *owner)
{
    memset(w, 0, sizeof(*w));
    w->loop = loop;
    w->id = id;
    w->ops = ops;
    w->owner = owner;
    w->pid = (unsigned)getpid();
    uint32_t r;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint32_t)(time_mono() * 1e9);
    w->counter = r & 0xFFFFFF;
    buf_init(&w->log);
    buf_init(&w->logq);
    ev_prepare_init(&w->flusher, flush_cb);
    w->flusher.data = w;
    ev_prepare_start(loop, &w->flusher);
    ev_unref(loop);
}

void worker_free(struct worker *w)
{
    if (ev_is_active(&w->flusher)) {
        ev_ref(w->loop);
        ev_prepare_stop(w->loop, &w->flusher);
    }
    worker_log_flush(w);
    buf_free(&w->log);
    buf_free(&w->logq);
}

struct buf *worker_log_begin(struct worker *w, const char *level, const char *event)
{
    buf_reset(&w->log);
    logfmt_begin(&w->log, level, NULL, event);
    if (w->id >= 0)
        logfmt_int(&w->log, "worker", w->id);
    return &w->log;
}

void worker_log_end(struct worker *w)
{
    buf_append(&w->log, "\n", 1);
    buf_append(&w->logq, buf_peek(&w->log), buf_used(&w->log));
    buf_reset(&w->log);
    if (buf_used(&w->logq) >= 64 * 1024)
        worker_log_flush(w);
}

/* A single process writes the queue at once. Workers share stderr: each
 * write carries whole lines and at most PIPE_BUF bytes, which the kernel
 * never interleaves with another writer's on a pipe (and O_APPEND files
 * take whole writes); a longer line is cut at PIPE_BUF with a marker.
 * stderr gone or full: the lines are dropped, never the mail. */
void worker_log_flush(struct worker *w)
{
    size_t n = buf_used(&w->logq);
    const char *p = buf_peek(&w->logq);
    if (w->id < 0) {
        (void)write_all(2, p, n);
    } else {
        while (n > 0) {
            size_t chunk = 0;
            while (chunk < n) {
                const char *nl = memchr(p + chunk, '\n', n - chunk);
                size_t line = nl ? (size_t)(nl - (p + chunk)) + 1 : n - chunk;
                if (chunk + line > PIPE_BUF)
                    break;
                chunk += line;
            }
            if (chunk == 0) {
                /* one line longer than PIPE_BUF */
                const char *nl = memchr(p, '\n', n);
                size_t line = nl ? (size_t)(nl - p) + 1 : n;
                static const char cut[] = " log_line_cut=1\n";
                char tmp[PIPE_BUF];
                size_t keep = PIPE_BUF - (sizeof(cut) - 1);
                memcpy(tmp, p, keep);
                memcpy(tmp + keep, cut, sizeof(cut) - 1);
                (void)write_all(2, tmp, PIPE_BUF);
                p += line;
                n -= line;
                continue;
            }
            (void)write_all(2, p, chunk);
            p += chunk;
            n -= chunk;
        }
    }
    buf_reset(&w->logq);
    buf_shrink(&w->logq, 256 * 1024);
}

/* Session and queue ids: seconds since the epoch, the process id and a
 * counter, 32 + 24 + 24 bits in 20 upper-case hex digits (safe in file
 * names, sorted by time). Two live processes differ in the pid; a process
 * never repeats an id unless it makes 2^24 of them in one second; a pid is
 * not reused within the second a process started in. The counter starts
 * at a random value, so that processes with equal pids in different pid
 * namespaces sharing a spool are unlikely to collide either. */
void worker_new_id(struct worker *w, char out[24])
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned long long t = (unsigned long long)time_wall() & 0xFFFFFFFFull;
    unsigned long long pid = (unsigned long long)w->pid & 0xFFFFFF;
    unsigned long long n = (unsigned long long)(w->counter++ & 0xFFFFFF);
    unsigned long long parts[3] = {t, pid, n};
    int widths[3] = {8, 6, 6};
    char *p = out;
    for (int k = 0; k < 3; k++)   /* once per transaction: by hand, not through printf */
        for (int i = widths[k] - 1; i >= 0; i--)
            *p++ = hex[(parts[k] >> (4 * i)) & 15];
    *p = '\0';
}

void worker_want_flush(struct worker *w, struct conn *c)
{
    if (c->pending_flush || c->closed)
        return;
    c->pending_flush = true;
    c->next_pending = w->pending;
    w->pending = c;
}

void worker_forget_conn(struct worker *w, struct conn *c)
{
    if (!c->pending_flush)
        return;
    for (struct conn **pp = &w->pending; *pp; pp = &(*pp)->next_pending) {
        if (*pp == c) {
            *pp = c->next_pending;
            break;
        }
    }
    c->pending_flush = false;
}
