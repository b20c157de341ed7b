/* queue_ctl.c - the control socket of a running queue: a Unix socket
 * queue.dir/control, mode 0600, and a peer check (SO_PEERCRED: the same
 * user as the server, or root). One request line "verb id\n", one reply
 * line "code text\n". Requests are tiny; each client gets a read watcher
 * and at most 1 KiB. */
#include "queue/queue_ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto/logfmt.h"
#include "queue/queue.h"
#include "lua/engine.h"
#include "net/worker.h"

struct ctl_client {
    struct queue *q;
    ev_io w;
    char line[1024];
    size_t len;
};

static int ctl_path(const char *dir, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/control", dir) >= (int)sizeof(sa->sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static void client_end(struct ctl_client *c)
{
    ev_io_stop(c->q->w->loop, &c->w);
    close(c->w.fd);
    free(c);
}

static void client_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct ctl_client *c = w->data;
    ssize_t n = read(w->fd, c->line + c->len, sizeof(c->line) - 1 - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        client_end(c);
        return;
    }
    c->len += (size_t)n;
    c->line[c->len] = '\0';
    char *nl = strchr(c->line, '\n');
    if (!nl) {
        if (c->len >= sizeof(c->line) - 1)
            client_end(c);
        return;
    }
    *nl = '\0';
    char *id = strchr(c->line, ' ');
    if (id)
        *id++ = '\0';
    struct buf reply;
    buf_init(&reply);
    int code = queue_control(c->q, c->line, id, &reply);
    struct buf *b = &c->q->w->log;
    buf_reset(b);
    logfmt_begin(b, "info", NULL, "queue_control");
    logfmt_str(b, "command", c->line);
    logfmt_str(b, "id", id ? id : "");
    logfmt_int(b, "result", code);
    worker_log_end(c->q->w);
    char out[1200];
    int len = snprintf(out, sizeof(out), "%d %.*s\n", code, (int)buf_used(&reply), buf_peek(&reply));
    if (len > 0 && write(w->fd, out, (size_t)len) < 0) {
        /* the client went away; nothing to tell */
    }
    buf_free(&reply);
    client_end(c);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct queue *q = w->data;
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct ucred cr;
    socklen_t l = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0 || (cr.uid != getuid() && cr.uid != 0)) {
        static const char no[] = "2 permission denied\n";
        if (write(fd, no, sizeof(no) - 1) < 0) {
            /* nothing to do */
        }
        close(fd);
        return;
    }
    struct ctl_client *c = xcalloc(1, sizeof(*c));
    c->q = q;
    ev_io_init(&c->w, client_cb, fd, EV_READ);
    c->w.data = c;
    ev_io_start(loop, &c->w);
}

void queue_ctl_open(struct queue *q)
{
    struct sockaddr_un sa;
    if (ctl_path(q->store.dir, &sa) < 0)
        return;
    unlink(sa.sun_path);   /* we hold the queue lock: a socket there is stale */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    mode_t old = umask(077);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || listen(fd, 16) < 0) {
        struct buf *b = &q->w->log;
        buf_reset(b);
        logfmt_begin(b, "warn", NULL, "queue_control_unavailable");
        logfmt_str(b, "path", sa.sun_path);
        logfmt_str(b, "error", strerror(errno));
        worker_log_end(q->w);
        close(fd);
        return;
    }
    q->ctlfd = fd;
    ev_io_init(&q->ctl, accept_cb, fd, EV_READ);
    q->ctl.data = q;
    ev_io_start(q->w->loop, &q->ctl);
    ev_unref(q->w->loop);
}

void queue_ctl_close(struct queue *q)
{
    if (q->ctlfd < 0)
        return;
    ev_ref(q->w->loop);
    ev_io_stop(q->w->loop, &q->ctl);
    close(q->ctlfd);
    q->ctlfd = -1;
    struct sockaddr_un sa;
    if (ctl_path(q->store.dir, &sa) == 0)
        unlink(sa.sun_path);
}

int queue_ctl_request(const char *dir, const char *verb, const char *id, char *reply, size_t cap)
{
    struct sockaddr_un sa;
    if (ctl_path(dir, &sa) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char line[512];
    int n = snprintf(line, sizeof(line), "%s %s\n", verb, id ? id : "");
    if (n < 0 || n >= (int)sizeof(line) || write(fd, line, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    char buf[1200];
    for (;;) {
        ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got >= sizeof(buf) - 1)
            break;
    }
    close(fd);
    buf[got] = '\0';
    if (got == 0)
        return -1;
    char *sp = strchr(buf, ' ');
    char *nl = strchr(buf, '\n');
    if (nl)
        *nl = '\0';
    snprintf(reply, cap, "%s", sp ? sp + 1 : "");
    return atoi(buf);
}
