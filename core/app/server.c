/* server.c - one serving process: the protocol table (smtp, smtps, http)
 * and the listeners, accept and connection limits (this process's own
 * counts in key_count.c, or those shared by a master's workers), signals
 * (TERM/INT: graceful stop; HUP: reload the script for new sessions, in a
 * single process; a worker leaves HUP to its master), the queue (opened
 * on first use, offered to the lower layers as worker_ops) and the HTTP
 * daemons. Owns the listener sockets, its struct worker and the session
 * set; sessions free themselves and unlink, then call session_gone(). */
#include "app/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/client_key.h"
#include "proto/key_count.h"
#include "sys/conn_limit.h"
#include "sys/privdrop.h"
#include "http/http.h"
#include "proto/logfmt.h"
#include "queue/queue.h"
#include "proto/reply.h"
#include "smtp/session.h"
#include "smtp/engine_session.h"
#include "queue/lua_route.h"

static void srv_log(struct server *srv, const char *level, const char *event)
{
    worker_log_begin(&srv->w, level, event);
}

/* A spool in RAM loses every accepted message at a reboot: say so once. */
static void warn_spool(struct server *srv)
{
    const char *dir = srv->w.eng->cfg.spool;
    uint64_t avail;
    bool tmpfs;
    if (spool_space(dir, &avail, &tmpfs) < 0) {
        srv_log(srv, "warn", "spool_unavailable");
        logfmt_str(&srv->w.log, "dir", dir);
        logfmt_str(&srv->w.log, "error", strerror(errno));
        worker_log_end(&srv->w);
        return;
    }
    if (tmpfs) {
        srv_log(srv, "warn", "spool_on_tmpfs");
        logfmt_str(&srv->w.log, "dir", dir);
        logfmt_str(&srv->w.log, "hint", "tmpfs is RAM: messages are lost at a reboot; set spool to a disk directory");
        worker_log_end(&srv->w);
    }
}

int server_listen(struct listener *l, const struct listen_cfg *lc)
{
    const struct protocol *proto = server_protocol(lc);
    const char *scheme = proto->scheme;
    struct sockaddr_storage ss;
    socklen_t slen;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, lc->host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)lc->port);
        slen = sizeof(*in4);
        snprintf(l->name, sizeof(l->name), "%s%s:%d", scheme, lc->host, lc->port);
    } else if (inet_pton(AF_INET6, lc->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)lc->port);
        slen = sizeof(*in6);
        snprintf(l->name, sizeof(l->name), "%s[%s]:%d", scheme, lc->host, lc->port);
    } else {
        fprintf(stderr, "kurir: listen %s: not an IP address\n", lc->host);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* accepted sockets inherit TCP_NODELAY from the listener (Linux): one
     * call here instead of one per connection */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, slen) < 0 || listen(fd, 511) < 0)
        goto fail;
    /* Port 0 asks the kernel for an ephemeral port: name the one bound,
     * since the `listening` log line is how a caller learns it (SPEC 1). */
    if (getsockname(fd, (struct sockaddr *)&ss, &slen) < 0)
        goto fail;
    l->port = ntohs(ss.ss_family == AF_INET ? in4->sin_port : in6->sin6_port);
    /* bound to one address, every connection comes to it: no getsockname
     * per connection; a wildcard address asks the socket of each */
    l->addr = ss;
    l->wildcard = ss.ss_family == AF_INET ? in4->sin_addr.s_addr == htonl(INADDR_ANY)
                                          : IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
    if (ss.ss_family == AF_INET)
        snprintf(l->name, sizeof(l->name), "%s%s:%d", scheme, lc->host, l->port);
    else
        snprintf(l->name, sizeof(l->name), "%s[%s]:%d", scheme, lc->host, l->port);
    l->fd = fd;
    l->proto = proto;
    return 0;
