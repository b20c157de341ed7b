/* shared_dict.c - kurir.shared dictionaries. Each is one shared mapping:
 * a header (robust process-shared mutex, LRU list ends, free lists), a
 * bucket array of chained hash entries, and a heap carved into nodes of
 * power-of-two size classes (64 B .. 64 KiB). A node holds key and value.
 * Running out of room frees expired nodes, then evicts from the LRU tail
 * (bounded per call). Offsets, not pointers, inside the mapping. The
 * registry of names is per process and lives until exit: dictionaries
 * outlive engines, which is how they survive SIGHUP. */
#include "sys/shared_dict.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sys/shm.h"

#define NCLS 11          /* 64 << 10 = 64 KiB */
#define EVICT_MAX 64

struct sd_node {
    uint64_t hnext, prev, next;   /* bucket chain; LRU list (head = newest) */
    double expires;               /* CLOCK_MONOTONIC seconds; 0 = never */
    uint32_t hash;
    uint32_t vlen;
    uint16_t klen;
    uint8_t cls;
    uint8_t type;
    uint32_t pad;
    char data[];                  /* key, then value */
};

struct sd_hdr {
    pthread_mutex_t mu;
    uint64_t size, nbuckets;
    uint64_t lru_head, lru_tail;
    uint64_t free_list[NCLS];
    uint64_t bump;
    long long count, evicted;
};

struct shared_dict {
    struct shared_dict *next;
    char *name;
    size_t size;
    struct sd_hdr *h;
};

static struct shared_dict *registry;
static bool frozen;

#define AT(h, off) ((struct sd_node *)((char *)(h) + (off)))
#define OFF(h, n) ((uint64_t)((char *)(n) - (char *)(h)))

