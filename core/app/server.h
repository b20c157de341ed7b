/* server.h - one worker process: the event loop, listeners, the set of
 * sessions, the current engine, signals, and the once-per-iteration flush
 * of pending replies. Nothing here is process-global: a process that forks
 * N workers gives each its own struct server. */
#ifndef KURIR_SERVER_H
#define KURIR_SERVER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include "net/conn.h"
#include "lua/engine.h"
#include "proto/util.h"

struct session;
struct conn_limit;
struct http_daemon;
struct queue;

struct listener {
    int fd;
    ev_io w;
    bool tls;
    bool http;                      /* an http:// listener: handed to http.c */
    char name[96];                  /* [smtps://|http://]ADDR:PORT with the port bound */
    int port;                       /* the port bound (the kernel's pick for 0) */
    struct server *srv;
};

struct server {
    struct ev_loop *loop;
    struct engine *eng;             /* engine for new sessions */
    struct listener *ls;
    int nls;
    struct session *sessions;
    int nsessions;
    struct conn *pending;           /* conns with replies to write this iteration */
    ev_prepare flusher;
    ev_signal sigterm, sigint, sighup;
    ev_signal sigusr1;              /* worker: retire (replaced by a reload) */
    ev_timer grace;
    ev_timer accept_pause;          /* accept paused after EMFILE */
    struct http_daemon *http;       /* http:// listeners (http.c) */
    bool stopping;                  /* no new sessions */
    bool retiring;                  /* ... but the sessions run to their end */
    struct buf log;                 /* the line being built */
    struct buf logq;                /* finished lines, written once per iteration */
    uint64_t counter;
    unsigned pid;
    int worker_id;                  /* -1: a single process, no master */
    struct conn_limit *climit;      /* counts shared by the workers; NULL: this process's sessions */
    int climit_slot;
    /* to reload */
    const char *script;
    int argc;
    char **argv;
    char **listen_override;
    int nlisten_override;
    struct queue *queue;            /* queue.dir, opened at start when it exists, else on first use */
};

/* What the master hands a worker: listeners it bound (the worker takes
 * their descriptors), the shared connection counts and the worker's slot. */
struct server_worker {
    int id;
    const struct listener *ls;
    int nls;
    struct conn_limit *climit;
    int slot;
};

/* Bind every listener of eng's configuration. -1 with a message on stderr. */
int server_init(struct server *srv, struct ev_loop *loop, struct engine *eng);
/* A worker: serve on the master's listeners; SIGHUP is the master's. */
int server_init_worker(struct server *srv, struct ev_loop *loop, struct engine *eng,
                       const struct server_worker *w);
/* Bind one listener (l->fd, l->tls, l->name). -1 with a message on stderr. */
int server_listen(struct listener *l, const struct listen_cfg *lc);
/* Run until shut down; returns the process exit code. */
int server_run(struct server *srv);
void server_free(struct server *srv);

void server_want_flush(struct server *srv, struct conn *c);
/* finish the log line built in srv->log (queued; written once per loop
 * iteration or when 64 KiB are queued) */
void server_log_end(struct server *srv);
void server_log_flush(struct server *srv);
void server_forget_conn(struct server *srv, struct conn *c);
void server_session_gone(struct server *srv, struct session *s);
/* unique id (session ids and queue ids): 20 upper-case hex digits + NUL,
 * unique across processes and restarts (time, pid, counter) */
void server_new_id(struct server *srv, char out[24]);
/* sessions whose peer has the same client key (client_key.h) as peer */
int server_count_ip(struct server *srv, const struct sockaddr_storage *peer);
/* The queue of this process, opened on first use; NULL with a reason. */
struct queue *server_queue(struct server *srv, char *err, size_t cap);

#endif
