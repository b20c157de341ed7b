/* spool.c - the body of one transaction. Bytes collect in a buffer of up
 * to 64 KiB; a body that outgrows it spills into an unnamed file (O_TMPFILE,
 * or mkstemp + unlink where the filesystem lacks it) in the spool directory
 * and the buffer becomes its write-behind buffer. So a message never sits
 * whole in memory, small ones cost no file, and a crash leaves no file
 * behind. Write errors are sticky and reported once by spool_finish().
 * Reading back is by offset (pread / memcpy) or a copy to another fd. A
 * spilled body starts SPOOL_FILE_RESERVE bytes into its file, so that the
 * queue can write its envelope in front of it and link the file into the
 * queue directory instead of copying it. Owns its buffer and directory
 * name; the file is reference-counted (spool_dup shares it with a disk
 * thread). Uses only POSIX/Linux file calls. */
#include "sys/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define SPOOL_BUFSZ (64 * 1024)
#define SPOOL_EINTR_MAX 100   /* consecutive EINTRs tolerated by one call */
#define SPOOL_COPY_CHUNK (1024 * 1024)

struct spool_file {
    atomic_int refs;
    int fd;
};

void spool_init(struct spool *s)
{
    s->fd = -1;
    s->file = NULL;
    s->dir = NULL;
    s->size = 0;
    buf_init(&s->wbuf);
    s->err = 0;
}

