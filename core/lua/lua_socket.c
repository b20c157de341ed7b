/* lua_socket.c - kurir.connect and the "kurir.socket" userdata: a TCP
 * (or Unix domain, for a host that is an absolute path) client socket,
 * optionally TLS (at connect or later with starttls), for
 * hooks and tasks. Every operation that has to wait (connect, handshake,
 * send, receive) runs as one task waiting operation (task_suspend): an
 * ev_io watcher embedded in the userdata does the I/O step by step and
 * wakes the task only when the whole operation is done; the operation's
 * timeout, the run's time limit and an aborted task end the wait through
 * waiter.cancel, which stops the watcher and never touches the task.
 *
 * Owns: the fd, the client SSL_CTX/SSL, a bounded read buffer and the
 * pending write of each socket; all are released by close() or __gc.
 * Uses: task.h (the waiting protocol), conn.h (address to text), util.h
 * (struct buf). */
#include "lua/lua_socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/conn.h"
#include "lua/engine.h"
#include "lua/task.h"
#include "proto/util.h"

#define SOCKET_MT "kurir.socket"
#define SOCKET_DEFAULT_TIMEOUT 30.0
#define SOCKET_DEFAULT_MAX_LINE ((size_t)1 << 20)
#define SOCKET_DEFAULT_MAX_SIZE ((size_t)64 << 20)   /* receive("a") */
#define SOCKET_READ_CHUNK 16384
#define SOCKET_NAME_MAX 256

enum sock_op { OP_NONE, OP_CONNECT, OP_HANDSHAKE, OP_SEND, OP_RECEIVE };
enum recv_kind { RECV_LINE, RECV_LINE_END, RECV_COUNT, RECV_ALL };

struct lsock {
    int fd;                      /* -1 once closed */
    SSL_CTX *ctx;
    SSL *ssl;
    bool tls_up;                 /* handshake completed */
    bool eof;                    /* the peer closed its side */
    struct ev_loop *loop;
    ev_io io;
    struct task_waiter waiter;
    struct task *t;              /* the task waiting on op; NULL when none */
    enum sock_op op;
    int events;                  /* what io waits for (EV_READ / EV_WRITE) */
    /* TLS settings for a handshake that starts later (tls = true) */
    bool want_tls;
    bool verify;
    char *ca;
    char *servername;
    double timeout;
    size_t max_line;
    size_t max_size;            /* most bytes receive("a") collects */
    struct buf rbuf;
    struct buf wbuf;             /* the rest of a pending send */
    size_t wtotal;               /* bytes of that send, returned on success */
    enum recv_kind rkind;
    size_t rcount;
    char host[SOCKET_NAME_MAX];  /* as given (brackets stripped): default servername */
    char remote_ip[INET6_ADDRSTRLEN];
    char local_ip[INET6_ADDRSTRLEN];
    int remote_port;
    int local_port;
};

/* ---- helpers ------------------------------------------------------------- */

/* One checked accessor. */
static struct lsock *sock_check(lua_State *L, int i)
{
    return luaL_checkudata(L, i, SOCKET_MT);
}

static struct lsock *sock_of_waiter(struct task_waiter *w)
{
    return (struct lsock *)(void *)((char *)w - offsetof(struct lsock, waiter));
}

static struct lsock *sock_of_io(ev_io *w)
{
    return (struct lsock *)(void *)((char *)w - offsetof(struct lsock, io));
}

/* An errno as a short lower-case reason ("connection refused"). */
static void push_errno(lua_State *L, int e)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "%s", strerror(e));
    if (msg[0] >= 'A' && msg[0] <= 'Z')
        msg[0] = (char)(msg[0] - 'A' + 'a');
    lua_pushnil(L);
    lua_pushstring(L, msg);
}

static void push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
}

/* "tls: <reason>": a failed certificate check names the X509 reason;
 * otherwise the earliest queued OpenSSL error. Clears the error queue. */