fail:
    fprintf(stderr, "kurir: cannot listen on %s: %s\n", l->name, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static void refuse(struct server *srv, int fd, const struct sockaddr_storage *peer)
{
    char ip[64];
    int port;
    conn_addr_text(peer, ip, sizeof(ip), &port);
    struct buf b;
    buf_init(&b);
    reply_canned(&b, R_TOO_MANY_CONNS, false, srv->w.eng->cfg.hostname);
    ssize_t w = write(fd, buf_peek(&b), buf_used(&b));
    (void)w;
    buf_free(&b);
    close(fd);
    srv_log(srv, "warn", "refused");
    logfmt_str(&srv->w.log, "remote_ip", ip);
    logfmt_str(&srv->w.log, "reason", "connection limit");
    worker_log_end(&srv->w);
}

/* ---- protocols -------------------------------------------------------- */

static void smtp_accept(struct server *srv, struct listener *l, int fd,
                        const struct sockaddr_storage *peer, const char *key)
{
    /* the conn's reference keeps s until a deferred close: never freed
     * (so never gone()) before session_new returns */
    struct session *s = session_new(&srv->w, &srv->sessions, fd, l->proto->tls, peer,
                                    l->wildcard ? NULL : &l->addr);
    size_t n = strlen(key);   /* < CLIENT_KEY_MAX: client_key_text wrote it into as much */
    memcpy(s->client_key, key, n + 1);
}

static int http_serve(struct server *srv, struct listener *l)
{
    /* libmicrohttpd accepts on it from now on and closes it */
    int rc = http_listen(&srv->w, &srv->http, l->fd, l->name);
    l->fd = -1;
    return rc;
}

static const struct protocol protocols[] = {
    {"smtp", "", false, smtp_accept, NULL},
    {"smtps", "smtps://", true, smtp_accept, NULL},
    {"http", "http://", false, NULL, http_serve},
};

const struct protocol *server_protocol(const struct listen_cfg *lc)
{
    return &protocols[lc->http ? 2 : lc->tls ? 1 : 0];
}

void server_open_lua(lua_State *L)
{
    engine_session_register(L);   /* kurir.session, kurir.message, kurir.cred */
    lqueue_register(L);           /* msg:enqueue */
    lua_http_open(L);             /* kurir.http */
}

void server_privdrop_want(const struct config *c, struct privdrop_want *w)
{
    w->user = c->user;
    w->group = c->group;
    w->run_as_root = c->run_as_root;
    w->spool = c->spool;
    /* port 0 is the kernel's pick from the ephemeral range, never below 1024 */
    w->privileged_port = false;
    for (int i = 0; i < c->nlisten; i++)
        if (c->listen[i].port > 0 && c->listen[i].port < 1024)
            w->privileged_port = true;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct listener *l = w->data;
    struct server *srv = l->srv;
    for (int i = 0; i < 64 && !srv->stopping; i++) {
        struct sockaddr_storage ss;
        socklen_t slen = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &slen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: a level-triggered listener would spin;
                 * stop accepting for a moment (the backlog keeps clients) */
                srv_log(srv, "warn", "accept_paused");
                logfmt_str(&srv->w.log, "error", strerror(errno));
                worker_log_end(&srv->w);
                for (int k = 0; k < srv->nls; k++)
                    ev_io_stop(srv->w.loop, &srv->ls[k].w);
                ev_timer_set(&srv->accept_pause, 0.25, 0);
                ev_timer_start(srv->w.loop, &srv->accept_pause);
                return;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                srv_log(srv, "error", "accept");
                logfmt_str(&srv->w.log, "error", strerror(errno));
                worker_log_end(&srv->w);
            }
            return;
        }
        /* the key is made once: the session keeps it for the release */
        const struct config *cfg = &srv->w.eng->cfg;
        char key[CLIENT_KEY_MAX];
        client_key_text(&ss, cfg->ipv6_prefix, key, sizeof(key));
        if ((srv->climit ? conn_limit_take(srv->climit, srv->climit_slot, key, cfg->connections,
                                           cfg->connections_per_ip)
                         : key_count_take(&srv->counts, key, cfg->connections,
                                          cfg->connections_per_ip)) < 0) {
            refuse(srv, fd, &ss);
            continue;
        }
        l->proto->accept(srv, l, fd, &ss, key);   /* TCP_NODELAY came from the listener */
    }
}

static void maybe_done(struct server *srv)
{
    if (srv->stopping && srv->sessions.n == 0)
        ev_break(srv->w.loop, EVBREAK_ALL);
}

static void session_gone(struct session_set *set, struct session *s)
{
    struct server *srv = (struct server *)(void *)((char *)set - offsetof(struct server, sessions));
    /* under the key accept took, whatever a reload changed since */
    if (srv->climit)
        conn_limit_release(srv->climit, srv->climit_slot, s->client_key);
    else
        key_count_release(&srv->counts, s->client_key);
    maybe_done(srv);
}

static void accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct server *srv = w->data;
    if (srv->stopping)
        return;
    for (int i = 0; i < srv->nls; i++)
        if (srv->ls[i].fd >= 0)
            ev_io_start(loop, &srv->ls[i].w);
}

static void grace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    srv_log(srv, "warn", "shutdown_grace_expired");
    logfmt_int(&srv->w.log, "sessions", srv->sessions.n);
    worker_log_end(&srv->w);
    for (struct session *s = srv->sessions.head, *n; s; s = n) {
        n = s->next;
        session_force_close(s);
    }
}