static int open_unnamed(const char *dir)
{
#ifdef O_TMPFILE
    int fd = open(dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
#endif
    struct buf path;
    buf_init(&path);
    buf_printf(&path, "%s/kurir-spool-XXXXXX", dir);
    buf_append(&path, "", 1);
    int fd2 = mkostemp(path.data, O_CLOEXEC);
    if (fd2 >= 0 && unlink(path.data) < 0) {
        int e = errno;
        close(fd2);
        fd2 = -1;
        errno = e;
    }
    buf_free(&path);
    return fd2;
}

/* Expects s initialised or closed (it never closes s->fd: a zeroed struct
 * would otherwise close fd 0). */
int spool_open(struct spool *s, const char *dir)
{
    const char *d = dir && *dir ? dir : ".";
    if (access(d, W_OK | X_OK) < 0)
        return -1;
    spool_begin(s, d);
    return 0;
}

void spool_begin(struct spool *s, const char *dir)
{
    const char *d = dir && *dir ? dir : ".";
    free(s->dir);
    s->dir = xstrdup(d);
    s->fd = -1;
    s->size = 0;
    s->err = 0;
    buf_reset(&s->wbuf);
}

/* The body outgrew memory: move it to a file. */
static void spill(struct spool *s)
{
    if (s->fd >= 0 || s->err)
        return;
    if (!s->dir) {
        s->err = EBADF;
        return;
    }
    int fd = open_unnamed(s->dir);
    if (fd < 0 || lseek(fd, SPOOL_FILE_RESERVE, SEEK_SET) < 0) {
        s->err = errno ? errno : EIO;
        if (fd >= 0)
            close(fd);
        return;
    }
    s->file = xcalloc(1, sizeof(*s->file));
    atomic_init(&s->file->refs, 1);
    s->file->fd = fd;
    s->fd = fd;
}

static void flush(struct spool *s)
{
    size_t n = buf_used(&s->wbuf);
    if (n == 0)
        return;
    if (!s->err && write_all(s->fd, buf_peek(&s->wbuf), n) < 0)
        s->err = errno ? errno : EIO;
    buf_reset(&s->wbuf);
}

void spool_append(struct spool *s, const void *p, size_t n)
{
    if (n == 0)
        return;
    s->size += n;
    if (!s->dir && s->fd < 0 && !s->err)
        s->err = EBADF;
    if (s->err)
        return;   /* sticky: keep counting, stop writing */
    if (s->fd < 0 && buf_used(&s->wbuf) + n <= SPOOL_BUFSZ) {
        if (s->wbuf.cap == 0)
            buf_reserve(&s->wbuf, n > SPOOL_SMALL ? n : SPOOL_SMALL);   /* a small body: one allocation */
        buf_append(&s->wbuf, p, n);   /* still small: memory only */
        return;
    }
    spill(s);
    if (s->err)
        return;
    if (buf_used(&s->wbuf) + n > SPOOL_BUFSZ)
        flush(s);
    if (n >= SPOOL_BUFSZ) {
        if (!s->err && write_all(s->fd, p, n) < 0)
            s->err = errno ? errno : EIO;
        return;
    }
    if (s->wbuf.cap < SPOOL_BUFSZ)
        buf_reserve(&s->wbuf, SPOOL_BUFSZ);   /* one allocation for the whole body */
    buf_append(&s->wbuf, p, n);
    if (buf_used(&s->wbuf) >= SPOOL_BUFSZ)
        flush(s);
}

int spool_finish(struct spool *s)
{
    if (!s->dir && s->fd < 0 && !s->err)
        s->err = EBADF;
    if (s->fd >= 0) {
        if (!s->err)
            flush(s);
        buf_free(&s->wbuf);   /* the body is complete: give back the 64 KiB */
    }
    if (s->err) {
        errno = s->err;
        return -1;
    }
    return 0;
}

ssize_t spool_pread(struct spool *s, void *dst, size_t n, uint64_t off)
{
    if (s->fd < 0 && s->dir && !s->err) {
        size_t have = buf_used(&s->wbuf);
        if (off >= have)
            return 0;
        if (n > have - off)
            n = have - (size_t)off;
        memcpy(dst, buf_peek(&s->wbuf) + off, n);
        return (ssize_t)n;
    }
    if (buf_used(&s->wbuf) && spool_finish(s) < 0)
        return -1;
    if (s->fd < 0) {
        errno = EBADF;
        return -1;
    }
    char *d = dst;
    size_t got = 0;
    int eintr = 0;
    while (got < n) {
        ssize_t r = pread(s->fd, d + got, n - got, (off_t)(SPOOL_FILE_RESERVE + off + got));
        if (r < 0) {
            if (errno == EINTR && ++eintr < SPOOL_EINTR_MAX)
                continue;
            return -1;
        }
        if (r == 0)
            break;   /* end of file */
        eintr = 0;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Plain copy of [*off, size) through a stack buffer; the last resort. */
static int copy_rw(struct spool *s, int fd, uint64_t *off)
{
    char chunk[16384];
    while (*off < s->size) {
        uint64_t left = s->size - *off;
        size_t want = left < sizeof(chunk) ? (size_t)left : sizeof(chunk);
        ssize_t r = spool_pread(s, chunk, want, *off);
        if (r < 0)
            return -1;
        if (r == 0) {
            errno = EIO;   /* file shorter than what was appended */
            return -1;
        }
        if (write_all(fd, chunk, (size_t)r) < 0)
            return -1;
        *off += (uint64_t)r;
    }
    return 0;
}

/* Errors meaning "this kernel path cannot do it here", not "I/O failed". */
static bool copy_unsupported(int e)
{
    return e == EXDEV || e == EINVAL || e == ENOSYS || e == EOPNOTSUPP || e == EBADF ||
           e == EPERM;
}

enum kcopy { KCOPY_RANGE, KCOPY_SENDFILE };

/* Copy [*off, size) with copy_file_range or sendfile. Returns 0 when done
 * or when this path is unsupported here (the caller falls back), -1 on an
 * I/O error. Bounded: every round moves bytes, fails, or gives up. */
static int copy_kernel(struct spool *s, int fd, uint64_t *off, enum kcopy how)
{
    int eintr = 0;
    while (*off < s->size) {
        uint64_t left = s->size - *off;
        size_t want = left < SPOOL_COPY_CHUNK ? (size_t)left : SPOOL_COPY_CHUNK;
        ssize_t w;
        if (how == KCOPY_RANGE) {
            loff_t in = (loff_t)(SPOOL_FILE_RESERVE + *off);
            w = copy_file_range(s->fd, &in, fd, NULL, want, 0);
        } else {
            off_t in = (off_t)(SPOOL_FILE_RESERVE + *off);
            w = sendfile(fd, s->fd, &in, want);
        }
        if (w < 0 && errno == EINTR && ++eintr < SPOOL_EINTR_MAX)
            continue;
        if (w < 0 && copy_unsupported(errno))
            return 0;
        if (w < 0)
            return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        eintr = 0;
        *off += (uint64_t)w;
    }
    return 0;
}

int spool_copy_to(struct spool *s, int fd)
{
    if (spool_finish(s) < 0)
        return -1;
    if (s->fd < 0 && s->dir)
        return write_all(fd, buf_peek(&s->wbuf), buf_used(&s->wbuf));
    if (s->fd < 0) {
        errno = EBADF;
        return -1;
    }
    uint64_t off = 0;
    if (copy_kernel(s, fd, &off, KCOPY_RANGE) < 0 || copy_kernel(s, fd, &off, KCOPY_SENDFILE) < 0)
        return -1;
    return copy_rw(s, fd, &off);
}

int spool_dup(const struct spool *src, struct spool *dst)
{
    spool_init(dst);
    if (src->err) {
        errno = src->err;
        return -1;
    }
    if (src->file) {
        atomic_fetch_add(&src->file->refs, 1);
        dst->file = src->file;
        dst->fd = src->fd;
    }
    dst->dir = src->dir ? strdup(src->dir) : NULL;
    if (src->dir && !dst->dir)
        abort();
    dst->size = src->size;
    buf_append(&dst->wbuf, buf_peek(&src->wbuf), buf_used(&src->wbuf));
    return 0;
}

uint64_t spool_file_offset(const struct spool *s)
{
    return s->file ? SPOOL_FILE_RESERVE : 0;
}

int spool_link(struct spool *s, int dirfd, const char *name)
{
    if (!s->file) {
        errno = EBADF;
        return -1;
    }
#ifdef AT_EMPTY_PATH
    if (linkat(s->fd, "", dirfd, name, AT_EMPTY_PATH) == 0)
        return 0;
    if (errno != EPERM && errno != EACCES && errno != EINVAL && errno != ENOENT)
        return -1;
#endif
    /* without CAP_DAC_READ_SEARCH: through the fd's /proc link */
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", s->fd);
    return linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW);
}

void spool_close(struct spool *s)
{
    if (s->file && atomic_fetch_sub(&s->file->refs, 1) == 1) {
        close(s->file->fd);
        free(s->file);
    }
    free(s->dir);
    buf_free(&s->wbuf);
    spool_init(s);
}

void spool_begin_pooled(struct spool *s, const char *dir, struct buf_pool *pool)
{
    buf_pool_take(pool, &s->wbuf);
    spool_begin(s, dir);
}

void spool_close_pooled(struct spool *s, struct buf_pool *pool)
{
    buf_reset(&s->wbuf);
    buf_pool_give(pool, &s->wbuf);
    spool_close(s);
}

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

int spool_space(const char *dir, uint64_t *avail, bool *tmpfs)
{
    struct statvfs v;
    struct statfs f;
    if (statvfs(dir, &v) < 0 || statfs(dir, &f) < 0)
        return -1;
    *avail = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
    *tmpfs = f.f_type == TMPFS_MAGIC;
    return 0;
}

void spool_probe_init(struct spool_probe *p)
{
    p->access_at = p->space_at = -1;
    p->access_errno = p->space_errno = 0;
    p->avail = 0;
}

int spool_probe_access(struct spool_probe *p, const char *dir, double now)
{
    if (p->access_at < 0 || now != p->access_at) {
        const char *d = dir && *dir ? dir : ".";
        p->access_errno = access(d, W_OK | X_OK) < 0 ? errno : 0;
        p->access_at = now;
    }
    if (p->access_errno) {
        errno = p->access_errno;
        return -1;
    }
    return 0;
}

int spool_probe_space(struct spool_probe *p, const char *dir, double now, uint64_t *avail)
{
    if (p->space_at < 0 || now != p->space_at) {
        struct statvfs v;
        const char *d = dir && *dir ? dir : ".";
        if (statvfs(d, &v) < 0) {
            p->space_errno = errno;
        } else {
            p->space_errno = 0;
            p->avail = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
        }
        p->space_at = now;
    }
    if (p->space_errno) {
        errno = p->space_errno;
        return -1;
    }
    *avail = p->avail;
    return 0;
}