static void push_tls_error(lua_State *L, struct lsock *k, const char *fallback)
{
    char msg[300];
    long vr = k->ssl ? SSL_get_verify_result(k->ssl) : X509_V_OK;
    unsigned long e = ERR_peek_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    if (vr != X509_V_OK && k->verify)
        snprintf(msg, sizeof(msg), "tls: certificate verify failed (%s)", X509_verify_cert_error_string(vr));
    else if (reason)
        snprintf(msg, sizeof(msg), "tls: %s", reason);
    else if (e) {
        char tmp[256];
        ERR_error_string_n(e, tmp, sizeof(tmp));
        snprintf(msg, sizeof(msg), "tls: %s", tmp);
    } else
        snprintf(msg, sizeof(msg), "tls: %s", fallback);
    ERR_clear_error();
    push_fail(L, msg);
}

static void free_tls_settings(struct lsock *k)
{
    free(k->ca);
    free(k->servername);
    k->ca = NULL;
    k->servername = NULL;
}

/* Release fd, SSL and buffers. Safe to call twice; never touches Lua or a
 * task, so waiter.cancel and __gc may use it. */
static void sock_shut(struct lsock *k)
{
    if (k->loop)
        ev_io_stop(k->loop, &k->io);
    if (k->ssl) {
        if (k->tls_up && k->fd >= 0) {
            ERR_clear_error();
            SSL_shutdown(k->ssl);   /* one close_notify, no waiting for the peer's */
        }
        SSL_free(k->ssl);
        k->ssl = NULL;
    }
    if (k->ctx) {
        SSL_CTX_free(k->ctx);
        k->ctx = NULL;
    }
    ERR_clear_error();
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    k->tls_up = false;
    buf_free(&k->rbuf);
    buf_free(&k->wbuf);
    free_tls_settings(k);
}

static void note_addresses(struct lsock *k)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getpeername(k->fd, (struct sockaddr *)&ss, &len) == 0)
        conn_addr_text(&ss, k->remote_ip, sizeof(k->remote_ip), &k->remote_port);
    len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(k->fd, (struct sockaddr *)&ss, &len) == 0)
        conn_addr_text(&ss, k->local_ip, sizeof(k->local_ip), &k->local_port);
}

/* TLS options of connect/starttls from the table at index t (may be none).
 * connect starts from the defaults (verify, no CA, the host as name);
 * starttls (keep) starts from what connect was given, so that a name and
 * CA passed to kurir.connect still hold for the later handshake. */
static void read_tls_opts(lua_State *L, int t, struct lsock *k, bool keep)
{
    if (!keep) {
        free_tls_settings(k);
        k->verify = true;
    }
    if (lua_isnoneornil(L, t))
        return;
    lua_getfield(L, t, "verify");
    if (!lua_isnil(L, -1)) {
        luaL_argexpected(L, lua_isboolean(L, -1), t, "boolean opts.verify");
        k->verify = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "ca");
    if (!lua_isnil(L, -1)) {
        luaL_argexpected(L, lua_type(L, -1) == LUA_TSTRING, t, "string opts.ca");
        free(k->ca);
        k->ca = xstrdup(lua_tostring(L, -1));
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "servername");
    if (!lua_isnil(L, -1)) {
        luaL_argexpected(L, lua_type(L, -1) == LUA_TSTRING, t, "string opts.servername");
        free(k->servername);
        k->servername = xstrdup(lua_tostring(L, -1));
    }
    lua_pop(L, 1);
}

/* The registry keeps one client SSL_CTX per (verify, CA file) for the life
 * of the engine, so the CA bundle is read from disk once, not on every
 * connect (that read would block the event loop). */
#define CTX_CACHE "kurir.socket.ctx"
#define CTX_MT "kurir.socket.sslctx"

static int ctx_gc(lua_State *L)
{
    SSL_CTX **pc = luaL_checkudata(L, 1, CTX_MT);
    if (*pc)
        SSL_CTX_free(*pc);
    *pc = NULL;
    return 0;
}

