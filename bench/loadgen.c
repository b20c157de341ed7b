/* loadgen.c - an SMTP load generator on libev and OpenSSL, cheap enough
 * that the server, not the client, is what it measures.
 *
 * C sessions run at once; each sends transactions (MAIL, RCPT, DATA or
 * BDAT) until the message count (-n) or the time (-t) runs out, and may
 * reconnect after -r messages (-r 1: a new connection per message). With
 * PIPELINING offered, a transaction's commands go out in one write (RFC
 * 2920: MAIL, RCPT, DATA, then the body after 354); -B uses BDAT LAST
 * when CHUNKING is offered, which needs no 354, and -p K sends K whole
 * transactions per write. -p K with DATA sends bodies before the 354
 * (what smtp pipelining benchmarks do; RFC 2920 asks clients to wait,
 * kurir and smtp-sink accept it). TLS: -T starttls, -T smtps; resumption
 * with the server's session tickets unless -R.
 *
 * -i N instead opens N sessions that greet, EHLO and then stay idle until
 * stdin closes or -t passes (memory per idle connection); -b spreads
 * source addresses over 127.0.0.x aliases when one address runs out of
 * ports.
 *
 * One line of key=value results on stdout. Bodies are built once and
 * shared by every session; writes use writev from them (no copies). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

enum tls_mode { TLS_NONE, TLS_STARTTLS, TLS_SMTPS };
enum state { S_GREET, S_EHLO, S_STARTTLS, S_HANDSHAKE, S_EHLO2, S_READY, S_QUIT, S_IDLE };
enum kind { K_MAIL, K_RCPT, K_DATA, K_END, K_QUIT };

struct opts {
    struct sockaddr_in addr;
    int sessions;
    long long messages;
    double seconds;
    size_t size;
    int pipeline;
    int per_conn;
    enum tls_mode tls;
    bool bdat;
    bool resume;
    int idle;
    int nbind;
    struct in_addr bind[64];
};

struct expect {
    uint8_t kind;
    double t0;
};

struct sess {
    int fd;
    SSL *ssl;
    ev_io io;
    ev_timer restart;          /* reconnect from the loop, never inside a callback */
    enum state st;
    bool want_write;
    char rbuf[8192];
    size_t rlen;
    char *arena;               /* command text of the batch being written */
    size_t alen, acap;
    struct iovec *iov;
    int niov, iov_i;
    size_t iov_off;
    struct expect *exp;        /* replies expected, in order */
    int exp_head, exp_n, exp_cap;
    int conn_msgs;             /* messages sent on this connection */
    int batch_left;            /* final replies still due in this batch */
    bool pipelining, chunking, starttls;
    double t_conn;
    struct sess *next_free;
};

static struct opts o;
static struct ev_loop *loop;
static SSL_CTX *ctx;
static SSL_SESSION *resume_session;
static char *body_data, *body_bdat;      /* body + ".\r\n"; body alone */
static size_t body_data_len, body_bdat_len;
static long long started, done, failed_msgs, errors, connects, handshakes, resumed;
static unsigned long long bytes;
static double t_start;
static float *lat;
static long long nlat, lat_cap;
static int active;
static int idle_open, idle_failed;
static unsigned bind_next;
static bool stopping;
static ev_timer deadline;
static ev_io stdin_w;