static void close_listeners(struct server *srv)
{
    for (int i = 0; i < srv->nls; i++) {
        if (srv->ls[i].fd < 0)
            continue;
        ev_io_stop(srv->w.loop, &srv->ls[i].w);
        close(srv->ls[i].fd);
        srv->ls[i].fd = -1;
    }
    ev_timer_stop(srv->w.loop, &srv->accept_pause);
}

static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct server *srv = w->data;
    if (srv->stopping && !srv->retiring)
        return;
    srv->stopping = true;
    srv->retiring = false;
    srv_log(srv, "info", "shutdown");
    logfmt_str(&srv->w.log, "signal", w->signum == SIGTERM ? "TERM" : "INT");
    logfmt_int(&srv->w.log, "sessions", srv->sessions.n);
    worker_log_end(&srv->w);
    close_listeners(srv);
    engine_stop_jobs(srv->w.eng);
    for (struct session *s = srv->sessions.head, *n; s; s = n) {
        n = s->next;
        session_shutdown(s);
    }
    ev_timer_set(&srv->grace, srv->w.eng->cfg.t_shutdown, 0);
    ev_timer_start(loop, &srv->grace);
    maybe_done(srv);   /* the loop ends through ev_break once no session is left */
}

/* A worker replaced by a reload: no new sessions; the established ones
 * run to their natural end (QUIT, or the command timeout), undisturbed. */
static void retire_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    if (srv->stopping)
        return;
    srv->stopping = true;
    srv->retiring = true;
    srv_log(srv, "info", "retire");
    logfmt_int(&srv->w.log, "sessions", srv->sessions.n);
    worker_log_end(&srv->w);
    close_listeners(srv);
    http_stop_all(&srv->w, &srv->http);           /* its replacement serves HTTP from now on */
    engine_stop_jobs(srv->w.eng);   /* its replacement runs the new script's tasks */
    maybe_done(srv);
}

static void hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    char *err = NULL;
    struct engine *e = engine_load(srv->script, server_open_lua, srv->argc, srv->argv,
                                   srv->listen_override, srv->nlisten_override, &err);
    if (!e) {
        srv_log(srv, "error", "reload_failed");
        logfmt_str(&srv->w.log, "script", srv->script);
        logfmt_str(&srv->w.log, "error", err ? err : "unknown");
        worker_log_end(&srv->w);
        free(err);
        return;
    }
    bool tls_listener = false;
    for (int i = 0; i < srv->nls; i++)
        tls_listener |= srv->ls[i].proto->tls;
    if (tls_listener && !e->tls) {
        srv_log(srv, "error", "reload_failed");
        logfmt_str(&srv->w.log, "script", srv->script);
        logfmt_str(&srv->w.log, "error", "the new configuration has no tls, but an smtps:// listener is bound");
        worker_log_end(&srv->w);
        engine_unref(e);
        return;
    }
    e->generation = srv->w.eng->generation + 1;
    engine_stop_jobs(srv->w.eng);   /* the old script's tasks end once the new one runs */
    engine_unref(srv->w.eng);
    srv->w.eng = e;
    engine_start(e, &srv->w);   /* a failure is logged; the old tick stays */
    srv_log(srv, "info", "reload");
    logfmt_str(&srv->w.log, "script", srv->script);
    logfmt_int(&srv->w.log, "generation", (long long)e->generation);
    worker_log_end(&srv->w);
}

static struct queue *server_queue(struct server *srv, char *err, size_t cap);

static struct queue *worker_queue(struct worker *w, char *err, size_t cap)
{
    return server_queue(w->owner, err, cap);
}

static const struct worker_ops server_worker_ops = {worker_queue};