/* A new reference to the cached context, or NULL with a message pushed. */
static SSL_CTX *client_ctx(lua_State *L, struct lsock *k)
{
    lua_pushfstring(L, "%d|%s", (int)k->verify, k->ca ? k->ca : "");
    if (lua_getfield(L, LUA_REGISTRYINDEX, CTX_CACHE) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, CTX_CACHE);
    }
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);
    SSL_CTX **pc = luaL_testudata(L, -1, CTX_MT);
    if (pc && *pc) {
        SSL_CTX *c = *pc;
        lua_pop(L, 3);
        SSL_CTX_up_ref(c);
        return c;
    }
    lua_pop(L, 1);
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c) {
        lua_pop(L, 2);
        push_fail(L, "tls: cannot create a client context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (k->verify) {
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
        int ok = k->ca ? SSL_CTX_load_verify_locations(c, k->ca, NULL) : SSL_CTX_set_default_verify_paths(c);
        if (ok != 1) {
            SSL_CTX_free(c);
            ERR_clear_error();
            lua_pop(L, 2);
            char msg[SOCKET_NAME_MAX + 64];
            snprintf(msg, sizeof(msg), "tls: cannot load CA file %s", k->ca ? k->ca : "(system)");
            push_fail(L, msg);
            return NULL;
        }
    } else {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    }
    pc = lua_newuserdatauv(L, sizeof(*pc), 0);
    *pc = c;
    if (luaL_newmetatable(L, CTX_MT)) {
        lua_pushcfunction(L, ctx_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    /* cache[key] = userdata (the cache's own reference) */
    lua_pushvalue(L, -3);
    lua_insert(L, -2);
    lua_rawset(L, -3);
    lua_pop(L, 2);
    SSL_CTX_up_ref(c);
    return c;
}

/* Make the client SSL for k->fd. 0, or -1 with nil, err pushed. */
static int tls_setup(lua_State *L, struct lsock *k)
{
    ERR_clear_error();
    k->ctx = client_ctx(L, k);
    if (!k->ctx)
        return -1;
    k->ssl = SSL_new(k->ctx);
    if (!k->ssl || SSL_set_fd(k->ssl, k->fd) != 1)
        goto fail;
    const char *name = k->servername ? k->servername : k->host;
    unsigned char probe[sizeof(struct in6_addr)];
    bool is_ip = inet_pton(AF_INET, name, probe) == 1 || inet_pton(AF_INET6, name, probe) == 1;
    if (is_ip) {
        /* no SNI for addresses (RFC 6066 3); check the certificate's IP SAN */
        if (k->verify && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(k->ssl), name) != 1)
            goto fail;
    } else if (*name) {
        if (SSL_set_tlsext_host_name(k->ssl, name) != 1)
            goto fail;
        if (k->verify && SSL_set1_host(k->ssl, name) != 1)
            goto fail;
    }
    SSL_set_connect_state(k->ssl);
    return 0;
fail:
    push_tls_error(L, k, "cannot set up the client");
    return -1;
}

/* ---- operation steps ------------------------------------------------------
 * Each step does as much I/O as it can without blocking. It returns the
 * number of results it pushed on L when the operation is over, or 0 after
 * setting k->events to what it waits for. */

static int step_handshake(struct lsock *k, lua_State *L)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_connect(k->ssl);
    if (r == 1) {
        k->tls_up = true;
        free_tls_settings(k);
        lua_pushboolean(L, 1);
        return 1;
    }
    int e = SSL_get_error(k->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        k->events = EV_READ;
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        k->events = EV_WRITE;
        return 0;
    }
    push_tls_error(L, k, e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN
                             ? "the peer closed the connection during the handshake"
                             : "handshake failed");
    return 2;
}

