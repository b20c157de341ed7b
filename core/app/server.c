/* server.c - listeners, accept and connection limits (this process's
 * sessions, or the counts shared by a master's workers), signals
 * (TERM/INT: graceful stop; HUP: reload the script for new sessions, in a
 * single process; a worker leaves HUP to its master), and the
 * per-iteration flush of every connection with queued replies (one write
 * per pipelined group). Owns the listener sockets and the session list;
 * sessions free themselves and unlink through server_session_gone(). */
#include "app/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/client_key.h"
#include "sys/conn_limit.h"
#include "http/http.h"
#include "proto/logfmt.h"
#include "queue/queue.h"
#include "proto/reply.h"
#include "smtp/session.h"

static void srv_log(struct server *srv, const char *level, const char *event)
{
    buf_reset(&srv->log);
    logfmt_begin(&srv->log, level, NULL, event);
    if (srv->worker_id >= 0)
        logfmt_int(&srv->log, "worker", srv->worker_id);
}

/* A spool in RAM loses every accepted message at a reboot: say so once. */
static void warn_spool(struct server *srv)
{
    const char *dir = srv->eng->cfg.spool;
    uint64_t avail;
    bool tmpfs;
    if (spool_space(dir, &avail, &tmpfs) < 0) {
        srv_log(srv, "warn", "spool_unavailable");
        logfmt_str(&srv->log, "dir", dir);
        logfmt_str(&srv->log, "error", strerror(errno));
        server_log_end(srv);
        return;
    }
    if (tmpfs) {
        srv_log(srv, "warn", "spool_on_tmpfs");
        logfmt_str(&srv->log, "dir", dir);
        logfmt_str(&srv->log, "hint", "tmpfs is RAM: messages are lost at a reboot; set spool to a disk directory");
        server_log_end(srv);
    }
}

int server_listen(struct listener *l, const struct listen_cfg *lc)
{
    const char *scheme = lc->http ? "http://" : lc->tls ? "smtps://" : "";
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
    if (bind(fd, (struct sockaddr *)&ss, slen) < 0 || listen(fd, 511) < 0)
        goto fail;
    /* Port 0 asks the kernel for an ephemeral port: name the one bound,
     * since the `listening` log line is how a caller learns it (SPEC 1). */
    if (getsockname(fd, (struct sockaddr *)&ss, &slen) < 0)
        goto fail;
    l->port = ntohs(ss.ss_family == AF_INET ? in4->sin_port : in6->sin6_port);
    if (ss.ss_family == AF_INET)
        snprintf(l->name, sizeof(l->name), "%s%s:%d", scheme, lc->host, l->port);
    else
        snprintf(l->name, sizeof(l->name), "%s[%s]:%d", scheme, lc->host, l->port);
    l->fd = fd;
    l->tls = lc->tls;
    l->http = lc->http;
    return 0;
fail:
    fprintf(stderr, "kurir: cannot listen on %s: %s\n", l->name, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

int server_count_ip(struct server *srv, const struct sockaddr_storage *peer)
{
    /* clients are counted by key: an IPv6 client's whole /N counts as one */
    int prefix = srv->eng->cfg.ipv6_prefix;
    char key[CLIENT_KEY_MAX], other[CLIENT_KEY_MAX];
    client_key_text(peer, prefix, key, sizeof(key));
    int n = 0;
    for (struct session *s = srv->sessions; s; s = s->next) {
        client_key_text(&s->conn.peer, prefix, other, sizeof(other));
        if (strcmp(other, key) == 0)
            n++;
    }
    return n;
}

static void refuse(struct server *srv, int fd, const char *ip)
{
    struct buf b;
    buf_init(&b);
    reply_canned(&b, R_TOO_MANY_CONNS, false, srv->eng->cfg.hostname);
    ssize_t w = write(fd, buf_peek(&b), buf_used(&b));
    (void)w;
    buf_free(&b);
    close(fd);
    srv_log(srv, "warn", "refused");
    logfmt_str(&srv->log, "remote_ip", ip);
    logfmt_str(&srv->log, "reason", "connection limit");
    server_log_end(srv);
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
                logfmt_str(&srv->log, "error", strerror(errno));
                server_log_end(srv);
                for (int k = 0; k < srv->nls; k++)
                    ev_io_stop(srv->loop, &srv->ls[k].w);
                ev_timer_set(&srv->accept_pause, 0.25, 0);
                ev_timer_start(srv->loop, &srv->accept_pause);
                return;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                srv_log(srv, "error", "accept");
                logfmt_str(&srv->log, "error", strerror(errno));
                server_log_end(srv);
            }
            return;
        }
        char ip[64];
        int port;
        conn_addr_text(&ss, ip, sizeof(ip), &port);
        const struct config *cfg = &srv->eng->cfg;
        char key[CLIENT_KEY_MAX];
        client_key_text(&ss, cfg->ipv6_prefix, key, sizeof(key));
        if (srv->climit ? conn_limit_take(srv->climit, srv->climit_slot, key, cfg->connections,
                                          cfg->connections_per_ip) < 0
                        : (srv->nsessions >= cfg->connections ||
                           server_count_ip(srv, &ss) >= cfg->connections_per_ip)) {
            refuse(srv, fd, ip);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        session_new(srv, fd, l->tls, &ss);
    }
}

