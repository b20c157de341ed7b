/* http.c - HTTP listeners on the server's event loop. libmicrohttpd parses
 * HTTP (no hand-written parser here); it runs in external-select epoll
 * mode: one ev_io watches MHD's epoll descriptor, one ev_timer follows
 * MHD_get_timeout, and an ev_prepare runs MHD again in the same loop turn
 * after a request was answered from elsewhere (e.g. the data hook that
 * stored the message a wait-for-message request waits for). No thread,
 * no polling: a request that is not answered at once is a suspended MHD
 * connection plus, optionally, one ev_timer (its deadline).
 * Owns the daemons (a list on the server) and the requests; a request
 * holds a reference on the engine whose Lua handler saw it. */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/logfmt.h"
#include "lua/engine.h"
#include "net/worker.h"

#define HTTP_BODY_MAX (1024 * 1024)        /* request bodies (JSON) */
#define HTTP_STREAM_MAX (1024 * 1024)      /* unsent stream bytes before a slow reader is cut */
#define HTTP_CONN_MAX 30000
#define HTTP_CONN_MEMORY (16 * 1024)       /* per connection: request line and headers must fit */
#define HTTP_IDLE_TIMEOUT 60               /* seconds without progress (slow clients) */
#define HTTP_PING_INTERVAL 15.0            /* SSE comment lines keep proxies and dead peers honest */

struct http_daemon {
    struct MHD_Daemon *d;
    struct worker *w;
    ev_io io;
    ev_timer tm;
    ev_prepare prep;
    bool need_run;
    struct http_req *reqs;
    struct http_daemon *next;
};

enum req_state { REQ_READING, REQ_HANDLED, REQ_QUEUED };

struct http_req {
    struct http_daemon *hd;
    struct MHD_Connection *c;
    struct engine *eng;
    char *method, *path;
    struct buf body;
    bool too_large;
    enum req_state state;
    bool suspended;
    bool in_handler;
    struct MHD_Response *resp;     /* set once answered, until queued */
    int status;
    bool streaming, stream_end;
    struct buf out;                /* stream bytes not yet handed to MHD */
    ev_timer deadline;
    int dl_status;
    char *dl_headers;
    struct buf dl_body;
    ev_timer ping;
    int lua_ref;
    struct http_req *prev, *next;
};

static void hd_schedule(struct http_daemon *hd)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    ev_timer_stop(hd->w->loop, &hd->tm);
    if (MHD_get_timeout(hd->d, &ms) == MHD_YES) {
        ev_timer_set(&hd->tm, (double)ms / 1000.0, 0);
        ev_timer_start(hd->w->loop, &hd->tm);
    }
}

static void hd_run(struct http_daemon *hd)
{
    hd->need_run = false;
    MHD_run(hd->d);
    hd_schedule(hd);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hd_run(w->data);
}

static void tm_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hd_run(w->data);
}

static void prep_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct http_daemon *hd = w->data;
    if (hd->need_run)
        hd_run(hd);
}

static void req_wake(struct http_req *r)
{
    if (r->suspended && r->c) {
        r->suspended = false;
        MHD_resume_connection(r->c);
    }
    r->hd->need_run = true;
}

static int add_headers(struct MHD_Response *resp, const char *headers)
{
    /* "Name: value\n" lines; MHD refuses CR/LF inside names and values */
    char *copy = xstrdup(headers ? headers : "");
    int rc = 0;
    for (char *line = copy, *nl; line && *line; line = nl) {
        nl = strchr(line, '\n');
        if (nl)
            *nl++ = '\0';
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ')
            v++;
        if (MHD_add_response_header(resp, line, v) != MHD_YES)
            rc = -1;
    }
    free(copy);
    return rc;
}

int http_req_respond(struct http_req *r, int status, const char *headers, const char *body, size_t len)
{
    if (r->state == REQ_QUEUED || r->resp || r->streaming || !r->c)
        return -1;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return -1;
    add_headers(resp, headers);
    r->resp = resp;
    r->status = status;
    ev_timer_stop(r->hd->w->loop, &r->deadline);
    if (!r->in_handler)
        req_wake(r);
    return 0;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct http_req *r = cls;
    size_t n = buf_used(&r->out);
    if (n == 0) {
        if (r->stream_end)
            return MHD_CONTENT_READER_END_OF_STREAM;
        /* nothing to send: leave the loop alone until http_req_send */
        r->suspended = true;
        MHD_suspend_connection(r->c);
        return 0;
    }
    if (n > max)
        n = max;
    memcpy(out, buf_peek(&r->out), n);
    buf_consume(&r->out, n);
    if (buf_used(&r->out) == 0)
        buf_reset(&r->out);
    return (ssize_t)n;
}