static int step_connect(struct lsock *k, lua_State *L)
{
    if (k->op == OP_CONNECT) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err == EINPROGRESS || err == EALREADY) {
            k->events = EV_WRITE;
            return 0;
        }
        if (err) {
            push_errno(L, err);
            return 2;
        }
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        if (getpeername(k->fd, (struct sockaddr *)&peer, &plen) != 0) {
            if (errno == ENOTCONN) {   /* still in progress */
                k->events = EV_WRITE;
                return 0;
            }
            push_errno(L, errno);
            return 2;
        }
        note_addresses(k);
        if (!k->want_tls) {
            lua_pushboolean(L, 1);
            return 1;
        }
        if (tls_setup(L, k) < 0)
            return 2;
        k->op = OP_HANDSHAKE;
    }
    return step_handshake(k, L);
}

static int step_send(struct lsock *k, lua_State *L)
{
    while (buf_used(&k->wbuf) > 0) {
        const char *p = buf_peek(&k->wbuf);
        size_t n = buf_used(&k->wbuf);
        size_t done = 0;
        if (k->ssl) {
            ERR_clear_error();
            errno = 0;
            if (SSL_write_ex(k->ssl, p, n, &done) != 1) {
                int e = SSL_get_error(k->ssl, 0);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    k->events = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
                    return 0;
                }
                if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
                    ERR_clear_error();
                    push_fail(L, "closed");
                } else {
                    push_tls_error(L, k, "write failed");
                }
                return 2;
            }
        } else {
            ssize_t w = send(k->fd, p, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    k->events = EV_WRITE;
                    return 0;
                }
                if (errno == EPIPE || errno == ECONNRESET)
                    push_fail(L, "closed");
                else
                    push_errno(L, errno);
                return 2;
            }
            done = (size_t)w;
        }
        buf_consume(&k->wbuf, done);
    }
    buf_reset(&k->wbuf);
    lua_pushinteger(L, (lua_Integer)k->wtotal);
    return 1;
}

/* Push the result of a receive if the buffer (and EOF state) settle it. */
static int try_deliver(struct lsock *k, lua_State *L)
{
    const char *p = buf_peek(&k->rbuf);
    size_t used = buf_used(&k->rbuf);
    switch (k->rkind) {
    case RECV_LINE:
    case RECV_LINE_END: {
        const char *nl = used ? memchr(p, '\n', used) : NULL;
        if (nl) {
            size_t total = (size_t)(nl - p) + 1;
            size_t content = total - 1;
            if (content > 0 && p[content - 1] == '\r')
                content--;
            if (content > k->max_line) {
                push_fail(L, "line too long");
                return 2;
            }
            lua_pushlstring(L, p, k->rkind == RECV_LINE ? content : total);
            buf_consume(&k->rbuf, total);
            return 1;
        }
        if (used > k->max_line + 1) {
            push_fail(L, "line too long");
            return 2;
        }
        break;
    }
    case RECV_COUNT:
        if (used >= k->rcount) {
            lua_pushlstring(L, p, k->rcount);
            buf_consume(&k->rbuf, k->rcount);
            return 1;
        }
        break;
    case RECV_ALL:
        if (used > k->max_size) {   /* a peer must not fill our memory */
            buf_reset(&k->rbuf);
            buf_shrink(&k->rbuf, 0);
            push_fail(L, "too large");
            return 2;
        }
        if (k->eof) {
            lua_pushlstring(L, p, used);
            buf_reset(&k->rbuf);
            return 1;
        }
        break;
    }
    if (k->eof) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        lua_pushlstring(L, p, used);
        buf_reset(&k->rbuf);
        return 3;
    }
    return 0;
}