static void die(const char *m)
{
    fprintf(stderr, "loadgen: %s\n", m);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void start_session(struct sess *s);
static void idle_next(void);
static void close_session(struct sess *s, bool reconnect);
static void io_cb(struct ev_loop *l, ev_io *w, int revents);

static void build_bodies(void)
{
    static const char head[] = "From: <loadgen@example.test>\r\nTo: <sink@example.test>\r\n"
                               "Subject: loadgen\r\nMessage-ID: <loadgen@example.test>\r\n\r\n";
    size_t n = o.size < sizeof(head) ? sizeof(head) - 1 : o.size;
    body_bdat = xmalloc(n + 8);
    memcpy(body_bdat, head, sizeof(head) - 1);
    size_t p = sizeof(head) - 1;
    while (p < n) {
        size_t line = n - p < 78 ? n - p : 78;
        if (line < 2) {
            body_bdat[p++] = 'x';
            continue;
        }
        memset(body_bdat + p, 'x', line - 2);
        body_bdat[p + line - 2] = '\r';
        body_bdat[p + line - 1] = '\n';
        p += line;
    }
    if (body_bdat[n - 1] != '\n') {      /* end on CRLF */
        body_bdat[n - 2] = '\r';
        body_bdat[n - 1] = '\n';
    }
    body_bdat_len = n;
    body_data = xmalloc(n + 8);
    memcpy(body_data, body_bdat, n);
    memcpy(body_data + n, ".\r\n", 3);
    body_data_len = n + 3;
}

/* ---- output --------------------------------------------------------- */

static void arena_reserve(struct sess *s, size_t more)
{
    if (s->alen + more <= s->acap)
        return;
    /* iov entries point into the arena: only grow between batches */
    size_t cap = s->acap ? s->acap : 1024;
    while (cap < s->alen + more)
        cap *= 2;
    char *a = xmalloc(cap);
    if (s->alen)
        memcpy(a, s->arena, s->alen);
    for (int i = 0; i < s->niov; i++) {
        char *b = s->iov[i].iov_base;
        if (b >= s->arena && b < s->arena + s->acap)
            s->iov[i].iov_base = a + (b - s->arena);
    }
    free(s->arena);
    s->arena = a;
    s->acap = cap;
}

static void out_cmd(struct sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_cmd(struct sess *s, const char *fmt, ...)
{
    arena_reserve(s, 256);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->arena + s->alen, 256, fmt, ap);
    va_end(ap);
    /* extend the previous arena segment when it ends here */
    if (s->niov > 0 && (char *)s->iov[s->niov - 1].iov_base + s->iov[s->niov - 1].iov_len == s->arena + s->alen) {
        s->iov[s->niov - 1].iov_len += (size_t)n;
    } else {
        s->iov[s->niov].iov_base = s->arena + s->alen;
        s->iov[s->niov].iov_len = (size_t)n;
        s->niov++;
    }
    s->alen += (size_t)n;
}

static void out_body(struct sess *s, const char *p, size_t n)
{
    s->iov[s->niov].iov_base = (void *)p;
    s->iov[s->niov].iov_len = n;
    s->niov++;
}

static void expect(struct sess *s, enum kind k, double t0)
{
    if (s->exp_n == s->exp_cap) {
        int cap = s->exp_cap * 2;
        struct expect *e = xmalloc((size_t)cap * sizeof(*e));
        for (int i = 0; i < s->exp_n; i++)
            e[i] = s->exp[(s->exp_head + i) % s->exp_cap];
        free(s->exp);
        s->exp = e;
        s->exp_head = 0;
        s->exp_cap = cap;
    }
    struct expect *e = &s->exp[(s->exp_head + s->exp_n++) % s->exp_cap];
    e->kind = (uint8_t)k;
    e->t0 = t0;
}

static void want(struct sess *s, int events)
{
    if (s->io.events == events)
        return;
    ev_io_stop(loop, &s->io);
    ev_io_set(&s->io, s->fd, events);
    ev_io_start(loop, &s->io);
}

/* -1 error, 0 blocked, 1 all written */
static int flush_out(struct sess *s)
{
    while (s->iov_i < s->niov) {
        ssize_t w;
        if (s->ssl) {
            struct iovec *v = &s->iov[s->iov_i];
            /* coalesce small pieces so that TLS records are not tiny */
            int n = SSL_write(s->ssl, (char *)v->iov_base + s->iov_off, (int)(v->iov_len - s->iov_off > 1 << 20 ? 1 << 20 : v->iov_len - s->iov_off));
            if (n <= 0) {
                int e = SSL_get_error(s->ssl, n);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                    return 0;
                return -1;
            }
            w = n;
        } else {
            struct iovec tmp[64];
            int cnt = 0;
            for (int i = s->iov_i; i < s->niov && cnt < 64; i++, cnt++) {
                tmp[cnt] = s->iov[i];
                if (i == s->iov_i) {
                    tmp[cnt].iov_base = (char *)tmp[cnt].iov_base + s->iov_off;
                    tmp[cnt].iov_len -= s->iov_off;
                }
            }
            w = writev(s->fd, tmp, cnt);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return 0;
                return -1;
            }
        }
        size_t left = (size_t)w;
        while (left > 0 && s->iov_i < s->niov) {
            size_t rest = s->iov[s->iov_i].iov_len - s->iov_off;
            if (left >= rest) {
                left -= rest;
                s->iov_i++;
                s->iov_off = 0;
            } else {
                s->iov_off += left;
                left = 0;
            }
        }
    }
    s->niov = s->iov_i = 0;
    s->iov_off = 0;
    s->alen = 0;
    return 1;
}

