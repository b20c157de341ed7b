/* conn.h - one client connection: socket, transport (plain or TLS), libev
 * watchers embedded in the struct, output queue, backpressure, deferred
 * close. The SMTP layer (session.c) sits on top and never touches the fd.
 *
 * Ownership: the session embeds a struct conn. conn never frees memory of
 * its owner; when the connection is finished it calls ops->closed() once,
 * from a safe point (never inside another callback of the same conn).
 * The owner uses a conn only through the functions below: it may read the
 * fields (addresses, closing, closed), never set them nor write into out. */
#ifndef KURIR_CONN_H
#define KURIR_CONN_H

#include <ev.h>
#include <stdbool.h>
#include <sys/types.h>
#include <sys/socket.h>
#include "proto/util.h"

struct conn;

/* Transport results */
#define CONN_AGAIN  (-2)   /* would block; see conn.want_* */
#define CONN_ERROR  (-1)

struct conn_transport {
    const char *name;                                         /* "plain", "tls" */
    /* >0 bytes, 0 orderly EOF, CONN_ERROR, CONN_AGAIN */
    ssize_t (*read)(struct conn *c, void *buf, size_t n);
    ssize_t (*write)(struct conn *c, const void *buf, size_t n);
    /* 1 done, 0 in progress (want_read/want_write say what for), -1 failed */
    int (*handshake)(struct conn *c);
    /* bytes decrypted and buffered inside the transport (SSL_pending) */
    size_t (*pending)(struct conn *c);
    /* release transport state (SSL_free); the fd is closed by conn */
    void (*shutdown)(struct conn *c);
};

extern const struct conn_transport conn_plain_transport;

struct conn_ops {
    /* Bytes may be read now: call conn_read() until it returns <= 0. */
    void (*readable)(struct conn *c);
    /* Output queue drained below the low-water mark (resume reading). */
    void (*drained)(struct conn *c);
    /* TLS handshake finished (ok = true) or failed (ok = false). */
    void (*handshake_done)(struct conn *c, bool ok);
    /* The connection is closed; the owner may free it now. Called once. */
    void (*closed)(struct conn *c);
};

struct conn {
    struct ev_loop *loop;
    int fd;
    ev_io rio, wio;
    ev_idle closer;                 /* deferred close runs from here */
    const struct conn_transport *tr;
    void *tls;                      /* struct tls_conn * (tls.c) while the TLS transport is active */
    const struct conn_ops *ops;
    struct buf out;                 /* replies waiting to be written */
    size_t out_high;                /* stop reading above this many queued bytes */
    bool reading;                   /* owner wants input */
    bool want_read;                 /* transport needs the socket readable */
    bool want_write;                /* transport needs the socket writable */
    bool read_wants_write;          /* the last read is blocked until writable */
    bool handshaking;
    bool closing;                   /* close requested; flush first if flush_on_close */
    bool flush_on_close;
    bool closed;
    bool eof;                       /* peer closed its side (or conn_abort) */
    bool pending_flush;             /* on the worker's pending-writes list (worker.c) */
    struct conn *next_pending;
    struct sockaddr_storage peer, local;
    char peer_ip[64], local_ip[64];
    int peer_port, local_port;
};

/* peer: the address accept() returned; local: the address the connection
 * came to when the caller knows it (a listener bound to one address), or
 * NULL to ask the fd (getsockname: a wildcard listener) */
void conn_init(struct conn *c, struct ev_loop *loop, int fd, const struct conn_ops *ops,
               const struct sockaddr_storage *peer, const struct sockaddr_storage *local);
/* IP text and port of an IPv4/IPv6 address ("" and 0 for other families) */
void conn_addr_text(const struct sockaddr_storage *ss, char *ip, size_t cap, int *port);

/* Start / stop wanting input (backpressure and waiting hooks use this). */
void conn_set_reading(struct conn *c, bool on);

/* >0 bytes, 0 EOF, CONN_ERROR, CONN_AGAIN (no data now) */
ssize_t conn_read(struct conn *c, void *buf, size_t n);

/* Queue n bytes for the peer (written by conn_flush; dropped once the conn
 * is closed). */
void conn_write(struct conn *c, const void *p, size_t n);
/* The queued bytes from offset at (an earlier conn_queued()) to the end:
 * what was queued since. */
const char *conn_queued_since(const struct conn *c, size_t at, size_t *len);
/* the peer closed its sending side (or the conn was aborted) */
bool conn_eof(const struct conn *c);

/* Try to write the queue now. Returns 0, or -1 when the connection failed
 * (a close is then scheduled). */
int conn_flush(struct conn *c);
size_t conn_queued(const struct conn *c);

/* Switch to another transport and start its handshake (STARTTLS, implicit
 * TLS). ops->handshake_done reports the result. */
void conn_start_handshake(struct conn *c, const struct conn_transport *tr, void *state);

/* Schedule a close: with flush = true queued output is written first
 * (bounded by the caller's timeout). Safe to call from any callback. */
void conn_close(struct conn *c, bool flush);
/* End the connection now as if the peer had gone: nothing more is read,
 * queued output is not waited for (TLS failure, timeout, s:drop()). */
void conn_abort(struct conn *c);

#endif