/* Log lines of one loop iteration go out in one write, like replies. */
void server_log_end(struct server *srv)
{
    buf_append(&srv->log, "\n", 1);
    buf_append(&srv->logq, buf_peek(&srv->log), buf_used(&srv->log));
    buf_reset(&srv->log);
    if (buf_used(&srv->logq) >= 64 * 1024)
        server_log_flush(srv);
}

/* A single process writes the queue at once. Workers share stderr: each
 * write carries whole lines and at most PIPE_BUF bytes, which the kernel
 * never interleaves with another writer's on a pipe (and O_APPEND files
 * take whole writes); a longer line is cut at PIPE_BUF with a marker. */
void server_log_flush(struct server *srv)
{
    size_t n = buf_used(&srv->logq);
    const char *p = buf_peek(&srv->logq);
    if (srv->worker_id < 0) {
        (void)write_all(2, p, n);   /* stderr gone or full: the lines are dropped, never the mail */
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
    buf_reset(&srv->logq);
    buf_shrink(&srv->logq, 256 * 1024);
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    server_log_flush(srv);
    while (srv->pending) {
        struct conn *c = srv->pending;
        srv->pending = c->next_pending;
        c->next_pending = NULL;
        c->pending_flush = false;
        conn_flush(c);
    }
}

void server_want_flush(struct server *srv, struct conn *c)
{
    if (c->pending_flush || c->closed)
        return;
    c->pending_flush = true;
    c->next_pending = srv->pending;
    srv->pending = c;
}

void server_forget_conn(struct server *srv, struct conn *c)
{
    if (!c->pending_flush)
        return;
    for (struct conn **pp = &srv->pending; *pp; pp = &(*pp)->next_pending) {
        if (*pp == c) {
            *pp = c->next_pending;
            break;
        }
    }
    c->pending_flush = false;
}

static void maybe_done(struct server *srv)
{
    if (srv->stopping && srv->nsessions == 0)
        ev_break(srv->loop, EVBREAK_ALL);
}

void server_session_gone(struct server *srv, struct session *s)
{
    if (srv->climit) {
        char key[CLIENT_KEY_MAX];
        /* a worker never reloads in place: srv->eng is every session's engine */
        client_key_text(&s->conn.peer, srv->eng->cfg.ipv6_prefix, key, sizeof(key));
        conn_limit_release(srv->climit, srv->climit_slot, key);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->nsessions--;
    maybe_done(srv);
}

/* Session and queue ids: seconds since the epoch, the process id and a
 * counter, 32 + 24 + 24 bits in 20 upper-case hex digits (safe in file
 * names, sorted by time). Two live processes differ in the pid; a process
 * never repeats an id unless it makes 2^24 of them in one second; a pid is
 * not reused within the second a process started in. The counter starts
 * at a random value, so that processes with equal pids in different pid
 * namespaces sharing a spool are unlikely to collide either. */
void server_new_id(struct server *srv, char out[24])
{
    unsigned long long t = (unsigned long long)time_wall();
    snprintf(out, 24, "%08llX%06X%06llX", t & 0xFFFFFFFFull, srv->pid & 0xFFFFFF,
             (unsigned long long)(srv->counter++ & 0xFFFFFF));
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
    logfmt_int(&srv->log, "sessions", srv->nsessions);
    server_log_end(srv);
    for (struct session *s = srv->sessions, *n; s; s = n) {
        n = s->next;
        session_force_close(s);
    }
}

static void close_listeners(struct server *srv)
{
    for (int i = 0; i < srv->nls; i++) {
        if (srv->ls[i].fd < 0)
            continue;
        ev_io_stop(srv->loop, &srv->ls[i].w);
        close(srv->ls[i].fd);
        srv->ls[i].fd = -1;
    }
    ev_timer_stop(srv->loop, &srv->accept_pause);
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
    logfmt_str(&srv->log, "signal", w->signum == SIGTERM ? "TERM" : "INT");
    logfmt_int(&srv->log, "sessions", srv->nsessions);
    server_log_end(srv);
    close_listeners(srv);
    engine_stop_jobs(srv->eng);
    for (struct session *s = srv->sessions, *n; s; s = n) {
        n = s->next;
        session_shutdown(s);
    }
    ev_timer_set(&srv->grace, srv->eng->cfg.t_shutdown, 0);
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
    logfmt_int(&srv->log, "sessions", srv->nsessions);
    server_log_end(srv);
    close_listeners(srv);
    http_stop_all(srv);           /* its replacement serves HTTP from now on */
    engine_stop_jobs(srv->eng);   /* its replacement runs the new script's tasks */
    maybe_done(srv);
}

static void hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    char *err = NULL;
    struct engine *e = engine_load(srv->script, srv->argc, srv->argv, srv->listen_override,
                                   srv->nlisten_override, &err);
    if (!e) {
        srv_log(srv, "error", "reload_failed");
        logfmt_str(&srv->log, "script", srv->script);
        logfmt_str(&srv->log, "error", err ? err : "unknown");
        server_log_end(srv);
        free(err);
        return;
    }
    bool tls_listener = false;
    for (int i = 0; i < srv->nls; i++)
        tls_listener |= srv->ls[i].tls;
    if (tls_listener && !e->tls) {
        srv_log(srv, "error", "reload_failed");
        logfmt_str(&srv->log, "script", srv->script);
        logfmt_str(&srv->log, "error", "the new configuration has no tls, but an smtps:// listener is bound");
        server_log_end(srv);
        engine_unref(e);
        return;
    }
    e->generation = srv->eng->generation + 1;
    engine_stop_jobs(srv->eng);   /* the old script's tasks end once the new one runs */
    engine_unref(srv->eng);
    srv->eng = e;
    engine_start(e, srv);
    srv_log(srv, "info", "reload");
    logfmt_str(&srv->log, "script", srv->script);
    logfmt_int(&srv->log, "generation", (long long)e->generation);
    server_log_end(srv);
}

static int init(struct server *srv, struct ev_loop *loop, struct engine *eng,
                const struct server_worker *wk)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->eng = eng;
    srv->pid = (unsigned)getpid();
    uint32_t r;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint32_t)(time_mono() * 1e9);
    srv->counter = r & 0xFFFFFF;
    srv->worker_id = wk ? wk->id : -1;
    buf_init(&srv->log);
    buf_init(&srv->logq);
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
        if (l->http) {
            /* libmicrohttpd accepts on it from now on and closes it */
            if (http_listen(srv, l->fd, l->name) < 0)
                return -1;
            l->fd = -1;
            continue;
        }
        ev_io_init(&l->w, accept_cb, l->fd, EV_READ);
        l->w.data = l;
        ev_io_start(loop, &l->w);
    }
    ev_prepare_init(&srv->flusher, flush_cb);
    srv->flusher.data = srv;
    ev_prepare_start(loop, &srv->flusher);
    ev_unref(loop);
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
        logfmt_str(&srv->log, "address", srv->ls[i].name);
        logfmt_int(&srv->log, "port", srv->ls[i].port);
        server_log_end(srv);
    }
    warn_spool(srv);
    server_log_flush(srv);
    engine_start(eng, srv);
    return 0;
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

