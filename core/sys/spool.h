/* spool.h - the body of one transaction. The first 64 KiB stay in memory;
 * a larger message spills to an unnamed O_TMPFILE in the spool directory
 * (falls back to mkstemp+unlink) as it arrives, so a message is never held
 * whole in memory and a crash leaves nothing behind. Most mail is small and
 * then costs no file at all. */
#ifndef KURIR_SPOOL_H
#define KURIR_SPOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include "proto/util.h"

/* A spilled body's file, shared by the session and a queue commit (a disk
 * thread) through a reference count: the last spool_close closes it. */
struct spool_file;

/* A spilled body starts this far into its file; the hole before it (no
 * disk blocks on most file systems) is where a queue commit writes the
 * envelope, so the file itself can be linked into the queue. */
#define SPOOL_FILE_RESERVE (64u * 1024u)

struct spool {
    int fd;                 /* -1 while the body is only in memory */
    struct spool_file *file;   /* holds fd once spilled (shared by spool_dup) */
    char *dir;              /* where to spill */
    uint64_t size;          /* bytes appended (written or buffered) */
    struct buf wbuf;        /* write-behind buffer, flushed at 64 KiB */
    int err;                /* errno of the first failed write (sticky) */
};

void spool_init(struct spool *s);
/* Start a new body that spills into dir when it grows past 64 KiB. 0, or
 * -1 (errno set) when dir is not a writable directory. */
int spool_open(struct spool *s, const char *dir);
/* spool_open without the check (the caller made it, e.g. with
 * spool_probe_access). */
void spool_begin(struct spool *s, const char *dir);
/* Append bytes (buffered). Errors are sticky and reported by spool_finish. */
void spool_append(struct spool *s, const void *p, size_t n);
/* Flush buffered bytes. 0 or -1 (s->err). */
int spool_finish(struct spool *s);
/* Read back n bytes at off into dst (after spool_finish). Returns bytes read or -1. */
ssize_t spool_pread(struct spool *s, void *dst, size_t n, uint64_t off);
/* Copy the whole body to fd (after spool_finish). 0 or -1. */
int spool_copy_to(struct spool *s, int fd);
/* A second handle on a finished body (the same file, one more reference;
 * a copy of the in-memory part), so that a queue commit can read it on
 * another thread while the session goes on. */
int spool_dup(const struct spool *src, struct spool *dst);
/* Where the body starts in its file: SPOOL_FILE_RESERVE once spilled, 0
 * while it is only in memory (then there is no file to link). */
uint64_t spool_file_offset(const struct spool *s);
/* Give the spilled body's file the name dirfd/name (linkat of the unnamed
 * file, by AT_EMPTY_PATH or /proc/self/fd). 0, or -1 with errno (EXDEV:
 * another file system; ENOENT: not an O_TMPFILE file) and nothing done. */
int spool_link(struct spool *s, int dirfd, const char *name);
void spool_close(struct spool *s);

/* A small body starts with a buffer of SPOOL_SMALL bytes (one allocation). */
#define SPOOL_SMALL 4096
/* spool_begin, starting from a buffer of pool (of SPOOL_SMALL bytes) when
 * it holds one */
void spool_begin_pooled(struct spool *s, const char *dir, struct buf_pool *pool);
/* spool_close, giving the body's buffer back to pool when it never grew
 * past SPOOL_SMALL (else it is freed) */
void spool_close_pooled(struct spool *s, struct buf_pool *pool);
/* Space of the file system holding dir: bytes an unprivileged writer may
 * still use, and whether it is tmpfs (RAM: lost at reboot). 0 or -1. */
int spool_space(const char *dir, uint64_t *avail, bool *tmpfs);

/* The checks made for every transaction (the directory is writable at
 * DATA/BDAT, its free space at MAIL), each remembered for one moment:
 * callers pass their event loop's time (ev_now), and the calls of one loop
 * iteration (a pipelined burst, many sessions) share one system call. */
struct spool_probe {
    double access_at, space_at;   /* the now of the last check; -1: none */
    int access_errno, space_errno;
    uint64_t avail;
};
void spool_probe_init(struct spool_probe *p);
/* 0 when dir is a writable directory, else -1 with errno (as spool_open) */
int spool_probe_access(struct spool_probe *p, const char *dir, double now);
/* bytes an unprivileged writer may still use in dir's file system; 0 or -1 */
int spool_probe_space(struct spool_probe *p, const char *dir, double now, uint64_t *avail);

#endif
