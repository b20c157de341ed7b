/* maildir.h - deliver one message into a Maildir: write tmp/<unique>,
 * fsync the file, link it into new/, fsync new/ (and the directory chain on
 * first creation). Only then is the message delivered. */
#ifndef KURIR_MAILDIR_H
#define KURIR_MAILDIR_H

#include <stddef.h>
#include "sys/spool.h"

/* Create dir, dir/tmp, dir/new, dir/cur as needed (mode 0700, parents too).
 * 0 or -1 with errno. */
int maildir_prepare(const char *dir);

/* Write prefix (extra header lines, CRLF-terminated) followed by the body
 * held in spool. On success 0 and the file name (relative to dir, e.g.
 * "new/1700000000.M123P45Q6.host") is copied into name_out. On failure -1,
 * errno set, the tmp file unlinked, err gets a short reason. */
int maildir_deliver(const char *dir, const char *prefix, size_t prefix_len, struct spool *body,
                    char *name_out, size_t name_cap, char *err, size_t err_cap);

/* Deliver under a fixed name (the queue's: id and recipient), so that a
 * second delivery of the same recipient after a crash finds new/name (or
 * cur/name:2,...) and does nothing. The message is prefix followed by the
 * bytes of src_fd from src_off to its end. 0 or -1 with err. */
int maildir_deliver_named(const char *dir, const char *name, const char *prefix, size_t prefix_len, int src_fd,
                          uint64_t src_off, char *err, size_t err_cap);

#endif