static int init(struct server *srv, struct ev_loop *loop, struct engine *eng,
                const struct server_worker *wk)
{
    memset(srv, 0, sizeof(*srv));
    worker_init(&srv->w, loop, wk ? wk->id : -1, &server_worker_ops, srv);
    srv->w.eng = eng;
    srv->sessions.gone = session_gone;
    key_count_init(&srv->counts);
    const struct config *cfg = &eng->cfg;
    int nls = wk ? wk->nls : cfg->nlisten;
    srv->ls = xcalloc((size_t)(nls ? nls : 1), sizeof(*srv->ls));
    for (int i = 0; i < nls; i++) {
        struct listener *l = &srv->ls[i];
        if (wk) {
            *l = wk->ls[i];
        } else if (server_listen(l, &cfg->listen[i]) < 0) {
            return -1;
        }
        l->srv = srv;
        srv->nls++;
        if (!l->proto->accept) {
            if (l->proto->serve(srv, l) < 0)
                return -1;
            continue;
        }
        ev_io_init(&l->w, accept_cb, l->fd, EV_READ);
        l->w.data = l;
        ev_io_start(loop, &l->w);
    }
    ev_signal_init(&srv->sigterm, stop_cb, SIGTERM);
    ev_signal_init(&srv->sigint, stop_cb, SIGINT);
    ev_signal_init(&srv->sighup, hup_cb, SIGHUP);
    srv->sigterm.data = srv->sigint.data = srv->sighup.data = srv;
    ev_signal_start(loop, &srv->sigterm);
    ev_signal_start(loop, &srv->sigint);
    ev_unref(loop);
    ev_unref(loop);
    if (wk) {
        signal(SIGHUP, SIG_IGN);   /* the master reloads by replacing workers */
        ev_signal_init(&srv->sigusr1, retire_cb, SIGUSR1);
        srv->sigusr1.data = srv;
        ev_signal_start(loop, &srv->sigusr1);
        ev_unref(loop);
        srv->climit = wk->climit;
        srv->climit_slot = wk->slot;
    } else {
        ev_signal_start(loop, &srv->sighup);
        ev_unref(loop);
    }
    ev_timer_init(&srv->grace, grace_cb, 0, 0);
    srv->grace.data = srv;
    ev_timer_init(&srv->accept_pause, accept_resume_cb, 0, 0);
    srv->accept_pause.data = srv;
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < srv->nls && !wk; i++) {
        srv_log(srv, "info", "listening");
        logfmt_str(&srv->w.log, "address", srv->ls[i].name);
        logfmt_int(&srv->w.log, "port", srv->ls[i].port);
        worker_log_end(&srv->w);
    }
    warn_spool(srv);
    int rc = engine_start(eng, &srv->w);
    worker_log_flush(&srv->w);
    return rc;
}

int server_init(struct server *srv, struct ev_loop *loop, struct engine *eng)
{
    return init(srv, loop, eng, NULL);
}

int server_init_worker(struct server *srv, struct ev_loop *loop, struct engine *eng,
                       const struct server_worker *w)
{
    return init(srv, loop, eng, w);
}

static struct queue *server_queue(struct server *srv, char *err, size_t cap)
{
    if (srv->queue)
        return srv->queue;
    struct queue *q = xcalloc(1, sizeof(*q));
    if (queue_open(q, &srv->w, err, cap) < 0) {
        free(q);
        srv_log(srv, "error", "queue_unavailable");
        logfmt_str(&srv->w.log, "error", err);
        worker_log_end(&srv->w);
        return NULL;
    }
    srv->queue = q;
    return q;
}

int server_run(struct server *srv)
{
    /* messages left from an earlier run resume now; a fresh queue
     * directory is made on first use only */
    struct stat st;
    if (stat(srv->w.eng->cfg.queue_dir, &st) == 0) {
        char err[256];
        server_queue(srv, err, sizeof(err));
    }
    ev_run(srv->w.loop, 0);
    srv_log(srv, "info", "stopped");
    worker_log_end(&srv->w);
    worker_log_flush(&srv->w);
    return 0;
}

void server_free(struct server *srv)
{
    http_stop_all(&srv->w, &srv->http);
    if (srv->queue) {
        queue_close(srv->queue);
        free(srv->queue);
        srv->queue = NULL;
    }
    for (int i = 0; i < srv->nls; i++)
        if (srv->ls[i].fd >= 0) {
            ev_io_stop(srv->w.loop, &srv->ls[i].w);
            close(srv->ls[i].fd);
        }
    free(srv->ls);
    key_count_free(&srv->counts);
    ev_ref(srv->w.loop);
    ev_ref(srv->w.loop);
    ev_signal_stop(srv->w.loop, &srv->sigterm);
    ev_signal_stop(srv->w.loop, &srv->sigint);
    if (ev_is_active(&srv->sighup)) {
        ev_ref(srv->w.loop);
        ev_signal_stop(srv->w.loop, &srv->sighup);
    }
    if (ev_is_active(&srv->sigusr1)) {
        ev_ref(srv->w.loop);
        ev_signal_stop(srv->w.loop, &srv->sigusr1);
    }
    ev_timer_stop(srv->w.loop, &srv->grace);
    ev_timer_stop(srv->w.loop, &srv->accept_pause);
    if (srv->w.eng)
        engine_unref(srv->w.eng);
    srv->w.eng = NULL;
    worker_free(&srv->w);
}
