/* spool.h - the body file of one transaction. Message bytes go to disk as
 * they arrive (buffered), never into one growing string. The file is an
 * unnamed O_TMPFILE in the spool directory (falls back to mkstemp+unlink),
 * so a crash leaves nothing behind. */
#ifndef KURIR_SPOOL_H
#define KURIR_SPOOL_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include "util.h"

struct spool {
    int fd;                 /* -1 when not open */
    uint64_t size;          /* bytes appended (written or buffered) */
    struct buf wbuf;        /* write-behind buffer, flushed at 64 KiB */
    int err;                /* errno of the first failed write (sticky) */
};

void spool_init(struct spool *s);
/* Open a new body file in dir. 0 or -1 (errno set). */
int spool_open(struct spool *s, const char *dir);
/* Append bytes (buffered). Errors are sticky and reported by spool_finish. */
void spool_append(struct spool *s, const void *p, size_t n);
/* Flush buffered bytes. 0 or -1 (s->err). */
int spool_finish(struct spool *s);
/* Read back n bytes at off into dst (after spool_finish). Returns bytes read or -1. */
ssize_t spool_pread(struct spool *s, void *dst, size_t n, uint64_t off);
/* Copy the whole body to fd (after spool_finish). 0 or -1. */
int spool_copy_to(struct spool *s, int fd);
void spool_close(struct spool *s);

#endif