static void kick_write(struct sess *s)
{
    int r = flush_out(s);
    if (r < 0) {
        errors++;
        close_session(s, true);
        return;
    }
    s->want_write = r == 0;
    want(s, r == 0 ? EV_READ | EV_WRITE : EV_READ);
}

/* ---- transactions ----------------------------------------------------- */

static void send_batch(struct sess *s)
{
    long long left = stopping ? 0 : o.messages - started;
    int k = o.pipeline;
    bool whole = s->chunking && o.bdat;      /* BDAT LAST: no 354 to wait for */
    bool blast = !whole && o.pipeline > 1;   /* DATA bodies sent before the 354 */
    if (!s->pipelining)
        k = 1;
    if (!whole && !blast)
        k = 1;
    if (o.per_conn > 0 && k > o.per_conn - s->conn_msgs)
        k = o.per_conn - s->conn_msgs;
    if (k > left)
        k = (int)left;
    if (k <= 0) {
        out_cmd(s, "QUIT\r\n");
        expect(s, K_QUIT, 0);
        s->st = S_QUIT;
        kick_write(s);
        return;
    }
    /* room for k transactions: the iov array holds 2 pieces each */
    if (s->exp_cap < 8 * k + 8) {
        free(s->exp);
        s->exp_cap = 8 * k + 8;
        s->exp = xmalloc((size_t)s->exp_cap * sizeof(*s->exp));
        s->exp_head = s->exp_n = 0;
    }
    s->iov = realloc(s->iov, (size_t)(4 * k + 8) * sizeof(*s->iov));
    if (!s->iov)
        die("out of memory");
    arena_reserve(s, (size_t)k * 200 + 64);
    double t0 = ev_time();
    for (int i = 0; i < k; i++) {
        out_cmd(s, "MAIL FROM:<loadgen@example.test>\r\n");
        expect(s, K_MAIL, t0);
        if (!s->pipelining) {
            /* one command per round trip: the rest follows the replies */
            s->batch_left = 1;
            started++;
            s->conn_msgs++;
            kick_write(s);
            return;
        }
        out_cmd(s, "RCPT TO:<sink@example.test>\r\n");
        expect(s, K_RCPT, t0);
        if (whole) {
            out_cmd(s, "BDAT %zu LAST\r\n", body_bdat_len);
            out_body(s, body_bdat, body_bdat_len);
            expect(s, K_END, t0);
        } else {
            out_cmd(s, "DATA\r\n");
            expect(s, K_DATA, t0);
            if (blast) {
                out_body(s, body_data, body_data_len);
                expect(s, K_END, t0);
            }
        }
    }
    s->batch_left = k;
    started += k;
    s->conn_msgs += k;
    kick_write(s);
}

static void record_latency(double t0)
{
    if (nlat < lat_cap)
        lat[nlat++] = (float)(ev_time() - t0);
    else if (lat_cap > 0)
        lat[(unsigned long long)done % (unsigned long long)lat_cap] = (float)(ev_time() - t0);
}

static void maybe_finish(void)
{
    if (!stopping && done + failed_msgs >= o.messages) {
        stopping = true;
    }
    if (stopping && active == 0)
        ev_break(loop, EVBREAK_ALL);
}