static uint64_t *buckets(struct sd_hdr *h)
{
    return (uint64_t *)(h + 1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t hash_key(const char *k, size_t n)
{
    uint32_t x = 2166136261u;
    for (size_t i = 0; i < n; i++)
        x = (x ^ (unsigned char)k[i]) * 16777619u;
    return x;
}

void shared_dict_freeze(void)
{
    frozen = true;
}

struct shared_dict *shared_dict_open(const char *name, size_t size, char *err, size_t errlen)
{
    for (struct shared_dict *d = registry; d; d = d->next) {
        if (strcmp(d->name, name) != 0)
            continue;
        if (d->size != size) {
            snprintf(err, errlen, "shared dictionary '%s' already has %zu bytes; a new size needs a restart",
                     name, d->size);
            return NULL;
        }
        return d;
    }
    if (frozen) {
        snprintf(err, errlen, "shared dictionary '%s' was not declared when the master loaded the script "
                 "(call kurir.shared at the top level of the script)", name);
        return NULL;
    }
    if (size < SHARED_DICT_MIN || size > SHARED_DICT_MAX) {
        snprintf(err, errlen, "shared dictionary '%s': size must be from %d to %zu bytes", name,
                 SHARED_DICT_MIN, SHARED_DICT_MAX);
        return NULL;
    }
    struct sd_hdr *h = shm_map(size);
    if (!h) {
        snprintf(err, errlen, "shared dictionary '%s': %s", name, strerror(errno));
        return NULL;
    }
    shm_mutex_init(&h->mu);
    h->size = size;
    uint64_t nb = 16;
    while (nb * 512 < size)
        nb <<= 1;
    h->nbuckets = nb;
    h->bump = sizeof(*h) + nb * sizeof(uint64_t);
    h->bump = (h->bump + 15) & ~(uint64_t)15;
    struct shared_dict *d = xcalloc(1, sizeof(*d));
    d->name = xstrdup(name);
    d->size = size;
    d->h = h;
    d->next = registry;
    registry = d;
    return d;
}

/* ---- under the lock ---- */

static void lru_unlink(struct sd_hdr *h, struct sd_node *n)
{
    if (n->prev)
        AT(h, n->prev)->next = n->next;
    else
        h->lru_head = n->next;
    if (n->next)
        AT(h, n->next)->prev = n->prev;
    else
        h->lru_tail = n->prev;
    n->prev = n->next = 0;
}

static void lru_push(struct sd_hdr *h, struct sd_node *n)
{
    uint64_t o = OFF(h, n);
    n->prev = 0;
    n->next = h->lru_head;
    if (h->lru_head)
        AT(h, h->lru_head)->prev = o;
    h->lru_head = o;
    if (!h->lru_tail)
        h->lru_tail = o;
}

static struct sd_node *find(struct sd_hdr *h, const char *k, size_t kn, uint32_t hash, uint64_t **link)
{
    uint64_t *l = &buckets(h)[hash & (h->nbuckets - 1)];
    while (*l) {
        struct sd_node *n = AT(h, *l);
        if (n->hash == hash && n->klen == kn && !memcmp(n->data, k, kn)) {
            if (link)
                *link = l;
            return n;
        }
        l = &n->hnext;
    }
    return NULL;
}

static void node_free(struct sd_hdr *h, struct sd_node *n)
{
    uint64_t *l = &buckets(h)[n->hash & (h->nbuckets - 1)];
    while (*l && AT(h, *l) != n)
        l = &AT(h, *l)->hnext;
    if (*l)
        *l = n->hnext;
    lru_unlink(h, n);
    n->hnext = h->free_list[n->cls];
    h->free_list[n->cls] = OFF(h, n);
    h->count--;
}

static bool expired(const struct sd_node *n, double t)
{
    return n->expires > 0 && n->expires <= t;
}

static struct sd_node *node_alloc(struct sd_hdr *h, size_t need, double t)
{
    int cls = 0;
    while (cls < NCLS && ((size_t)64 << cls) < need)
        cls++;
    if (cls == NCLS)
        return NULL;
    size_t csize = (size_t)64 << cls;
    for (int round = 0; round <= EVICT_MAX; round++) {
        if (h->free_list[cls]) {
            struct sd_node *n = AT(h, h->free_list[cls]);
            h->free_list[cls] = n->hnext;
            memset(n, 0, sizeof(*n));
            n->cls = (uint8_t)cls;
            return n;
        }
        if (h->bump + csize <= h->size) {
            struct sd_node *n = AT(h, h->bump);
            h->bump += csize;
            memset(n, 0, sizeof(*n));
            n->cls = (uint8_t)cls;
            return n;
        }
        /* no room: an expired node near the tail, else the least recently used */
        struct sd_node *victim = NULL;
        uint64_t o = h->lru_tail;
        for (int i = 0; o && i < 8; i++, o = AT(h, o)->prev)
            if (expired(AT(h, o), t)) {
                victim = AT(h, o);
                break;
            }
        if (!victim && h->lru_tail)
            victim = AT(h, h->lru_tail);
        if (!victim)
            return NULL;
        node_free(h, victim);
        h->evicted++;
    }
    return NULL;
}

static void put_value(struct sd_node *n, const struct sd_value *v)
{
    char *p = n->data + n->klen;
    n->type = (uint8_t)v->t;
    switch (v->t) {
    case SD_BOOL: { long long b = v->b; memcpy(p, &b, 8); n->vlen = 8; break; }
    case SD_INT: memcpy(p, &v->i, 8); n->vlen = 8; break;
    case SD_NUM: memcpy(p, &v->d, 8); n->vlen = 8; break;
    case SD_STR: memcpy(p, v->s, v->n); n->vlen = (uint32_t)v->n; break;
    default: n->vlen = 0; break;
    }
}

static void get_value(const struct sd_node *n, struct sd_value *v, struct buf *str)
{
    const char *p = n->data + n->klen;
    memset(v, 0, sizeof(*v));
    v->t = (enum sd_type)n->type;
    switch (v->t) {
    case SD_BOOL: { long long b; memcpy(&b, p, 8); v->b = b != 0; break; }
    case SD_INT: memcpy(&v->i, p, 8); break;
    case SD_NUM: memcpy(&v->d, p, 8); break;
    case SD_STR:
        buf_reset(str);
        buf_append(str, p, n->vlen);
        v->s = buf_peek(str);
        v->n = n->vlen;
        break;
    default: break;
    }
}

static size_t value_len(const struct sd_value *v)
{
    return v->t == SD_STR ? v->n : 8;
}

/* store (k, v) replacing any node of k; -1 when no room */
static int store(struct sd_hdr *h, const char *k, size_t kn, uint32_t hash, const struct sd_value *v,
                 double ttl, double t, const char **err)
{
    struct sd_node *old = find(h, k, kn, hash, NULL);
    if (old)
        node_free(h, old);
    if (v->t == SD_NIL)
        return 0;
    size_t need = sizeof(struct sd_node) + kn + value_len(v);
    if (need > ((size_t)64 << (NCLS - 1))) {
        *err = "too large (key and value at most 64 KiB)";
        return -1;
    }
    struct sd_node *n = node_alloc(h, need, t);
    if (!n) {
        *err = "no memory";
        return -1;
    }
    n->hash = hash;
    n->klen = (uint16_t)kn;
    memcpy(n->data, k, kn);
    put_value(n, v);
    n->expires = ttl > 0 ? t + ttl : 0;
    uint64_t *b = &buckets(h)[hash & (h->nbuckets - 1)];
    n->hnext = *b;
    *b = OFF(h, n);
    lru_push(h, n);
    h->count++;
    return 0;
}

/* the live node of k (an expired one is freed), or NULL */
static struct sd_node *lookup(struct sd_hdr *h, const char *k, size_t kn, uint32_t hash, double t)
{
    struct sd_node *n = find(h, k, kn, hash, NULL);
    if (n && expired(n, t)) {
        node_free(h, n);
        return NULL;
    }
    return n;
}

/* ---- API ---- */

int shared_dict_get(struct shared_dict *d, const char *k, size_t kn, struct sd_value *v, struct buf *str)
{
    struct sd_hdr *h = d->h;
    uint32_t hash = hash_key(k, kn);
    shm_lock(&h->mu);
    struct sd_node *n = lookup(h, k, kn, hash, now());
    if (n) {
        get_value(n, v, str);
        lru_unlink(h, n);
        lru_push(h, n);
    }
    shm_unlock(&h->mu);
    return n != NULL;
}

int shared_dict_ttl(struct shared_dict *d, const char *k, size_t kn, double *remaining)
{
    struct sd_hdr *h = d->h;
    uint32_t hash = hash_key(k, kn);
    double t = now();
    shm_lock(&h->mu);
    struct sd_node *n = lookup(h, k, kn, hash, t);
    if (n)
        *remaining = n->expires > 0 ? n->expires - t : 0;
    shm_unlock(&h->mu);
    return n != NULL;
}

int shared_dict_set(struct shared_dict *d, const char *k, size_t kn, const struct sd_value *v,
                    double ttl, enum sd_mode mode, const char **err)
{
    struct sd_hdr *h = d->h;
    uint32_t hash = hash_key(k, kn);
    double t = now();
    int rc;
    if (kn > UINT16_MAX) {
        *err = "key too long";
        return -1;
    }
    shm_lock(&h->mu);
    if (mode == SD_ADD && lookup(h, k, kn, hash, t))
        rc = 1;
    else
        rc = store(h, k, kn, hash, v, ttl, t, err);
    shm_unlock(&h->mu);
    return rc;
}

int shared_dict_incr(struct shared_dict *d, const char *k, size_t kn, const struct sd_value *by,
                     const struct sd_value *init, double init_ttl, struct sd_value *out)
{
    struct sd_hdr *h = d->h;
    uint32_t hash = hash_key(k, kn);
    double t = now();
    int rc = 0;
    if (kn > UINT16_MAX)
        return -1;
    shm_lock(&h->mu);
    struct sd_node *n = lookup(h, k, kn, hash, t);
    struct sd_value cur;
    if (n) {
        if (n->type != SD_INT && n->type != SD_NUM) {
            rc = 2;
            goto out;
        }
        get_value(n, &cur, NULL);
    } else if (init) {
        cur = *init;
    } else {
        rc = 1;
        goto out;
    }
    if ((cur.t != SD_INT && cur.t != SD_NUM)) {
        rc = 2;
        goto out;
    }
    memset(out, 0, sizeof(*out));
    if (cur.t == SD_INT && by->t == SD_INT) {
        out->t = SD_INT;
        out->i = (long long)((unsigned long long)cur.i + (unsigned long long)by->i);
    } else {
        out->t = SD_NUM;
        out->d = (cur.t == SD_INT ? (double)cur.i : cur.d) + (by->t == SD_INT ? (double)by->i : by->d);
    }
    if (n) {
        /* same size class: update in place, keep the expiry */
        put_value(n, out);
        lru_unlink(h, n);
        lru_push(h, n);
    } else {
        const char *err;
        if (store(h, k, kn, hash, out, init_ttl, t, &err) < 0)
            rc = -1;
    }
out:
    shm_unlock(&h->mu);
    return rc;
}

void shared_dict_stats(struct shared_dict *d, long long *count, long long *evicted)
{
    shm_lock(&d->h->mu);
    *count = d->h->count;
    *evicted = d->h->evicted;
    shm_unlock(&d->h->mu);
}