static void ping_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct http_req *r = w->data;
    http_req_send(r, ": ping\n\n", 8);
}

int http_req_stream(struct http_req *r, int status, const char *headers)
{
    if (r->state == REQ_QUEUED || r->resp || r->streaming || !r->c)
        return -1;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                  stream_reader, r, NULL);
    if (!resp)
        return -1;
    add_headers(resp, headers);
    r->resp = resp;
    r->status = status;
    r->streaming = true;
    ev_timer_stop(r->hd->w->loop, &r->deadline);
    ev_timer_init(&r->ping, ping_cb, HTTP_PING_INTERVAL, HTTP_PING_INTERVAL);
    r->ping.data = r;
    ev_timer_start(r->hd->w->loop, &r->ping);
    if (!r->in_handler)
        req_wake(r);
    return 0;
}

int http_req_send(struct http_req *r, const char *data, size_t len)
{
    if (!r->streaming || r->stream_end || !r->c)
        return -1;
    if (buf_used(&r->out) + len > HTTP_STREAM_MAX) {
        /* a reader this slow only costs memory: end its stream */
        r->stream_end = true;
        buf_reset(&r->out);
        req_wake(r);
        return -1;
    }
    buf_append(&r->out, data, len);
    req_wake(r);
    return 0;
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct http_req *r = w->data;
    http_req_respond(r, r->dl_status, r->dl_headers, buf_peek(&r->dl_body), buf_used(&r->dl_body));
}

void http_req_deadline(struct http_req *r, double seconds, int status, const char *headers,
                       const char *body, size_t len)
{
    ev_timer_stop(r->hd->w->loop, &r->deadline);
    r->dl_status = status;
    free(r->dl_headers);
    r->dl_headers = xstrdup(headers ? headers : "");
    buf_reset(&r->dl_body);
    buf_append(&r->dl_body, body, len);
    ev_timer_set(&r->deadline, seconds < 0 ? 0 : seconds, 0);
    ev_timer_start(r->hd->w->loop, &r->deadline);
}

const char *http_req_method(const struct http_req *r) { return r->method; }
const char *http_req_path(const struct http_req *r) { return r->path; }

const char *http_req_body(const struct http_req *r, size_t *len)
{
    *len = buf_used(&r->body);
    return *len ? buf_peek(&r->body) : "";
}

const char *http_req_header(const struct http_req *r, const char *name)
{
    return r->c ? MHD_lookup_connection_value(r->c, MHD_HEADER_KIND, name) : NULL;
}

struct each_ctx {
    void (*fn)(void *, const char *, const char *);
    void *ctx;
};

static enum MHD_Result each_arg(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    (void)kind;
    struct each_ctx *e = cls;
    e->fn(e->ctx, k, v ? v : "");
    return MHD_YES;
}

void http_req_each_arg(const struct http_req *r, void (*fn)(void *, const char *, const char *), void *ctx)
{
    if (!r->c)
        return;
    struct each_ctx e = { fn, ctx };
    MHD_get_connection_values(r->c, MHD_GET_ARGUMENT_KIND, each_arg, &e);
}

bool http_req_answered(const struct http_req *r)
{
    if (!r->c)
        return true;
    if (r->streaming)
        return r->stream_end;
    return r->resp || r->state == REQ_QUEUED;
}

void http_req_set_lua(struct http_req *r, int ref)
{
    r->lua_ref = ref;
}