/* One complete reply with code for session s. */
static void on_reply(struct sess *s, int code, const char *text, size_t tlen)
{
    switch (s->st) {
    case S_GREET:
        if (code != 220)
            goto bad;
        out_cmd(s, "EHLO loadgen.example.test\r\n");
        s->st = S_EHLO;
        kick_write(s);
        return;
    case S_EHLO:
    case S_EHLO2:
        if (code != 250)
            goto bad;
        if (s->st == S_EHLO && o.tls == TLS_STARTTLS) {
            if (!s->starttls)
                die("the server does not offer STARTTLS");
            out_cmd(s, "STARTTLS\r\n");
            s->st = S_STARTTLS;
            kick_write(s);
            return;
        }
        s->st = o.idle ? S_IDLE : S_READY;
        if (o.idle) {
            idle_open++;
            idle_next();
            return;
        }
        send_batch(s);
        return;
    case S_STARTTLS:
        if (code != 220)
            goto bad;
        s->st = S_HANDSHAKE;
        s->ssl = SSL_new(ctx);
        SSL_set_fd(s->ssl, s->fd);
        if (resume_session)
            SSL_set_session(s->ssl, resume_session);
        SSL_set_connect_state(s->ssl);
        want(s, EV_READ | EV_WRITE);
        return;
    case S_QUIT:
        close_session(s, true);
        return;
    case S_READY:
        break;
    default:
        goto bad;
    }
    if (s->exp_n == 0)
        goto bad;
    struct expect e = s->exp[s->exp_head];
    s->exp_head = (s->exp_head + 1) % s->exp_cap;
    s->exp_n--;
    bool ok = (e.kind == K_DATA) ? code == 354 : (code >= 200 && code < 300);
    if (!ok) {
        if (errors < 5)
            fprintf(stderr, "loadgen: unexpected reply %d %.*s\n", code, (int)(tlen > 120 ? 120 : tlen), text);
        errors++;
        failed_msgs += s->batch_left;
        s->batch_left = 0;
        close_session(s, true);
        return;
    }
    if (!s->pipelining) {
        /* lock-step: send the next command */
        if (e.kind == K_MAIL) {
            out_cmd(s, "RCPT TO:<sink@example.test>\r\n");
            expect(s, K_RCPT, e.t0);
        } else if (e.kind == K_RCPT) {
            out_cmd(s, "DATA\r\n");
            expect(s, K_DATA, e.t0);
        }
    }
    if (e.kind == K_DATA && s->exp_n == 0) {
        out_body(s, body_data, body_data_len);
        expect(s, K_END, e.t0);
    }
    if (e.kind == K_END) {
        done++;
        bytes += o.size;
        record_latency(e.t0);
        s->batch_left--;
    }
    if (s->niov > 0) {
        kick_write(s);
        if (s->fd < 0)
            return;
    }
    if (s->exp_n == 0 && s->batch_left == 0) {
        maybe_finish();
        if (stopping) {
            out_cmd(s, "QUIT\r\n");
            expect(s, K_QUIT, 0);
            s->st = S_QUIT;
            kick_write(s);
        } else {
            send_batch(s);
        }
    }
    return;
bad:
    if (errors < 5)
        fprintf(stderr, "loadgen: unexpected reply %d in state %d: %.*s\n", code, s->st,
                (int)(tlen > 120 ? 120 : tlen), text);
    errors++;
    failed_msgs += s->batch_left;
    s->batch_left = 0;
    close_session(s, true);
}

/* ---- input ------------------------------------------------------------ */

static void parse_replies(struct sess *s)
{
    size_t start = 0;
    for (;;) {
        char *nl = memchr(s->rbuf + start, '\n', s->rlen - start);
        if (!nl)
            break;
        size_t len = (size_t)(nl - (s->rbuf + start)) + 1;
        const char *line = s->rbuf + start;
        start += len;
        if (len < 4)
            continue;
        if (s->st == S_EHLO || s->st == S_EHLO2) {
            if (len >= 14 && !strncasecmp(line + 4, "PIPELINING", 10))
                s->pipelining = true;
            if (len >= 12 && !strncasecmp(line + 4, "CHUNKING", 8))
                s->chunking = true;
            if (len >= 12 && !strncasecmp(line + 4, "STARTTLS", 8))
                s->starttls = true;
        }
        if (line[3] == '-')
            continue;
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        on_reply(s, code, line, len);
        if (s->fd < 0)
            return;   /* closed: the session struct was reused */
        if (s->st == S_HANDSHAKE) {
            start = s->rlen;   /* nothing may follow 220 before the handshake */
            break;
        }
    }
    memmove(s->rbuf, s->rbuf + start, s->rlen - start);
    s->rlen -= start;
    if (s->rlen == sizeof(s->rbuf)) {
        errors++;
        close_session(s, true);
    }
}

