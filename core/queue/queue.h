/* queue.h - the queue manager of one process: the messages committed to
 * queue.dir, their delivery through each recipient's route (agent_*.c),
 * retries on queue.retry, expiry after queue.lifetime, delivery status
 * notifications, and the control socket `kurir queue` talks to. Exactly
 * one process owns a queue directory (it holds an flock on it); with
 * worker processes that is the master (see docs/queue.md). */
#ifndef KURIR_QUEUE_H
#define KURIR_QUEUE_H

#include <ev.h>
#include <stdbool.h>
#include "proto/queue_file.h"
#include "queue/queue_store.h"

struct worker;
struct queue;
struct route_run;

struct qentry {
    struct qentry *prev, *next;
    struct qentry *hnext;    /* the next in its bucket of queue.byid */
    struct qenv env;
    int inflight;
    bool finishing;          /* DSN / removal under way */
    bool deleted;            /* `kurir queue delete`: removed once no delivery runs */
    bool dsn_routing;        /* the rcpt hook is routing a DSN (final or delay warning) */
    bool warning;            /* a delay warning is being routed or committed */
    struct route_run *dsn_run;
    void *dsn_ctx;
};

/* The result of one more recipient of a delivery that carries several. */
struct delivery_rcpt {
    int idx;
    int result;
    char code[16];
    struct buf diag;
};

/* One delivery attempt of one recipient through its route; SMTP and LMTP
 * routes (kurir.relay, kurir.lmtp) carry every due recipient of the
 * message with the same route (and, for MX delivery, the same domain) in
 * one transaction: those after the first are in more[], each with its own
 * result. */
struct delivery {
    struct queue *q;
    struct qentry *e;
    int idx;
    char agent[32];
    int result;              /* 0 delivered, 1 temporary, 2 permanent */
    struct buf diag;
    char code[16];           /* enhanced status code of the result */
    void *priv;
    int nmore;
    struct delivery_rcpt *more;
};

struct queue_dest {          /* deliveries running per route */
    struct queue_dest *next;
    char *route;
    int running;
};

struct queue {
    struct worker *w;
    struct queue_store store;
    struct qentry *head;
    struct qentry **byid;       /* QUEUE_ID_BUCKETS chains: entries by id */
    int count;
    ev_timer timer;
    int ctlfd;
    ev_io ctl;
    int lockfd;                 /* flock'ed by the one process that delivers */
    bool owner;                 /* holds the lock: delivers; else commits only */
    ev_timer lock_retry;        /* not the owner: try to become it, every second */
    ev_timer rescan;            /* owner under workers: pick up the others' commits */
    struct queue_dest *dests;
    bool open;
    bool stopping;
    bool scheduling;            /* in schedule(): a kick is only noted */
    bool rekick;                /* ... and schedule() runs again after */
    struct pipe_run *pipes;  /* running pipe deliveries (agent_pipe.c) */
    struct lua_run *lua_runs;   /* running Lua agents (agent_lua.c) */
};

typedef void (*queue_commit_cb)(void *arg, int err, const char *errtext);
struct queue_commit;

/* Open queue.dir of the server's engine: recover the messages found there
 * and start delivering. -1 with a reason in err. */
int queue_open(struct queue *q, struct worker *w, char *err, size_t cap);
void queue_close(struct queue *q);
/* Commit a new message (env is taken; head holds the headers kurir adds,
 * body the received bytes). cb runs in the loop once the message is durable
 * (err 0) or failed. The returned handle stays valid until cb would run. */
struct queue_commit *queue_commit(struct queue *q, struct qenv *env, const struct buf *head,
                                  const struct spool *body, queue_commit_cb cb, void *arg);
/* NULL (errno set, cb never called) when the body cannot be read. */
/* The waiter is gone: the commit goes on, nobody is told. */
void queue_commit_detach(struct queue_commit *c);
/* An agent finished d (result, code, diag set); frees d. */
void queue_delivery_done(struct delivery *d);
/* Load msg/id and st/id (the server at start, `kurir queue`). */
int queue_load(int msgfd, int stfd, const char *id, struct qenv *e, char *err, size_t cap);
/* flush/hold/release/delete on the running queue: 0, 1 unknown id, 2 bad verb */
int queue_control(struct queue *q, const char *verb, const char *id, struct buf *reply);
/* helpers for the agents */
char *queue_expand(const char *tmpl, const char *address, bool argument);
int queue_open_body(struct queue *q, struct qentry *e, uint64_t *off);

/* agents (agent_local.c, agent_pipe.c) */
void agent_discard_start(struct delivery *d);
void agent_maildir_start(struct delivery *d);
void agent_mbox_start(struct delivery *d);
void agent_pipe_start(struct delivery *d);
void agent_pipe_shutdown(struct queue *q);
void agent_lua_start(struct delivery *d);    /* kurir.deliver, kurir.relay, kurir.lmtp */
void agent_lua_shutdown(struct queue *q);   /* kill running children; their recipients stay queued */

#endif
