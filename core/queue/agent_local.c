/* agent_local.c - the local delivery agents of the queue: discard, Maildir
 * and mbox. Maildir and mbox write and fsync on a queue_store thread, never
 * in the event loop. Both are idempotent: the Maildir file name is the
 * queue id plus the recipient's index; an mbox append is recorded in the
 * status log (offset, length) before it starts, and a redelivery after a
 * crash finds a whole copy there (and does nothing) or cuts a torn one off. The template's %{...} values are made safe by queue_expand,
 * so a recipient cannot leave the configured directory. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sys/maildir.h"
#include "queue/queue.h"


void agent_discard_start(struct delivery *d)
{
    d->result = 0;
    snprintf(d->code, sizeof(d->code), "2.0.0");
    buf_appends(&d->diag, "discarded");
    queue_delivery_done(d);
}

struct local_job {
    struct delivery *d;
    char *path;              /* expanded Maildir directory or mbox file */
    char name[64];           /* Maildir file name / mbox delivery tag */
    struct buf prefix;       /* Return-Path, Delivered-To */
    char *from;
    int fd;                  /* the queue file */
    uint64_t off;
    int idx;
    bool begun;              /* mbox: an append began before (st/ID) */
    uint64_t begun_off, begun_len;
};

static void local_done(struct qjob *j)
{
    struct local_job *lj = j->data;
    struct delivery *d = lj->d;
    if (j->err) {
        d->result = 1;
        snprintf(d->code, sizeof(d->code), "4.2.0");
        buf_appends(&d->diag, j->errtext);
    } else {
        d->result = 0;
        snprintf(d->code, sizeof(d->code), "2.0.0");
        buf_appends(&d->diag, lj->path);
    }
    if (lj->fd >= 0)
        close(lj->fd);
    free(lj->path);
    free(lj->from);
    buf_free(&lj->prefix);
    free(lj);
    queue_store_job_free(j);
    queue_delivery_done(d);
}

static void oneline(struct buf *b, const char *s)
{
    for (; s && *s; s++)
        if (*s != '\r' && *s != '\n')
            buf_append(b, s, 1);
}

static struct local_job *local_prepare(struct delivery *d, const char *key, qjob_fn run, bool crlf)
{
    struct qentry *e = d->e;
    struct qrcpt *r = &e->env.rcpts[d->idx];
    char *tmpl = queue_file_route_get(r->route, key);
    struct local_job *lj = xcalloc(1, sizeof(*lj));
    lj->d = d;
    lj->fd = -1;
    buf_init(&lj->prefix);
    if (!tmpl || !*tmpl) {
        free(tmpl);
        free(lj);
        d->result = 2;
        snprintf(d->code, sizeof(d->code), "5.3.5");
        buf_printf(&d->diag, "route has no %s", key);
        queue_delivery_done(d);
        return NULL;
    }
    lj->path = queue_expand(tmpl, r->address, false);
    free(tmpl);
    snprintf(lj->name, sizeof(lj->name), "%s.R%d.kurir", e->env.id, d->idx);
    lj->from = xstrdup(e->env.from ? e->env.from : "");
    lj->idx = d->idx;
    lj->begun = r->mbox_begun;
    lj->begun_off = r->mbox_off;
    lj->begun_len = r->mbox_len;
    const char *nl = crlf ? "\r\n" : "\n";
    buf_appends(&lj->prefix, "Return-Path: <");
    oneline(&lj->prefix, lj->from);
    buf_printf(&lj->prefix, ">%s", nl);
    buf_appends(&lj->prefix, "Delivered-To: ");
    oneline(&lj->prefix, r->address);
    buf_appends(&lj->prefix, nl);
    lj->fd = queue_open_body(d->q, e, &lj->off);
    if (lj->fd < 0) {
        d->result = 1;
        snprintf(d->code, sizeof(d->code), "4.3.0");
        buf_printf(&d->diag, "cannot open the queued message: %s", strerror(errno));
        free(lj->path);
        free(lj->from);
        buf_free(&lj->prefix);
        free(lj);
        queue_delivery_done(d);
        return NULL;
    }
    struct qjob *j = queue_store_job(&d->q->store, QJ_RUN, local_done, NULL);
    snprintf(j->id, sizeof(j->id), "%s", e->env.id);
    j->data = lj;
    j->run = run;
    queue_store_submit(&d->q->store, j);
    return lj;
}

/* ---- Maildir ------------------------------------------------------------------ */