static void do_handshake(struct sess *s)
{
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        handshakes++;
        if (SSL_session_reused(s->ssl))
            resumed++;
        if (o.tls == TLS_SMTPS) {
            s->st = S_GREET;
        } else {
            s->pipelining = s->chunking = false;
            out_cmd(s, "EHLO loadgen.example.test\r\n");
            s->st = S_EHLO2;
            kick_write(s);
        }
        want(s, s->want_write ? EV_READ | EV_WRITE : EV_READ);
        return;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        want(s, EV_READ);
    } else if (e == SSL_ERROR_WANT_WRITE) {
        want(s, EV_READ | EV_WRITE);
    } else {
        if (errors < 5) {
            char buf[256];
            ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
            fprintf(stderr, "loadgen: TLS handshake failed: %s\n", buf);
        }
        errors++;
        close_session(s, true);
    }
}

static void io_cb(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    struct sess *s = w->data;
    if (s->st == S_HANDSHAKE) {
        do_handshake(s);
        if (s->fd < 0 || s->st == S_HANDSHAKE)
            return;
    }
    if ((revents & EV_WRITE) && s->want_write) {
        kick_write(s);
        if (s->fd < 0)
            return;
    }
    if (!(revents & EV_READ) && !s->ssl)
        return;
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n;
        size_t room = sizeof(s->rbuf) - s->rlen;
        if (s->ssl) {
            int r = SSL_read(s->ssl, s->rbuf + s->rlen, (int)room);
            if (r <= 0) {
                int e = SSL_get_error(s->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return;
                n = 0;
            } else {
                n = r;
            }
        } else {
            n = read(s->fd, s->rbuf + s->rlen, room);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        }
        if (n <= 0) {
            if (s->st != S_QUIT) {
                if (errors < 5)
                    fprintf(stderr, "loadgen: connection closed by the server (state %d)\n", s->st);
                errors++;
                failed_msgs += s->batch_left;
                s->batch_left = 0;
            }
            close_session(s, true);
            return;
        }
        s->rlen += (size_t)n;
        parse_replies(s);
        if (s->fd < 0 || s->st == S_HANDSHAKE)
            return;
        if (!s->ssl && (size_t)n < room)
            return;
        if (s->ssl)
            rounds = 0;   /* TLS: read until SSL wants more from the socket */
    }
}

/* ---- connections ------------------------------------------------------ */

static void close_session(struct sess *s, bool reconnect)
{
    if (s->fd < 0)
        return;
    ev_io_stop(loop, &s->io);
    if (s->ssl) {
        /* close_notify: without it OpenSSL marks the session not resumable */
        if (s->st == S_QUIT)
            SSL_shutdown(s->ssl);
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    close(s->fd);
    s->fd = -1;
    active--;
    if (o.idle && s->st != S_IDLE) {
        idle_failed++;
        idle_next();
    }
    if (errors > 1000 && !stopping) {
        fprintf(stderr, "loadgen: too many errors, stopping\n");
        stopping = true;
    }
    maybe_finish();
    if (reconnect && !stopping && !o.idle && started < o.messages) {
        ev_timer_set(&s->restart, 0, 0);
        ev_timer_start(loop, &s->restart);
    } else if (stopping && active == 0) {
        ev_break(loop, EVBREAK_ALL);
    }
}

/* idle mode opens at most IDLE_BURST sessions at a time, so that the
 * server's accept backlog never overflows */
#define IDLE_BURST 256
static struct sess *idle_sess;
static int idle_started;

static void idle_next(void)
{
    if (idle_sess && idle_started < o.idle && !stopping)
        start_session(&idle_sess[idle_started++]);
}

static void restart_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    struct sess *s = w->data;
    if (!stopping && started < o.messages)
        start_session(s);
    else
        maybe_finish();
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (!o.resume)
        return 0;
    if (resume_session)
        SSL_SESSION_free(resume_session);
    resume_session = sess;
    return 1;   /* we keep the reference */
}

