/* conn.c - the connection layer under an SMTP session: a non-blocking
 * socket, a transport (plain here, TLS in tls.c) behind a vtable, the ev_io
 * watchers embedded in struct conn, an output queue with backpressure, and
 * deferred close.
 *
 * Watcher policy: the read watcher runs while the owner wants input (or the
 * transport needs readability to finish a write or handshake); the write
 * watcher runs while output is queued (or the transport needs writability
 * to finish a read or handshake). Close is deferred to an ev_idle so that a
 * conn is never torn down inside one of its own callbacks. */
#include "net/conn.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "proto/addr_text.h"

#define CONN_CHUNK (64 * 1024)

static ssize_t plain_read(struct conn *c, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = read(c->fd, buf, n);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->want_read = true;
            return CONN_AGAIN;
        }
        return CONN_ERROR;
    }
}

static ssize_t plain_write(struct conn *c, const void *buf, size_t n)
{
    for (;;) {
        ssize_t r = write(c->fd, buf, n);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->want_write = true;
            return CONN_AGAIN;
        }
        return CONN_ERROR;
    }
}

static int plain_handshake(struct conn *c)
{
    (void)c;
    return 1;
}

static size_t plain_pending(struct conn *c)
{
    (void)c;
    return 0;
}

static void plain_shutdown(struct conn *c)
{
    (void)c;
}

const struct conn_transport conn_plain_transport = {
    "plain", plain_read, plain_write, plain_handshake, plain_pending, plain_shutdown,
};

static void conn_update(struct conn *c);
static void conn_finish(struct conn *c);

static void closer_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    if (c->flush_on_close && conn_queued(c)) {
        /* Wait for the write watcher to drain the queue; conn_flush
         * reschedules us once it is empty or failed. */
        ev_idle_stop(c->loop, &c->closer);
        conn_update(c);
        return;
    }
    conn_finish(c);
}

static void handshake_step(struct conn *c)
{
    c->want_read = c->want_write = false;
    int r = c->tr->handshake(c);
    if (r == 0) {
        conn_update(c);
        return;
    }
    c->handshaking = false;
    conn_update(c);
    c->ops->handshake_done(c, r == 1);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    if (c->closed)
        return;
    if (c->handshaking) {
        handshake_step(c);
        return;
    }
    if (w == &c->wio || (c->want_write && w == &c->rio)) {
        if (conn_queued(c))
            conn_flush(c);
    }
    if (c->closing || c->closed)
        return;
    /* read on read events, or on write events when TLS needs to write
     * before it can read; never while the client is behind on replies */
    if (c->reading && (w == &c->rio || c->read_wants_write) && conn_queued(c) < c->out_high)
        c->ops->readable(c);
    conn_update(c);
}

void conn_addr_text(const struct sockaddr_storage *ss, char *ip, size_t cap, int *port)
{
    if (cap >= ADDR_TEXT_MAX) {
        addr_text_sockaddr(ss, ip, port);
        return;
    }
    char text[ADDR_TEXT_MAX];
    size_t n = addr_text_sockaddr(ss, text, port);
    if (!cap)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(ip, text, n);
    ip[n] = '\0';
}

