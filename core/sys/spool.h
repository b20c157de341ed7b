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

struct spool {
    int fd;                 /* -1 while the body is only in memory */
    char *dir;              /* where to spill */
    uint64_t size;          /* bytes appended (written or buffered) */
    struct buf wbuf;        /* write-behind buffer, flushed at 64 KiB */
    int err;                /* errno of the first failed write (sticky) */
};

void spool_init(struct spool *s);
/* Start a new body that spills into dir when it grows past 64 KiB. 0, or
 * -1 (errno set) when dir is not a writable directory. */
int spool_open(struct spool *s, const char *dir);
/* Append bytes (buffered). Errors are sticky and reported by spool_finish. */
void spool_append(struct spool *s, const void *p, size_t n);
/* Flush buffered bytes. 0 or -1 (s->err). */
int spool_finish(struct spool *s);
/* Read back n bytes at off into dst (after spool_finish). Returns bytes read or -1. */
ssize_t spool_pread(struct spool *s, void *dst, size_t n, uint64_t off);
/* Copy the whole body to fd (after spool_finish). 0 or -1. */
int spool_copy_to(struct spool *s, int fd);
/* A second handle on a finished body (own fd and buffer copy), so that a
 * queue commit can read it on another thread while the session goes on. */
int spool_dup(const struct spool *src, struct spool *dst);
void spool_close(struct spool *s);
/* Space of the file system holding dir: bytes an unprivileged writer may
 * still use, and whether it is tmpfs (RAM: lost at reboot). 0 or -1. */
int spool_space(const char *dir, uint64_t *avail, bool *tmpfs);

#endif