static void start_session(struct sess *s)
{
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        errors++;
        if (o.idle)
            idle_failed++;
        return;
    }
    active++;
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (o.nbind > 0) {
        struct sockaddr_in b = {.sin_family = AF_INET, .sin_addr = o.bind[bind_next++ % (unsigned)o.nbind]};
        setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(s->fd, (struct sockaddr *)&b, sizeof(b)) < 0) {
            errors++;
            close_session(s, false);
            return;
        }
    }
    if (connect(s->fd, (struct sockaddr *)&o.addr, sizeof(o.addr)) < 0 && errno != EINPROGRESS) {
        if (errors < 5)
            fprintf(stderr, "loadgen: connect: %s\n", strerror(errno));
        errors++;
        close_session(s, false);
        return;
    }
    connects++;
    s->rlen = 0;
    s->niov = s->iov_i = 0;
    s->iov_off = 0;
    s->alen = 0;
    s->exp_head = s->exp_n = 0;
    s->conn_msgs = 0;
    s->batch_left = 0;
    s->pipelining = s->chunking = s->starttls = false;
    s->want_write = false;
    s->t_conn = ev_now(loop);
    ev_io_init(&s->io, io_cb, s->fd, EV_READ);
    s->io.data = s;
    if (o.tls == TLS_SMTPS) {
        s->st = S_HANDSHAKE;
        s->ssl = SSL_new(ctx);
        SSL_set_fd(s->ssl, s->fd);
        if (resume_session)
            SSL_set_session(s->ssl, resume_session);
        SSL_set_connect_state(s->ssl);
        ev_io_set(&s->io, s->fd, EV_READ | EV_WRITE);
    } else {
        s->st = S_GREET;
    }
    ev_io_start(loop, &s->io);
}

static void deadline_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    stopping = true;
    ev_break(l, EVBREAK_ALL);
}

static void stdin_cb(struct ev_loop *l, ev_io *w, int revents)
{
    (void)revents;
    char b[256];
    ssize_t n = read(w->fd, b, sizeof(b));
    if (n <= 0) {
        ev_io_stop(l, w);
        stopping = true;
        ev_break(l, EVBREAK_ALL);
    }
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static const char usage[] =
    "usage: loadgen [options] HOST:PORT\n"
    "  -c N      sessions at once (50)\n"
    "  -n N      messages in total (10000)\n"
    "  -t SEC    stop after SEC seconds (60)\n"
    "  -s BYTES  message size; k and m suffixes (1024)\n"
    "  -p K      whole transactions per write (1); with DATA the bodies go before the 354\n"
    "  -r N      messages per connection, then QUIT and reconnect (0 = no limit; 1 = one each)\n"
    "  -B        BDAT LAST when the server offers CHUNKING\n"
    "  -T MODE   starttls or smtps\n"
    "  -R        no TLS session resumption\n"
    "  -i N      N idle sessions (greeting, EHLO, then silence) until stdin closes or -t\n"
    "  -b A,B..  source addresses, used in turn (e.g. 127.0.0.2,127.0.0.3)\n"
    "prints one line: key=value results\n";

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024, end++;
    if (*end || v < 1 || v > 4e9)
        die("bad size");
    return (size_t)v;
}