void conn_init(struct conn *c, struct ev_loop *loop, int fd, const struct conn_ops *ops,
               const struct sockaddr_storage *peer, const struct sockaddr_storage *local)
{
    memset(c, 0, sizeof(*c));
    c->peer = *peer;
    conn_addr_text(&c->peer, c->peer_ip, sizeof(c->peer_ip), &c->peer_port);
    socklen_t l = sizeof(c->local);
    if (local) {
        c->local = *local;
        conn_addr_text(&c->local, c->local_ip, sizeof(c->local_ip), &c->local_port);
    } else if (getsockname(fd, (struct sockaddr *)&c->local, &l) == 0) {
        conn_addr_text(&c->local, c->local_ip, sizeof(c->local_ip), &c->local_port);
    }
    c->loop = loop;
    c->fd = fd;
    c->ops = ops;
    c->tr = &conn_plain_transport;
    c->out_high = 256 * 1024;
    buf_init(&c->out);
    ev_io_init(&c->rio, io_cb, fd, EV_READ);
    ev_io_init(&c->wio, io_cb, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    ev_idle_init(&c->closer, closer_cb);
    c->closer.data = c;
}

/* Start or stop watchers to match what the conn needs right now. */
static void conn_update(struct conn *c)
{
    if (c->closed)
        return;
    bool want_r, want_w;
    if (c->handshaking) {
        want_r = c->want_read;
        want_w = c->want_write;
    } else {
        bool backlog = conn_queued(c) >= c->out_high;
        want_r = (c->reading && !backlog && !c->closing && !c->eof) || c->want_read;
        want_w = conn_queued(c) > 0 || c->want_write || c->read_wants_write;
    }
    if (want_r && !ev_is_active(&c->rio))
        ev_io_start(c->loop, &c->rio);
    else if (!want_r && ev_is_active(&c->rio))
        ev_io_stop(c->loop, &c->rio);
    /* bytes already decrypted inside the transport will not make the socket
     * readable again: deliver a read event for them */
    if (want_r && !c->handshaking && c->reading && c->tr->pending(c) > 0)
        ev_feed_event(c->loop, &c->rio, EV_READ);
    if (want_w && !ev_is_active(&c->wio))
        ev_io_start(c->loop, &c->wio);
    else if (!want_w && ev_is_active(&c->wio))
        ev_io_stop(c->loop, &c->wio);
}

void conn_set_reading(struct conn *c, bool on)
{
    c->reading = on;
    conn_update(c);
}

ssize_t conn_read(struct conn *c, void *buf, size_t n)
{
    if (c->closed || c->closing || c->eof)
        return 0;
    c->want_read = c->want_write = false;
    ssize_t r = c->tr->read(c, buf, n);
    c->read_wants_write = r == CONN_AGAIN && c->want_write;
    if (r == 0)
        c->eof = true;
    return r;
}

size_t conn_queued(const struct conn *c)
{
    return buf_used(&c->out);
}

void conn_write(struct conn *c, const void *p, size_t n)
{
    if (c->closed)
        return;
    buf_append(&c->out, p, n);
}

const char *conn_queued_since(const struct conn *c, size_t at, size_t *len)
{
    size_t used = buf_used(&c->out);
    if (at > used)
        at = used;
    *len = used - at;
    return buf_peek(&c->out) + at;
}

bool conn_eof(const struct conn *c)
{
    return c->eof;
}

int conn_flush(struct conn *c)
{
    if (c->closed || c->handshaking)
        return 0;
    size_t before = conn_queued(c);
    while (conn_queued(c)) {
        size_t n = conn_queued(c);
        if (n > CONN_CHUNK && c->tls)
            n = CONN_CHUNK;
        c->want_read = c->want_write = false;
        ssize_t w = c->tr->write(c, buf_peek(&c->out), n);
        if (w == CONN_AGAIN)
            break;
        if (w <= 0) {
            buf_reset(&c->out);
            c->eof = true;
            conn_close(c, false);
            return -1;
        }
        buf_consume(&c->out, (size_t)w);
    }
    if (!conn_queued(c)) {
        buf_shrink(&c->out, 16 * 1024);
        if (c->closing && !ev_is_active(&c->closer))
            ev_idle_start(c->loop, &c->closer);
    }
    conn_update(c);
    if (before >= c->out_high && conn_queued(c) < c->out_high / 2 && !c->closing && c->ops->drained)
        c->ops->drained(c);
    return 0;
}

void conn_start_handshake(struct conn *c, const struct conn_transport *tr, void *state)
{
    c->tr = tr;
    c->tls = state;
    c->handshaking = true;
    c->want_read = true;
    c->want_write = false;
    conn_update(c);
    handshake_step(c);
}

void conn_close(struct conn *c, bool flush)
{
    if (c->closed)
        return;
    if (c->closing) {
        if (!flush)
            c->flush_on_close = false;
    } else {
        c->closing = true;
        c->flush_on_close = flush;
    }
    if (!c->flush_on_close || !conn_queued(c)) {
        if (!ev_is_active(&c->closer))
            ev_idle_start(c->loop, &c->closer);
    } else {
        conn_flush(c);
    }
    conn_update(c);
}

void conn_abort(struct conn *c)
{
    c->eof = true;
    conn_close(c, false);
}

static void conn_finish(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_idle_stop(c->loop, &c->closer);
    c->tr->shutdown(c);
    c->tr = &conn_plain_transport;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    buf_free(&c->out);
    c->ops->closed(c);
}