static void maildir_run(struct qjob *j)
{
    struct local_job *lj = j->data;
    if (maildir_deliver_named(lj->path, lj->name, buf_peek(&lj->prefix), buf_used(&lj->prefix), lj->fd, lj->off,
                              j->errtext, sizeof(j->errtext)) < 0)
        j->err = errno ? errno : EIO;
}

void agent_maildir_start(struct delivery *d)
{
    local_prepare(d, "template", maildir_run, true);
}

/* ---- mbox ---------------------------------------------------------------------- */

static int mkdir_parents(const char *path)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return 0;
}

/* The message as it goes into the mbox (mboxrd): CRLF -> LF, ">" before
 * lines matching ">*From ", one blank line at the end. Built whole first,
 * so that its length is known before the append starts. */
static int mbox_render(int in, uint64_t off, struct buf *o, char *err, size_t cap)
{
    char chunk[65536];
    bool bol = true, in_quote = false, cr = false;
    size_t quote_len = 0;   /* ">" run held back at the start of a line */
    struct buf carry;       /* a line start that might be "From " split across reads */
    buf_init(&carry);
    for (;;) {
        ssize_t r = pread(in, chunk, sizeof(chunk), (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, cap, "read the queued message: %s", strerror(errno));
            buf_free(&carry);
            return -1;
        }
        if (r == 0)
            break;
        off += (uint64_t)r;
        buf_append(&carry, chunk, (size_t)r);
        const char *p = buf_peek(&carry);
        size_t n = buf_used(&carry), i = 0;
        for (; i < n; i++) {
            char c = p[i];
            if ((bol || in_quote) && c == 'F' && n - i < 5)
                break;   /* need more bytes to tell "From " */
            if (cr) {
                cr = false;
                if (c != '\n')
                    buf_append(o, "\r", 1);
            }
            if (c == '\r') {
                cr = true;
                continue;
            }
            if (bol) {
                in_quote = true;
                quote_len = 0;
                bol = false;
            }
            if (in_quote) {
                if (c == '>') {
                    quote_len++;
                    continue;
                }
                in_quote = false;
                if (c == 'F' && n - i >= 5 && !memcmp(p + i, "From ", 5))
                    buf_append(o, ">", 1);
                for (size_t q = 0; q < quote_len; q++)
                    buf_append(o, ">", 1);
            }
            buf_append(o, &c, 1);
            if (c == '\n')
                bol = true;
        }
        buf_consume(&carry, i);
        buf_compact(&carry);
    }
    /* what is left is a short tail starting with "F" */
    const char *p = buf_peek(&carry);
    size_t n = buf_used(&carry);
    if (n) {
        for (size_t q = 0; q < quote_len; q++)
            buf_append(o, ">", 1);
        in_quote = false;
        buf_append(o, p, n);
        bol = p[n - 1] == '\n';
    }
    buf_free(&carry);
    for (size_t q = 0; in_quote && q < quote_len; q++)
        buf_append(o, ">", 1);
    if (cr)
        buf_append(o, "\r", 1);
    if (!bol)
        buf_append(o, "\n", 1);
    buf_append(o, "\n", 1);
    return 0;
}

/* Is the append recorded as begun at off (len bytes) there whole? */
static bool mbox_complete_at(int fd, uint64_t size, uint64_t off, uint64_t len, const char *tag)
{
    if (len == 0 || size < off + len)
        return false;
    char head[8192];
    size_t want = len < sizeof(head) - 1 ? (size_t)len : sizeof(head) - 1;
    ssize_t r = pread(fd, head, want, (off_t)off);
    if (r != (ssize_t)want)
        return false;
    head[r] = '\0';
    char needle[128];
    snprintf(needle, sizeof(needle), "\nX-Kurir-Delivery: %s\n", tag);
    char last;
    if (strncmp(head, "From ", 5) != 0 || !strstr(head, needle) ||
        pread(fd, &last, 1, (off_t)(off + len - 1)) != 1 || last != '\n')
        return false;
    if (size == off + len)
        return true;
    char next[5];
    return pread(fd, next, 5, (off_t)(off + len)) == 5 && !memcmp(next, "From ", 5);
}

/* Does our torn append start at off (our From line and tag)? */
static bool mbox_ours_at(int fd, uint64_t off, const char *tag)
{
    char head[2048];
    ssize_t r = pread(fd, head, sizeof(head) - 1, (off_t)off);
    if (r < 5)
        return false;
    head[r] = '\0';
    char needle[128];
    snprintf(needle, sizeof(needle), "\nX-Kurir-Delivery: %s\n", tag);
    return !strncmp(head, "From ", 5) && strstr(head, needle);
}