static void plain(struct http_req *r, int status, const char *text)
{
    char h[] = "Content-Type: text/plain; charset=utf-8\n";
    http_req_respond(r, status, h, text, strlen(text));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    struct http_daemon *hd = cls;
    struct http_req *r = *con_cls;
    if (!r) {
        r = xcalloc(1, sizeof(*r));
        r->hd = hd;
        r->c = c;
        r->method = xstrdup(method);
        r->path = xstrdup(url);
        r->lua_ref = -2;   /* LUA_NOREF */
        buf_init(&r->body);
        buf_init(&r->out);
        buf_init(&r->dl_body);
        ev_timer_init(&r->deadline, deadline_cb, 0, 0);
        r->deadline.data = r;
        ev_timer_init(&r->ping, ping_cb, 0, 0);
        r->next = hd->reqs;
        if (hd->reqs)
            hd->reqs->prev = r;
        hd->reqs = r;
        *con_cls = r;
        return MHD_YES;
    }
    if (r->state == REQ_READING) {
        if (*upload_size) {
            if (buf_used(&r->body) + *upload_size > HTTP_BODY_MAX)
                r->too_large = true;
            else
                buf_append(&r->body, upload, *upload_size);
            *upload_size = 0;
            return MHD_YES;
        }
        r->state = REQ_HANDLED;
        r->in_handler = true;
        if (r->too_large) {
            plain(r, 413, "request body too large\n");
        } else {
            struct engine *e = hd->w->eng;
            engine_ref(e);
            r->eng = e;
            lua_http_handle(e, r);
        }
        r->in_handler = false;
    }
    if (r->resp && r->state != REQ_QUEUED) {
        r->state = REQ_QUEUED;
        enum MHD_Result rc = MHD_queue_response(c, (unsigned)r->status, r->resp);
        MHD_destroy_response(r->resp);
        r->resp = NULL;
        return rc;
    }
    if (r->state == REQ_QUEUED)
        return MHD_YES;
    /* answered later: by Lua (req:respond) or at the deadline */
    r->suspended = true;
    MHD_suspend_connection(c);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    struct http_daemon *hd = cls;
    struct http_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    r->c = NULL;
    ev_timer_stop(hd->w->loop, &r->deadline);
    ev_timer_stop(hd->w->loop, &r->ping);
    if (r->prev)
        r->prev->next = r->next;
    else
        hd->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->resp)
        MHD_destroy_response(r->resp);
    if (r->eng) {
        lua_http_closed(r->eng, r, r->lua_ref);
        engine_unref(r->eng);
    }
    free(r->method);
    free(r->path);
    free(r->dl_headers);
    buf_free(&r->body);
    buf_free(&r->out);
    buf_free(&r->dl_body);
    free(r);
}

static void on_log(void *cls, const char *fmt, va_list ap)
{
    struct http_daemon *hd = cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    buf_reset(&hd->w->log);
    logfmt_begin(&hd->w->log, "warn", NULL, "http_error");
    logfmt_str(&hd->w->log, "error", msg);
    worker_log_end(hd->w);
}

int http_listen(struct worker *w, struct http_daemon **list, int fd, const char *name)
{
    struct sockaddr_storage ss;
    socklen_t slen = sizeof(ss);
    bool v6 = getsockname(fd, (struct sockaddr *)&ss, &slen) == 0 && ss.ss_family == AF_INET6;
    struct http_daemon *hd = xcalloc(1, sizeof(*hd));
    hd->w = w;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    hd->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, hd,
                             MHD_OPTION_EXTERNAL_LOGGER, on_log, hd,
                             MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, hd,
                             MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONN_MAX,
                             MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT,
                             MHD_OPTION_END);
    if (!hd->d) {
        fprintf(stderr, "kurir: cannot start the HTTP server on %s\n", name);
        free(hd);
        close(fd);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(hd->d, MHD_DAEMON_INFO_EPOLL_FD);
    ev_io_init(&hd->io, io_cb, info->epoll_fd, EV_READ);
    hd->io.data = hd;
    ev_io_start(w->loop, &hd->io);
    ev_timer_init(&hd->tm, tm_cb, 0, 0);
    hd->tm.data = hd;
    ev_prepare_init(&hd->prep, prep_cb);
    hd->prep.data = hd;
    ev_prepare_start(w->loop, &hd->prep);
    ev_unref(w->loop);
    hd->next = *list;
    *list = hd;
    hd_schedule(hd);
    return 0;
}

void http_stop_all(struct worker *w, struct http_daemon **list)
{
    struct http_daemon *hd = *list;
    while (hd) {
        for (struct http_req *r = hd->reqs; r; r = r->next) {
            if (r->streaming) {
                r->stream_end = true;
                req_wake(r);
            } else if (!r->resp && r->state != REQ_QUEUED) {
                plain(r, 503, "server shutting down\n");
            }
            req_wake(r);
        }
        MHD_run(hd->d);   /* moves resumed connections out of the suspended list */
        ev_io_stop(w->loop, &hd->io);
        ev_timer_stop(w->loop, &hd->tm);
        ev_ref(w->loop);
        ev_prepare_stop(w->loop, &hd->prep);
        MHD_stop_daemon(hd->d);
        struct http_daemon *next = hd->next;
        free(hd);
        hd = next;
    }
    *list = NULL;
}