struct queue *server_queue(struct server *srv, char *err, size_t cap)
{
    if (srv->queue)
        return srv->queue;
    struct queue *q = xcalloc(1, sizeof(*q));
    if (queue_open(q, srv, err, cap) < 0) {
        free(q);
        srv_log(srv, "error", "queue_unavailable");
        logfmt_str(&srv->log, "error", err);
        server_log_end(srv);
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
    if (stat(srv->eng->cfg.queue_dir, &st) == 0) {
        char err[256];
        server_queue(srv, err, sizeof(err));
    }
    ev_run(srv->loop, 0);
    srv_log(srv, "info", "stopped");
    server_log_end(srv);
    server_log_flush(srv);
    return 0;
}

void server_free(struct server *srv)
{
    http_stop_all(srv);
    if (srv->queue) {
        queue_close(srv->queue);
        free(srv->queue);
        srv->queue = NULL;
    }
    for (int i = 0; i < srv->nls; i++)
        if (srv->ls[i].fd >= 0) {
            ev_io_stop(srv->loop, &srv->ls[i].w);
            close(srv->ls[i].fd);
        }
    free(srv->ls);
    ev_ref(srv->loop);
    ev_prepare_stop(srv->loop, &srv->flusher);
    ev_ref(srv->loop);
    ev_ref(srv->loop);
    ev_signal_stop(srv->loop, &srv->sigterm);
    ev_signal_stop(srv->loop, &srv->sigint);
    if (ev_is_active(&srv->sighup)) {
        ev_ref(srv->loop);
        ev_signal_stop(srv->loop, &srv->sighup);
    }
    if (ev_is_active(&srv->sigusr1)) {
        ev_ref(srv->loop);
        ev_signal_stop(srv->loop, &srv->sigusr1);
    }
    ev_timer_stop(srv->loop, &srv->grace);
    ev_timer_stop(srv->loop, &srv->accept_pause);
    if (srv->eng)
        engine_unref(srv->eng);
    srv->eng = NULL;
    server_log_flush(srv);
    buf_free(&srv->log);
    buf_free(&srv->logq);
}