/* Durably note where this append starts (st/ID), so that a redelivery
 * after a crash can tell a complete copy from a torn one. */
static int mbox_note_begin(struct qjob *j, int idx, uint64_t off, uint64_t len)
{
    int fd = openat(j->store->stfd, j->id, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    char line[128];
    int n = snprintf(line, sizeof(line), "%d mbox-begin %llu %llu\n", idx, (unsigned long long)off,
                     (unsigned long long)len);
    int rc = write_all(fd, line, (size_t)n) == 0 && fdatasync(fd) == 0 ? 0 : -1;
    close(fd);
    return rc;
}

static void mbox_run(struct qjob *j)
{
    struct local_job *lj = j->data;
    if (mkdir_parents(lj->path) < 0) {
        j->err = errno;
        snprintf(j->errtext, sizeof(j->errtext), "cannot create the directory of %s: %s", lj->path,
                 strerror(errno));
        return;
    }
    struct buf m;
    buf_init(&m);
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm);
    buf_appends(&m, "From ");
    if (*lj->from) {
        for (const char *p = lj->from; *p; p++)
            buf_append(&m, (*p == ' ' || *p == '\r' || *p == '\n') ? "_" : p, 1);
    } else {
        buf_appends(&m, "MAILER-DAEMON");
    }
    buf_printf(&m, " %s\n", date);
    buf_append(&m, buf_peek(&lj->prefix), buf_used(&lj->prefix));
    buf_printf(&m, "X-Kurir-Delivery: %s\n", lj->name);
    char err[200] = "";
    if (mbox_render(lj->fd, lj->off, &m, err, sizeof(err)) < 0) {
        j->err = errno ? errno : EIO;
        snprintf(j->errtext, sizeof(j->errtext), "%s: %s", lj->path, err);
        buf_free(&m);
        return;
    }
    int fd = open(lj->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        j->err = errno;
        snprintf(j->errtext, sizeof(j->errtext), "open %s: %s", lj->path, strerror(errno));
        buf_free(&m);
        return;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    struct stat st;
    int rc = 0;
    /* an open-file-description lock: it excludes our other disk thread too
     * (classic fcntl locks do not, within one process) and conflicts with
     * the fcntl locks of other programs (mail readers, procmail) */
    while ((rc = fcntl(fd, F_OFD_SETLKW, &fl)) < 0 && errno == EINTR)
        ;
    if (rc < 0 || fstat(fd, &st) < 0) {
        j->err = errno;
        snprintf(j->errtext, sizeof(j->errtext), "lock %s: %s", lj->path, strerror(errno));
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (lj->begun) {
        if (mbox_complete_at(fd, size, lj->begun_off, lj->begun_len, lj->name))
            goto out;   /* appended whole before a crash: nothing to do */
        if (size > lj->begun_off && size < lj->begun_off + lj->begun_len &&
            mbox_ours_at(fd, lj->begun_off, lj->name)) {
            /* our own torn append, nothing after it: cut it off */
            if (ftruncate(fd, (off_t)lj->begun_off) == 0)
                size = lj->begun_off;
        }
    }
    if (mbox_note_begin(j, lj->idx, size, buf_used(&m)) < 0) {
        j->err = errno;
        snprintf(j->errtext, sizeof(j->errtext), "record the mbox append of %s: %s", j->id, strerror(errno));
        goto out;
    }
    rc = write_all(fd, buf_peek(&m), buf_used(&m));
    if (rc < 0)
        snprintf(err, sizeof(err), "write: %s", strerror(errno));
    if (rc == 0 && fsync(fd) < 0) {
        snprintf(err, sizeof(err), "fsync: %s", strerror(errno));
        rc = -1;
    }
    if (rc < 0) {
        j->err = errno ? errno : EIO;
        /* cut the partial message off again, so the mbox stays whole */
        if (ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0)
            snprintf(j->errtext, sizeof(j->errtext), "%s: %s (and truncating back failed: %s)", lj->path, err,
                     strerror(errno));
        else
            snprintf(j->errtext, sizeof(j->errtext), "%s: %s", lj->path, err);
    }
out:
    close(fd);   /* releases the lock */
    buf_free(&m);
}

void agent_mbox_start(struct delivery *d)
{
    local_prepare(d, "path", mbox_run, false);
}