static int step_receive(struct lsock *k, lua_State *L)
{
    for (;;) {
        int n = try_deliver(k, L);
        if (n)
            return n;
        char *dst = buf_reserve(&k->rbuf, SOCKET_READ_CHUNK);
        size_t got = 0;
        if (k->ssl) {
            ERR_clear_error();
            errno = 0;
            if (SSL_read_ex(k->ssl, dst, SOCKET_READ_CHUNK, &got) != 1) {
                int sys = errno;
                int e = SSL_get_error(k->ssl, 0);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    k->events = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
                    return 0;
                }
                unsigned long le = ERR_peek_last_error();
                bool at_eof = e == SSL_ERROR_ZERO_RETURN ||
                              (e == SSL_ERROR_SYSCALL && le == 0 && sys == 0) ||
                              (ERR_GET_LIB(le) == ERR_LIB_SSL &&
                               ERR_GET_REASON(le) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
                if (at_eof) {
                    ERR_clear_error();
                    k->eof = true;
                    continue;
                }
                if (e == SSL_ERROR_SYSCALL && le == 0) {
                    ERR_clear_error();
                    push_errno(L, sys ? sys : EIO);
                } else {
                    push_tls_error(L, k, "read failed");
                }
                return 2;
            }
        } else {
            ssize_t r = recv(k->fd, dst, SOCKET_READ_CHUNK, 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    k->events = EV_READ;
                    return 0;
                }
                push_errno(L, errno);
                return 2;
            }
            if (r == 0) {
                k->eof = true;
                continue;
            }
            got = (size_t)r;
        }
        buf_commit(&k->rbuf, got);
    }
}

static int step(struct lsock *k, lua_State *L)
{
    switch (k->op) {
    case OP_CONNECT:
    case OP_HANDSHAKE:
        return step_connect(k, L);
    case OP_SEND:
        return step_send(k, L);
    case OP_RECEIVE:
        return step_receive(k, L);
    case OP_NONE:
        break;
    }
    return 0;
}

/* ---- waiting ------------------------------------------------------------- */

/* The wait ended without the operation (its timeout, the run's limit, the
 * task was aborted): stop, and never touch the task. A half-done
 * connect or handshake leaves nothing usable, so the socket is closed. */
static void sock_cancel(struct task_waiter *w)
{
    struct lsock *k = sock_of_waiter(w);
    ev_io_stop(k->loop, &k->io);
    /* a half-done connect/handshake leaves nothing usable, and OpenSSL
     * expects a cut-off TLS write to be retried with the same bytes: close */
    if (k->op == OP_CONNECT || k->op == OP_HANDSHAKE || (k->op == OP_SEND && k->ssl))
        sock_shut(k);
    buf_reset(&k->wbuf);
    k->op = OP_NONE;
    k->t = NULL;
}

static void sock_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct lsock *k = sock_of_io(w);
    struct task *t = k->t;
    lua_State *co = t->co;
    lua_checkstack(co, 4);
    int n = step(k, co);
    if (n == 0) {
        if (k->events != (w->events & (EV_READ | EV_WRITE))) {
            ev_io_stop(loop, w);
            ev_io_set(w, k->fd, k->events);
            ev_io_start(loop, w);
        }
        return;
    }
    ev_io_stop(loop, w);
    k->op = OP_NONE;
    k->t = NULL;
    /* the run continues after task_wake and may drop or close this
     * socket: k must not be used after it */
    task_wake(t, n);
}

/* Run op: finish it now if no waiting is needed (then cont gets the
 * results directly), else suspend the task until sock_io_cb completes it. */
static int sock_run(lua_State *L, struct lsock *k, enum sock_op op, lua_KFunction cont, lua_KContext ctx)
{
    k->op = op;
    int n = step(k, L);
    if (n > 0) {
        k->op = OP_NONE;
        return cont(L, LUA_OK, ctx);
    }
    struct task *t = task_waiting(L);
    struct ev_loop *loop = engine_loop(L);
    if (!t || !loop) {
        k->op = OP_NONE;
        if (op == OP_CONNECT || op == OP_HANDSHAKE)
            sock_shut(k);
        return luaL_error(L, "kurir.socket: this operation can only wait inside a hook or a task "
                             "(not at load time or in a coroutine of the script)");
    }
    k->loop = loop;
    k->t = t;
    ev_io_init(&k->io, sock_io_cb, k->fd, k->events);
    ev_io_start(loop, &k->io);
    return task_suspend(L, &k->waiter, k->timeout, cont, ctx);
}

