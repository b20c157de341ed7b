/* shared_dict.h - named dictionaries in shared memory (kurir.shared): one
 * mapping per name, made by the process that loads the script first (the
 * master, or the single process) and inherited by the workers it forks.
 * Atomic across processes under one robust mutex per dictionary; bounded
 * by its size, with least-recently-used eviction and per-key expiry. */
#ifndef KURIR_SHARED_DICT_H
#define KURIR_SHARED_DICT_H

#include <stdbool.h>
#include <stddef.h>
#include "proto/util.h"

struct shared_dict;

enum sd_type { SD_NIL, SD_BOOL, SD_INT, SD_NUM, SD_STR };

struct sd_value {
    enum sd_type t;
    bool b;
    long long i;
    double d;
    const char *s;    /* SD_STR: bytes (owned by the caller) */
    size_t n;
};

#define SHARED_DICT_MIN (16 * 1024)
#define SHARED_DICT_MAX ((size_t)1 << 32)

/* The dictionary called name: found (its size must be size), or made when
 * this process may make dictionaries. NULL with a message in err. */
struct shared_dict *shared_dict_open(const char *name, size_t size, char *err, size_t errlen);
/* After fork, a worker may only find the dictionaries its master made. */
void shared_dict_freeze(void);

/* 1 found (strings copied into str, v->s points there), 0 not found. */
int shared_dict_get(struct shared_dict *d, const char *k, size_t kn, struct sd_value *v, struct buf *str);
/* remaining seconds of key (0: no expiry); 1 found, 0 not found */
int shared_dict_ttl(struct shared_dict *d, const char *k, size_t kn, double *remaining);

enum sd_mode { SD_SET, SD_ADD };
/* v->t == SD_NIL deletes. ttl 0: never expires. 0 stored; 1 exists (SD_ADD);
 * -1 no room even after evicting (err says why). */
int shared_dict_set(struct shared_dict *d, const char *k, size_t kn, const struct sd_value *v,
                    double ttl, enum sd_mode mode, const char **err);
/* key += by (numbers). A missing key starts from *init (NULL: 1 returned,
 * "not found") with init_ttl. 0 ok (*out the new value); 1 not found;
 * 2 not a number; -1 no room. */
int shared_dict_incr(struct shared_dict *d, const char *k, size_t kn, const struct sd_value *by,
                     const struct sd_value *init, double init_ttl, struct sd_value *out);
/* entries stored and expired-or-evicted so far (for tests and logs) */
void shared_dict_stats(struct shared_dict *d, long long *count, long long *evicted);

#endif
