/* server.h - one serving process: its worker (net/worker.h: loop, log,
 * ids, the engine), the listeners and their protocols, the set of
 * sessions, signals, the queue and the HTTP daemons. Nothing here is
 * process-global: a process that forks N workers gives each its own
 * struct server; what a master owns (bound sockets, the shared connection
 * counts) is handed in as struct server_worker. */
#ifndef KURIR_SERVER_H
#define KURIR_SERVER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include "net/conn.h"
#include "net/worker.h"
#include "lua/engine.h"
#include "proto/key_count.h"
#include "proto/util.h"
#include "smtp/session.h"

struct conn_limit;
struct http_daemon;
struct queue;
struct server;
struct listener;

/* A listener's protocol: what the accept path hands a connection to. */
struct protocol {
    const char *name;               /* "smtp", "smtps", "http" */
    const char *scheme;             /* how a listen address names it: "", "smtps://", "http://" */
    bool tls;                       /* needs the configuration's TLS (implicit TLS) */
    /* the constructor for an accepted connection (the fd is its own);
     * key: the client key its connection was counted under, to keep for
     * the release when it is gone */
    void (*accept)(struct server *srv, struct listener *l, int fd, const struct sockaddr_storage *peer,
                   const char *key);
    /* NULL accept: the protocol takes the listening socket itself and
     * accepts on it (libmicrohttpd); -1 with a message on stderr */
    int (*serve)(struct server *srv, struct listener *l);
};

/* the protocol of a listen address (lc->tls, lc->http) */
const struct protocol *server_protocol(const struct listen_cfg *lc);

struct listener {
    int fd;
    ev_io w;
    const struct protocol *proto;
    char name[96];                  /* [smtps://|http://]ADDR:PORT with the port bound */
    int port;                       /* the port bound (the kernel's pick for 0) */
    struct sockaddr_storage addr;   /* the address bound */
    bool wildcard;                  /* 0.0.0.0 or ::: a connection's local address is asked of it */
    struct server *srv;
};

struct server {
    struct worker w;                /* loop, log, ids, the engine for new sessions */
    struct listener *ls;
    int nls;
    struct session_set sessions;
    ev_signal sigterm, sigint, sighup;
    ev_signal sigusr1;              /* worker: retire (replaced by a reload) */
    ev_timer grace;
    ev_timer accept_pause;          /* accept paused after EMFILE */
    struct http_daemon *http;       /* the daemons of the http:// listeners (http.c) */
    bool stopping;                  /* no new sessions */
    bool retiring;                  /* ... but the sessions run to their end */
    struct conn_limit *climit;      /* counts shared by the workers; NULL: counts below */
    struct key_count counts;        /* a process alone: connections per client key and in total */
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
/* Bind one listener (l->fd, l->proto, l->name). -1 with a message on stderr. */
int server_listen(struct listener *l, const struct listen_cfg *lc);
/* Run until shut down; returns the process exit code. */
int server_run(struct server *srv);
void server_free(struct server *srv);

/* What the layers above lua/ add to every engine (engine_load's open
 * function): the session's classes, msg:enqueue, kurir.http. */
void server_open_lua(lua_State *L);
/* what privdrop_apply needs of a configuration */
struct privdrop_want;
void server_privdrop_want(const struct config *c, struct privdrop_want *w);

#endif