/* Continuation: the results above ctx are what the method returns. */
static int cont_results(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    return lua_gettop(L) - (int)ctx;
}

/* Continuation of connect: ctx is the socket's stack index; true above it
 * returns the socket, nil, err closes it and returns those. */
static int cont_connect(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    int ud = (int)ctx;
    if (lua_toboolean(L, ud + 1)) {
        lua_settop(L, ud);
        return 1;
    }
    sock_shut(lua_touserdata(L, ud));
    return lua_gettop(L) - ud;
}

/* Continuation of starttls: a failed handshake leaves nothing usable. */
static int cont_starttls(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    if (!lua_toboolean(L, (int)ctx + 1))
        sock_shut(lua_touserdata(L, 1));
    return lua_gettop(L) - (int)ctx;
}

/* Raises unless k may start an operation. false: the socket is closed. */
static bool sock_ready(lua_State *L, struct lsock *k)
{
    if (k->op != OP_NONE)
        luaL_error(L, "socket busy (another operation is waiting on it)");
    return k->fd >= 0;
}

/* ---- bindings ------------------------------------------------------------ */

/* The number at stack index i as a timeout; raises naming argument arg. */
static double opt_timeout(lua_State *L, int arg, int i)
{
    int isnum = 0;
    lua_Number v = lua_tonumberx(L, i, &isnum);
    luaL_argcheck(L, isnum && v >= 0 && v == v, arg, "timeout must be a non-negative number of seconds");
    return (double)v;
}

/* (host, port [, opts]) -> socket | nil, err; host "/path": a Unix
 * socket (port nil or ignored) */
int lsocket_connect(lua_State *L)
{
    size_t hlen;
    const char *host = luaL_checklstring(L, 1, &hlen);
    bool unix_path = hlen > 0 && host[0] == '/';
    lua_Integer port = 0;
    if (!unix_path || !lua_isnoneornil(L, 2)) {
        port = luaL_checkinteger(L, 2);
        luaL_argcheck(L, unix_path || (port > 0 && port < 65536), 2, "port must be 1..65535");
    }
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    if (!task_waiting(L) || !engine_loop(L))
        return luaL_error(L, "kurir.connect can only be used inside a hook or a task (not at load "
                             "time or in a coroutine of the script)");

    char name[SOCKET_NAME_MAX];
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    if (hlen >= sizeof(name) || memchr(host, '\0', hlen)) {
        push_fail(L, "invalid address");
        return 2;
    }
    memcpy(name, host, hlen);
    name[hlen] = '\0';

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t slen;
    struct sockaddr_in *a4 = (struct sockaddr_in *)(void *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)(void *)&ss;
    const char *addr = strcmp(name, "localhost") == 0 ? "127.0.0.1" : name;
    struct sockaddr_un *un = (struct sockaddr_un *)(void *)&ss;
    if (unix_path) {
        if (hlen >= sizeof(un->sun_path)) {
            push_fail(L, "socket path too long");
            return 2;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, name, hlen + 1);
        slen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + hlen + 1);
    } else if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        slen = sizeof(*a4);
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        slen = sizeof(*a6);
    } else {
        lua_pushnil(L);
        lua_pushliteral(L, "kurir.connect needs an IP address (resolve names with kurir.dns)");
        return 2;
    }

    /* the userdata first: from here on __gc owns whatever we open */
    struct lsock *k = lua_newuserdatauv(L, sizeof(*k), 0);
    memset(k, 0, sizeof(*k));
    k->fd = -1;
    k->waiter.cancel = sock_cancel;
    k->timeout = SOCKET_DEFAULT_TIMEOUT;
    k->max_line = SOCKET_DEFAULT_MAX_LINE;
    k->max_size = SOCKET_DEFAULT_MAX_SIZE;
    k->verify = true;
    buf_init(&k->rbuf);
    buf_init(&k->wbuf);
    memcpy(k->host, name, hlen + 1);
    luaL_setmetatable(L, SOCKET_MT);
    int ud = lua_gettop(L);

    if (!lua_isnil(L, 3)) {
        lua_getfield(L, 3, "timeout");
        if (!lua_isnil(L, -1))
            k->timeout = opt_timeout(L, 3, -1);
        lua_pop(L, 1);
        lua_getfield(L, 3, "max_line");
        if (!lua_isnil(L, -1)) {
            int isint = 0;
            lua_Integer m = lua_tointegerx(L, -1, &isint);
            luaL_argcheck(L, isint && m > 0, 3, "max_line must be a positive integer");
            k->max_line = (size_t)m;
        }
        lua_pop(L, 1);
        lua_getfield(L, 3, "max_size");
        if (!lua_isnil(L, -1)) {
            int isint = 0;
            lua_Integer m = lua_tointegerx(L, -1, &isint);
            luaL_argcheck(L, isint && m > 0, 3, "max_size must be a positive integer");
            k->max_size = (size_t)m;
        }
        lua_pop(L, 1);
        lua_getfield(L, 3, "tls");
        k->want_tls = lua_toboolean(L, -1);
        lua_pop(L, 1);
        read_tls_opts(L, 3, k, false);
    }

    k->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        int e = errno;
        push_errno(L, e);
        return 2;
    }
    int one = 1;
    if (!unix_path)
        setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* EINTR (the CPU budget's SIGPROF): the connection goes on in the
     * background as for EINPROGRESS (POSIX connect()); writability tells */
    if (connect(k->fd, (struct sockaddr *)&ss, slen) != 0 && errno != EINPROGRESS && errno != EINTR) {
        int e = errno;
        sock_shut(k);
        push_errno(L, e);
        return 2;
    }
    k->events = EV_WRITE;
    return sock_run(L, k, OP_CONNECT, cont_connect, (lua_KContext)ud);
}

