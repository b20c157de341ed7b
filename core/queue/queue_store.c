/* queue_store.c - the queue directory (tmp/, msg/, st/) and its disk
 * threads: group commit of new messages and status lines, and blocking
 * delivery jobs, handed back to the event loop through an ev_async. Owns
 * the directory fds and the job lists; a job belongs to the submitter
 * until submitted, to the threads until done, then to its done callback. */
#include "queue/queue_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void queue_store_path(const char *dir, const char *sub, const char *id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s/%s", dir, sub, id);
}

static void job_fail(struct qjob *j, const char *what)
{
    if (j->err)
        return;
    j->err = errno ? errno : EIO;
    snprintf(j->errtext, sizeof(j->errtext), "%s %s: %s", what, j->id, strerror(j->err));
}

static int pwrite_all(int fd, const char *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* A commit whose body was spilled to a file: the envelope goes into the
 * hole at the start of that file, the added headers right before the
 * body, and the file is linked as tmp/ID. When it cannot be linked
 * (another file system), a new tmp/ID gets the same layout and a copy of
 * the body. Returns the fd to sync and close, or -1 (job failed). */
static int commit_linked(struct queue_store *qs, struct qjob *j)
{
    const char *h = buf_peek(&j->head);
    size_t alen = buf_used(&j->head) - j->env_len;
    int bfd = j->body.fd;
    if (pwrite_all(bfd, h, j->env_len, 0) == 0 && pwrite_all(bfd, h + j->env_len, alen, j->body_off) == 0 &&
        spool_link(&j->body, qs->tmpfd, j->id) == 0) {
        j->linked = true;
        int fd = fcntl(bfd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            job_fail(j, "dup");
        return fd;
    }
    int fd = openat(qs->tmpfd, j->id, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        job_fail(j, "create tmp/");
        return -1;
    }
    if (pwrite_all(fd, h, j->env_len, 0) < 0 || pwrite_all(fd, h + j->env_len, alen, j->body_off) < 0 ||
        lseek(fd, (off_t)spool_file_offset(&j->body), SEEK_SET) < 0 || spool_copy_to(&j->body, fd) < 0)
        job_fail(j, "write tmp/");
    return fd;
}

/* A group of commits, status lines and removals made durable together:
 * write all, sync the files, then the renames and removals (message
 * first, status log second) and one fsync of each directory touched. */
static void run_group(struct queue_store *qs, struct qjob *list)
{
    int n = 0;
    for (struct qjob *j = list; j; j = j->next)
        n++;
    int *fds = xcalloc((size_t)n, sizeof(int));
    int i = 0;
    bool any_commit = false, any_status = false, any_remove = false;
    for (struct qjob *j = list; j; j = j->next, i++) {
        fds[i] = -1;
        if (j->kind == QJ_REMOVE) {
            any_remove = true;
            continue;
        }
        if (j->kind == QJ_COMMIT && j->link) {
            any_commit = true;
            fds[i] = commit_linked(qs, j);
        } else if (j->kind == QJ_COMMIT) {
            any_commit = true;
            fds[i] = openat(qs->tmpfd, j->id, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (fds[i] < 0) {
                job_fail(j, "create tmp/");
                continue;
            }
            if (write_all(fds[i], buf_peek(&j->head), buf_used(&j->head)) < 0 ||
                (j->has_body && spool_copy_to(&j->body, fds[i]) < 0))
                job_fail(j, "write tmp/");
        } else {
            any_status = true;
            fds[i] = openat(qs->stfd, j->id, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
            if (fds[i] < 0) {
                job_fail(j, "open st/");
                continue;
            }
            if (write_all(fds[i], buf_peek(&j->head), buf_used(&j->head)) < 0)
                job_fail(j, "append st/");
        }
    }
    /* Every file is fdatasync'ed, after the writeback of all of them was
     * started: the first sync's journal commit carries the others' new
     * inodes, so the rest mostly find their data on disk already. (One
     * syncfs for the group would flush every dirty page of the
     * filesystem, other programs' too: tens of ms on a busy disk.) */
    uint64_t syncs = 0;
    int nfiles = 0;
    for (i = 0; i < n; i++)
        nfiles += fds[i] >= 0;
    if (nfiles > 1)
        for (i = 0; i < n; i++)
            if (fds[i] >= 0)
                sync_file_range(fds[i], 0, 0, SYNC_FILE_RANGE_WRITE);
    i = 0;
    for (struct qjob *j = list; j; j = j->next, i++) {
        if (fds[i] < 0)
            continue;
        if (!j->err && (syncs++, fdatasync(fds[i]) < 0))
            job_fail(j, "fsync");
        if (close(fds[i]) < 0)
            job_fail(j, "close");
    }
    free(fds);
    for (struct qjob *j = list; j; j = j->next) {
        if (j->kind != QJ_COMMIT)
            continue;
        if (!j->err && renameat(qs->tmpfd, j->id, qs->msgfd, j->id) < 0)
            job_fail(j, "rename to msg/");
        if (j->err)
            unlinkat(qs->tmpfd, j->id, 0);
    }
    /* the message first: a status log without its message is only an
     * orphan (removed at the next start), while a message without its
     * status log would be delivered again */
    for (struct qjob *j = list; j; j = j->next) {
        if (j->kind != QJ_REMOVE)
            continue;
        if (unlinkat(qs->msgfd, j->id, 0) < 0 && errno != ENOENT)
            job_fail(j, "unlink msg/");
        else
            unlinkat(qs->stfd, j->id, 0);
    }
    bool sync_msg = any_commit || any_remove;
    syncs += (uint64_t)sync_msg + (uint64_t)any_status;
    if (sync_msg && fsync(qs->msgfd) < 0) {
        for (struct qjob *j = list; j; j = j->next)
            if (j->kind == QJ_COMMIT || j->kind == QJ_REMOVE)
                job_fail(j, "fsync msg/");
    }
    if (any_status && fsync(qs->stfd) < 0) {
        for (struct qjob *j = list; j; j = j->next)
            if (j->kind == QJ_STATUS)
                job_fail(j, "fsync st/");
    }
    for (struct qjob *j = list; j; j = j->next)
        if (j->kind == QJ_COMMIT && j->err)
            unlinkat(qs->msgfd, j->id, 0);   /* never leave a message that got no 250 */
    qs->batches++;
    qs->grouped_jobs += (uint64_t)n;
    qs->syncs += syncs;
}

static void *thread_main(void *arg)
{
    struct queue_store *qs = arg;
    pthread_mutex_lock(&qs->mu);
    for (;;) {
        while (!qs->grouped && !qs->todo && !qs->stop)
            pthread_cond_wait(&qs->cv, &qs->mu);
        struct qjob *list = NULL;
        bool group = false;
        if (qs->grouped) {
            list = qs->grouped;
            qs->grouped = qs->grouped_tail = NULL;
            group = true;
        } else if (qs->todo) {
            list = qs->todo;
            qs->todo = list->next;
            if (!qs->todo)
                qs->todo_tail = NULL;
            list->next = NULL;
        } else {
            break;   /* stop, nothing left */
        }
        pthread_mutex_unlock(&qs->mu);
        if (group) {
            run_group(qs, list);
        } else {
            errno = 0;
            list->run(list);
        }
        pthread_mutex_lock(&qs->mu);
        struct qjob *last = list;
        while (last->next)
            last = last->next;
        if (qs->done_tail)
            qs->done_tail->next = list;
        else
            qs->done = list;
        qs->done_tail = last;
        pthread_mutex_unlock(&qs->mu);
        ev_async_send(qs->loop, &qs->async);
        pthread_mutex_lock(&qs->mu);
    }
    pthread_mutex_unlock(&qs->mu);
    return NULL;
}

static void drain_done(struct queue_store *qs)
{
    pthread_mutex_lock(&qs->mu);
    struct qjob *list = qs->done;
    qs->done = qs->done_tail = NULL;
    pthread_mutex_unlock(&qs->mu);
    while (list) {
        struct qjob *next = list->next;
        list->next = NULL;
        list->done(list);
        list = next;
    }
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    drain_done(w->data);
}

static int open_sub(int dirfd, const char *name)
{
    if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
        return -1;
    return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int mkdir_p(const char *dir)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

void queue_store_clean_tmp(struct queue_store *qs, double min_age)
{
    int fd = dup(qs->tmpfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d)
        return;
    double now = time_wall();
    struct dirent *de;
    struct stat st;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        if (min_age > 0 && (fstatat(qs->tmpfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                            now - (double)st.st_mtime < min_age))
            continue;
        unlinkat(qs->tmpfd, de->d_name, 0);
    }
    closedir(d);
}

int queue_store_open(struct queue_store *qs, struct ev_loop *loop, const char *dir, char *err, size_t cap)
{
    memset(qs, 0, sizeof(*qs));
    qs->dirfd = qs->tmpfd = qs->msgfd = qs->stfd = -1;
    qs->dir = xstrdup(dir);
    qs->loop = loop;
    if (mkdir_p(dir) < 0 || (qs->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        snprintf(err, cap, "queue directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if ((qs->tmpfd = open_sub(qs->dirfd, "tmp")) < 0 || (qs->msgfd = open_sub(qs->dirfd, "msg")) < 0 ||
        (qs->stfd = open_sub(qs->dirfd, "st")) < 0) {
        snprintf(err, cap, "queue directory %s: %s", dir, strerror(errno));
        return -1;
    }
    fsync(qs->dirfd);
    pthread_mutex_init(&qs->mu, NULL);
    pthread_cond_init(&qs->cv, NULL);
    ev_async_init(&qs->async, async_cb);
    qs->async.data = qs;
    ev_async_start(loop, &qs->async);
    ev_unref(loop);   /* the store alone does not keep the loop running */
    for (int i = 0; i < 2; i++) {
        if (pthread_create(&qs->th[i], NULL, thread_main, qs) != 0)
            break;
        qs->nthreads++;
    }
    if (qs->nthreads == 0) {
        snprintf(err, cap, "cannot start the queue threads");
        return -1;
    }
    return 0;
}

void queue_store_close(struct queue_store *qs)
{
    if (qs->nthreads) {
        pthread_mutex_lock(&qs->mu);
        qs->stop = true;
        pthread_cond_broadcast(&qs->cv);
        pthread_mutex_unlock(&qs->mu);
        for (int i = 0; i < qs->nthreads; i++)
            pthread_join(qs->th[i], NULL);
        qs->nthreads = 0;
        drain_done(qs);
        ev_ref(qs->loop);
        ev_async_stop(qs->loop, &qs->async);
        pthread_mutex_destroy(&qs->mu);
        pthread_cond_destroy(&qs->cv);
    }
    int *fds[] = {&qs->dirfd, &qs->tmpfd, &qs->msgfd, &qs->stfd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (*fds[i] >= 0)
            close(*fds[i]);
    free(qs->dir);
    qs->dir = NULL;
}

struct qjob *queue_store_job(struct queue_store *qs, enum qjob_kind kind, qjob_fn done, void *arg)
{
    struct qjob *j = xcalloc(1, sizeof(*j));
    j->kind = kind;
    j->done = done;
    j->arg = arg;
    j->store = qs;
    buf_init(&j->head);
    spool_init(&j->body);
    return j;
}

void queue_store_submit(struct queue_store *qs, struct qjob *j)
{
    j->next = NULL;
    if (qs->nthreads == 0) {
        /* after close: no thread left, do it here */
        if (j->kind == QJ_RUN)
            j->run(j);
        else
            run_group(qs, j);
        j->done(j);
        return;
    }
    pthread_mutex_lock(&qs->mu);
    if (j->kind == QJ_RUN) {
        if (qs->todo_tail)
            qs->todo_tail->next = j;
        else
            qs->todo = j;
        qs->todo_tail = j;
    } else {
        if (qs->grouped_tail)
            qs->grouped_tail->next = j;
        else
            qs->grouped = j;
        qs->grouped_tail = j;
    }
    pthread_cond_signal(&qs->cv);
    pthread_mutex_unlock(&qs->mu);
}

void queue_store_job_free(struct qjob *j)
{
    if (!j)
        return;
    buf_free(&j->head);
    spool_close(&j->body);
    free(j);
}
