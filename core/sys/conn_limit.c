/* conn_limit.c - the connection counts of a master's workers in one shared
 * mapping: per slot, a total and an open-addressing table (linear probing,
 * backward-shift deletion) of client IP -> connections. One robust mutex
 * guards it all: a take or release is a few probes, once per connection.
 * A worker writes only its own slot, so a worker that dies mid-update
 * leaves damage only in the slot the master then clears. */
#include "sys/conn_limit.h"

#include <stdint.h>
#include <string.h>

#include "sys/shm.h"
#include "proto/util.h"

#define IP_MAX 48

struct cl_entry {
    char ip[IP_MAX];      /* "" = empty */
    int32_t count;
    uint32_t hash;
};

struct conn_limit {
    pthread_mutex_t mu;
    int slots;
    uint32_t cap;          /* entries per slot, a power of two */
    size_t size;           /* of the whole mapping */
    int32_t total[];       /* [slots], then the tables */
};

static struct cl_entry *table(struct conn_limit *cl, int slot)
{
    char *base = (char *)cl + sizeof(*cl) + (size_t)cl->slots * sizeof(int32_t);
    base += (8 - ((uintptr_t)base & 7)) & 7;
    return (struct cl_entry *)base + (size_t)slot * cl->cap;
}

static uint32_t hash_ip(const char *ip)
{
    uint32_t h = 2166136261u;
    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h;
}

struct conn_limit *conn_limit_new(int slots, int capacity)
{
    uint32_t cap = 1024;
    while (cap < (uint32_t)capacity && cap < (1u << 20))
        cap <<= 1;
    size_t size = sizeof(struct conn_limit) + (size_t)slots * sizeof(int32_t) + 8 +
                  (size_t)slots * cap * sizeof(struct cl_entry);
    struct conn_limit *cl = shm_map(size);
    if (!cl)
        return NULL;
    shm_mutex_init(&cl->mu);
    cl->slots = slots;
    cl->cap = cap;
    cl->size = size;
    return cl;
}

void conn_limit_free(struct conn_limit *cl)
{
    if (cl)
        shm_unmap(cl, cl->size);
}

int conn_limit_slots(const struct conn_limit *cl)
{
    return cl->slots;
}

/* index of ip in t, or of the empty entry where it would go */
static uint32_t probe(const struct conn_limit *cl, const struct cl_entry *t, const char *ip, uint32_t h)
{
    uint32_t mask = cl->cap - 1;
    uint32_t i = h & mask;
    for (uint32_t n = 0; n < cl->cap; n++, i = (i + 1) & mask)
        if (!t[i].ip[0] || (t[i].hash == h && !strcmp(t[i].ip, ip)))
            return i;
    return UINT32_MAX;
}

int conn_limit_take(struct conn_limit *cl, int slot, const char *ip, int max_total, int max_per_ip)
{
    if (strlen(ip) >= IP_MAX)
        return -1;
    uint32_t h = hash_ip(ip);
    int rc = -1;
    shm_lock(&cl->mu);
    long long total = 0, mine = 0;
    for (int s = 0; s < cl->slots; s++) {
        total += cl->total[s];
        if (cl->total[s] > 0) {
            const struct cl_entry *t = table(cl, s);
            uint32_t i = probe(cl, t, ip, h);
            if (i != UINT32_MAX && t[i].ip[0])
                mine += t[i].count;
        }
    }
    if (total < max_total && mine < max_per_ip) {
        struct cl_entry *t = table(cl, slot);
        uint32_t i = probe(cl, t, ip, h);
        /* keep one entry free so that probes always end */
        if (i != UINT32_MAX && (t[i].ip[0] || (uint32_t)cl->total[slot] + 1 < cl->cap)) {
            if (!t[i].ip[0]) {
                memcpy(t[i].ip, ip, strlen(ip) + 1);
                t[i].hash = h;
                t[i].count = 0;
            }
            t[i].count++;
            cl->total[slot]++;
            rc = 0;
        }
    }
    shm_unlock(&cl->mu);
    return rc;
}

void conn_limit_release(struct conn_limit *cl, int slot, const char *ip)
{
    if (strlen(ip) >= IP_MAX)
        return;
    uint32_t h = hash_ip(ip);
    uint32_t mask = cl->cap - 1;
    shm_lock(&cl->mu);
    struct cl_entry *t = table(cl, slot);
    uint32_t i = probe(cl, t, ip, h);
    if (i != UINT32_MAX && t[i].ip[0]) {
        if (--t[i].count <= 0) {
            /* backward-shift deletion: pull later entries of the same run
             * into the hole unless they would move before their home */
            uint32_t hole = i;
            for (uint32_t j = (i + 1) & mask; t[j].ip[0]; j = (j + 1) & mask) {
                uint32_t home = t[j].hash & mask;
                if (((j - home) & mask) >= ((j - hole) & mask)) {
                    t[hole] = t[j];
                    hole = j;
                }
            }
            memset(&t[hole], 0, sizeof(t[hole]));
        }
        cl->total[slot]--;   /* last: a worker dying above leaves total > 0, so its slot is cleared */
    }
    shm_unlock(&cl->mu);
}

void conn_limit_clear(struct conn_limit *cl, int slot)
{
    shm_lock(&cl->mu);
    if (cl->total[slot] != 0) {
        memset(table(cl, slot), 0, (size_t)cl->cap * sizeof(struct cl_entry));
        cl->total[slot] = 0;
    }
    shm_unlock(&cl->mu);
}