/* (socket, string) -> integer | nil, err */
static int l_send(lua_State *L)
{
    struct lsock *k = sock_check(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_settop(L, 2);
    if (!sock_ready(L, k)) {
        push_fail(L, "closed");
        return 2;
    }
    buf_reset(&k->wbuf);
    buf_append(&k->wbuf, data, len);
    k->wtotal = len;
    return sock_run(L, k, OP_SEND, cont_results, (lua_KContext)lua_gettop(L));
}

/* (socket, "l"|"*l"|"L"|"a"|"*a"|integer) -> string | nil, err [, partial] */
static int l_receive(lua_State *L)
{
    struct lsock *k = sock_check(L, 1);
    enum recv_kind kind = RECV_LINE;
    size_t count = 0;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 2);
        luaL_argcheck(L, n >= 0, 2, "byte count must not be negative");
        if ((lua_Unsigned)n > (lua_Unsigned)k->max_size)
            return luaL_error(L, "receive(%I): byte count above the socket's max_size (%I)", n,
                              (lua_Integer)k->max_size);
        kind = RECV_COUNT;
        count = (size_t)n;
    } else if (!lua_isnoneornil(L, 2)) {
        const char *p = luaL_checkstring(L, 2);
        if (*p == '*')
            p++;
        if (!strcmp(p, "l"))
            kind = RECV_LINE;
        else if (!strcmp(p, "L"))
            kind = RECV_LINE_END;
        else if (!strcmp(p, "a"))
            kind = RECV_ALL;
        else
            return luaL_argerror(L, 2, "invalid pattern (expected \"l\", \"L\", \"a\" or a byte count)");
    }
    lua_settop(L, 2);
    if (!sock_ready(L, k)) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        lua_pushliteral(L, "");
        return 3;
    }
    k->rkind = kind;
    k->rcount = count;
    return sock_run(L, k, OP_RECEIVE, cont_results, (lua_KContext)lua_gettop(L));
}