int main(int argc, char **argv)
{
    o.sessions = 50;
    o.messages = 10000;
    o.seconds = 60;
    o.size = 1024;
    o.pipeline = 1;
    o.resume = true;
    int c;
    while ((c = getopt(argc, argv, "c:n:t:s:p:r:BT:Ri:b:h")) != -1) {
        switch (c) {
        case 'c': o.sessions = atoi(optarg); break;
        case 'n': o.messages = atoll(optarg); break;
        case 't': o.seconds = atof(optarg); break;
        case 's': o.size = parse_size(optarg); break;
        case 'p': o.pipeline = atoi(optarg); break;
        case 'r': o.per_conn = atoi(optarg); break;
        case 'B': o.bdat = true; break;
        case 'R': o.resume = false; break;
        case 'i': o.idle = atoi(optarg); break;
        case 'T':
            if (!strcmp(optarg, "starttls"))
                o.tls = TLS_STARTTLS;
            else if (!strcmp(optarg, "smtps"))
                o.tls = TLS_SMTPS;
            else
                die("-T takes starttls or smtps");
            break;
        case 'b': {
            char *list = strdup(optarg), *save = NULL;
            for (char *t = strtok_r(list, ",", &save); t && o.nbind < 64; t = strtok_r(NULL, ",", &save))
                if (inet_pton(AF_INET, t, &o.bind[o.nbind++]) != 1)
                    die("-b takes IPv4 addresses");
            free(list);
            break;
        }
        default:
            fputs(usage, c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (optind != argc - 1 || o.sessions < 1 || o.messages < 0 || o.seconds <= 0 || o.pipeline < 1 ||
        o.per_conn < 0 || o.idle < 0) {
        fputs(usage, stderr);
        return 2;
    }
    char host[64];
    const char *colon = strrchr(argv[optind], ':');
    if (!colon || (size_t)(colon - argv[optind]) >= sizeof(host))
        die("expected HOST:PORT");
    memcpy(host, argv[optind], (size_t)(colon - argv[optind]));
    host[colon - argv[optind]] = '\0';
    o.addr.sin_family = AF_INET;
    o.addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &o.addr.sin_addr) != 1)
        die("HOST must be an IPv4 address");

    signal(SIGPIPE, SIG_IGN);
    if (o.tls != TLS_NONE) {
        ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    }
    build_bodies();
    loop = ev_default_loop(EVFLAG_AUTO);
    int n = o.idle ? o.idle : o.sessions;
    if (!o.idle && n > o.messages)
        n = (int)(o.messages > 0 ? o.messages : 1);
    struct sess *ss = calloc((size_t)n, sizeof(*ss));
    if (!ss)
        die("out of memory");
    lat_cap = o.idle ? 0 : (o.messages < 2000000 ? o.messages : 2000000);
    lat = xmalloc((size_t)(lat_cap ? lat_cap : 1) * sizeof(float));
    ev_timer_init(&deadline, deadline_cb, o.seconds, 0);
    ev_timer_start(loop, &deadline);
    double cpu0 = cpu_seconds();
    ev_now_update(loop);
    t_start = ev_now(loop);
    for (int i = 0; i < n; i++) {
        ss[i].fd = -1;
        ev_timer_init(&ss[i].restart, restart_cb, 0, 0);
        ss[i].restart.data = &ss[i];
        ss[i].exp_cap = 16;
        ss[i].exp = xmalloc(16 * sizeof(*ss[i].exp));
        ss[i].iov = xmalloc(16 * sizeof(*ss[i].iov));
    }
    if (o.idle) {
        idle_sess = ss;
        for (int i = 0; i < n && i < IDLE_BURST; i++)
            idle_next();
    } else {
        for (int i = 0; i < n; i++)
            start_session(&ss[i]);
    }
    if (o.idle) {
        /* wait until every session is idle (or failed), then say so */
        while (idle_open + idle_failed < o.idle && !stopping)
            ev_run(loop, EVRUN_ONCE);
        printf("ready opened=%d failed=%d\n", idle_open, idle_failed);
        fflush(stdout);
        /* hold them until stdin closes (or -t) */
        ev_io_init(&stdin_w, stdin_cb, 0, EV_READ);
        ev_io_start(loop, &stdin_w);
        if (!stopping)
            ev_run(loop, 0);
        for (int i = 0; i < n; i++)
            if (ss[i].fd >= 0)
                close(ss[i].fd);
        return 0;
    }
    if (active > 0)
        ev_run(loop, 0);
    ev_now_update(loop);
    double secs = ev_now(loop) - t_start;
    double cpu = cpu_seconds() - cpu0;
    for (int i = 0; i < n; i++)
        if (ss[i].fd >= 0) {
            if (ss[i].ssl)
                SSL_free(ss[i].ssl);
            close(ss[i].fd);
        }
    long long m = nlat < lat_cap ? nlat : lat_cap;
    qsort(lat, (size_t)m, sizeof(float), cmp_float);
    double p50 = m ? lat[m / 2] : 0, p99 = m ? lat[(long long)((double)m * 0.99) < m ? (long long)((double)m * 0.99) : m - 1] : 0;
    printf("messages=%lld failed=%lld errors=%lld seconds=%.3f msgs_per_s=%.0f mb_per_s=%.2f connections=%lld "
           "conns_per_s=%.0f handshakes=%lld resumed=%lld handshakes_per_s=%.0f p50_ms=%.3f p99_ms=%.3f "
           "client_cpu_s=%.3f client_cpu_us_per_msg=%.2f\n",
           done, failed_msgs, errors, secs, secs > 0 ? (double)done / secs : 0,
           secs > 0 ? (double)bytes / secs / 1e6 : 0, connects, secs > 0 ? (double)connects / secs : 0,
           handshakes, resumed, secs > 0 ? (double)handshakes / secs : 0, p50 * 1000, p99 * 1000, cpu,
           done ? cpu / (double)done * 1e6 : 0);
    return done == o.messages && errors == 0 ? 0 : 1;
}
