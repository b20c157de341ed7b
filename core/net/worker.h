/* worker.h - what every layer of one worker process may use: the event
 * loop, the log line being built and the finished lines (written once per
 * loop iteration), the id generator, the worker id, the connections with
 * replies to write this iteration, and the engine new work runs on. A
 * serving process has exactly one (app/server.c embeds it); the master
 * has none. Services a higher layer provides (the durable queue) reach
 * the lower ones through worker_ops, never through app/. */
#ifndef KURIR_WORKER_H
#define KURIR_WORKER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include "net/conn.h"
#include "proto/util.h"

struct worker;
struct engine;   /* lua/engine.h; opaque below lua/ */
struct queue;    /* queue/queue.h */

struct worker_ops {
    /* The durable queue of this process, opened on first use; NULL with
     * the reason in err (and logged). */
    struct queue *(*queue)(struct worker *w, char *err, size_t cap);
};

struct worker {
    struct ev_loop *loop;
    int id;                         /* -1: a single process, no master */
    unsigned pid;
    uint64_t counter;               /* of worker_new_id */
    struct buf log;                 /* the line being built */
    struct buf logq;                /* finished lines, written once per iteration */
    struct conn *pending;           /* conns with replies to write this iteration */
    ev_prepare flusher;
    struct engine *eng;             /* the engine new sessions, tasks and deliveries use
                                     * (replaced by a reload; app/ sets it) */
    const struct worker_ops *ops;
    void *owner;                    /* the ops' own state */
};

/* Start the once-per-iteration flush on loop (the watcher does not keep
 * the loop alive). id: the worker id, -1 for a single process. */
void worker_init(struct worker *w, struct ev_loop *loop, int id, const struct worker_ops *ops,
                 void *owner);
/* Stop the flusher, write what is queued, free the buffers. */
void worker_free(struct worker *w);

/* Start a log line in w->log: level, no session, event, and worker=ID
 * under a master. Add fields with logfmt_*(&w->log, ...), then end it. */
struct buf *worker_log_begin(struct worker *w, const char *level, const char *event);
/* Finish the line built in w->log (queued; written once per loop
 * iteration or when 64 KiB are queued). */
void worker_log_end(struct worker *w);
void worker_log_flush(struct worker *w);
/* Unique id (session ids and queue ids): 20 upper-case hex digits + NUL,
 * unique across processes and restarts (time, pid, counter). */
void worker_new_id(struct worker *w, char out[24]);

/* c has output queued: write it in this iteration's flush (one write per
 * pipelined group). worker_forget_conn: c goes away before that. */
void worker_want_flush(struct worker *w, struct conn *c);
void worker_forget_conn(struct worker *w, struct conn *c);

#endif