/* (socket [, opts]) -> true | nil, err */
static int l_starttls(lua_State *L)
{
    struct lsock *k = sock_check(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (!sock_ready(L, k)) {
        push_fail(L, "closed");
        return 2;
    }
    if (k->ssl)
        return luaL_error(L, "TLS is already active on this socket");
    read_tls_opts(L, 2, k, true);
    /* bytes that came before the handshake are not part of the TLS
     * stream; keeping them would let a peer inject cleartext */
    buf_reset(&k->rbuf);
    if (tls_setup(L, k) < 0) {
        sock_shut(k);
        return 2;
    }
    return sock_run(L, k, OP_HANDSHAKE, cont_starttls, (lua_KContext)lua_gettop(L));
}

/* (socket, number) -> () */
static int l_settimeout(lua_State *L)
{
    struct lsock *k = sock_check(L, 1);
    k->timeout = opt_timeout(L, 2, 2);
    return 0;
}

/* (socket) -> true ; idempotent */
static int l_close(lua_State *L)
{
    struct lsock *k = sock_check(L, 1);
    if (k->op != OP_NONE)
        return luaL_error(L, "socket busy (another operation is waiting on it)");
    sock_shut(k);
    lua_pushboolean(L, 1);
    return 1;
}

/* (socket) -> {remote_ip, remote_port, local_ip, local_port, tls} | nil, "closed" */
static int l_info(lua_State *L)
{
    struct lsock *k = sock_check(L, 1);
    if (k->fd < 0) {
        push_fail(L, "closed");
        return 2;
    }
    lua_createtable(L, 0, 5);
    lua_pushstring(L, k->remote_ip);
    lua_setfield(L, -2, "remote_ip");
    lua_pushinteger(L, k->remote_port);
    lua_setfield(L, -2, "remote_port");
    lua_pushstring(L, k->local_ip);
    lua_setfield(L, -2, "local_ip");
    lua_pushinteger(L, k->local_port);
    lua_setfield(L, -2, "local_port");
    if (k->tls_up) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, SSL_get_version(k->ssl));
        lua_setfield(L, -2, "version");
        const char *c = SSL_get_cipher_name(k->ssl);
        lua_pushstring(L, c ? c : "");
        lua_setfield(L, -2, "cipher");
        lua_setfield(L, -2, "tls");
    }
    return 1;
}

/* (socket) -> () ; runs at collection and at lua_close */
static int l_gc(lua_State *L)
{
    struct lsock *k = sock_check(L, 1);
    /* A waiting operation keeps its userdata on the waiting coroutine's
     * stack, and cancel runs before that coroutine is dropped; stopping the
     * watcher here is only a last line of defence. */
    k->op = OP_NONE;
    k->t = NULL;
    sock_shut(k);
    return 0;
}

/* (socket) -> string */
static int l_tostring(lua_State *L)
{
    struct lsock *k = sock_check(L, 1);
    if (k->fd < 0)
        lua_pushliteral(L, "kurir.socket(closed)");
    else if (k->host[0] == '/')
        lua_pushfstring(L, "kurir.socket(unix %s)", k->host);
    else if (strchr(k->host, ':'))
        lua_pushfstring(L, "kurir.socket(%s [%s]:%d)", k->tls_up ? "tls" : "tcp", k->host, k->remote_port);
    else
        lua_pushfstring(L, "kurir.socket(%s %s:%d)", k->tls_up ? "tls" : "tcp", k->host, k->remote_port);
    return 1;
}

static const luaL_Reg socket_methods[] = {
    {"send", l_send},
    {"receive", l_receive},
    {"starttls", l_starttls},
    {"settimeout", l_settimeout},
    {"close", l_close},
    {"info", l_info},
    {NULL, NULL},
};

static const luaL_Reg socket_meta[] = {
    {"__gc", l_gc},
    {"__close", l_close},
    {"__tostring", l_tostring},
    {"__index", NULL},
    {NULL, NULL},
};

void lsocket_register(lua_State *L)
{
    luaL_newmetatable(L, SOCKET_MT);
    luaL_setfuncs(L, socket_meta, 0);
    luaL_newlib(L, socket_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
