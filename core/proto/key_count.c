/* key_count.c - see key_count.h. Linear probing at a load of at most one
 * half, backward-shift deletion (no tombstones, so probes stay short
 * however many clients come and go). Owns its table. */
#include "proto/key_count.h"

#include <stdlib.h>
#include <string.h>

#include "proto/util.h"

static uint32_t hash_key(const char *k, size_t *len)
{
    uint32_t h = 2166136261u;
    const char *p = k;
    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    *len = (size_t)(p - k);
    return h;
}

void key_count_init(struct key_count *kc)
{
    memset(kc, 0, sizeof(*kc));
}

void key_count_free(struct key_count *kc)
{
    free(kc->t);
    memset(kc, 0, sizeof(*kc));
}

/* index of key, or of the empty entry where it would go (cap > 0) */
static uint32_t probe(const struct key_count *kc, const char *key, uint32_t h)
{
    uint32_t mask = kc->cap - 1;
    uint32_t i = h & mask;
    while (kc->t[i].key[0] && !(kc->t[i].hash == h && !strcmp(kc->t[i].key, key)))
        i = (i + 1) & mask;
    return i;
}

static void grow(struct key_count *kc)
{
    struct key_count_entry *old = kc->t;
    uint32_t ocap = kc->cap;
    kc->cap = ocap ? ocap * 2 : 64;
    kc->t = xcalloc(kc->cap, sizeof(*kc->t));
    for (uint32_t i = 0; i < ocap; i++)
        if (old[i].key[0])
            kc->t[probe(kc, old[i].key, old[i].hash)] = old[i];
    free(old);
}

int key_count_get(const struct key_count *kc, const char *key)
{
    if (!kc->cap)
        return 0;
    size_t len;
    uint32_t h = hash_key(key, &len);
    if (len == 0 || len >= KEY_COUNT_KEY_MAX)
        return 0;
    const struct key_count_entry *e = &kc->t[probe(kc, key, h)];
    return e->key[0] ? e->count : 0;
}

int key_count_take(struct key_count *kc, const char *key, int max_total, int max_per_key)
{
    size_t len;
    uint32_t h = hash_key(key, &len);
    if (len == 0 || len >= KEY_COUNT_KEY_MAX || kc->total >= max_total)
        return -1;
    if ((kc->used + 1) * 2 > kc->cap)
        grow(kc);
    struct key_count_entry *e = &kc->t[probe(kc, key, h)];
    if (e->key[0] && e->count >= max_per_key)
        return -1;
    if (!e->key[0]) {
        if (max_per_key < 1)
            return -1;
        memcpy(e->key, key, len + 1);
        e->hash = h;
        e->count = 0;
        kc->used++;
    }
    e->count++;
    kc->total++;
    return 0;
}

void key_count_release(struct key_count *kc, const char *key)
{
    if (!kc->cap)
        return;
    size_t len;
    uint32_t h = hash_key(key, &len);
    if (len == 0 || len >= KEY_COUNT_KEY_MAX)
        return;
    uint32_t mask = kc->cap - 1;
    uint32_t i = probe(kc, key, h);
    struct key_count_entry *t = kc->t;
    if (!t[i].key[0])
        return;
    kc->total--;
    if (--t[i].count > 0)
        return;
    /* backward shift: pull later entries of the run into the hole unless
     * that would put them before their home */
    uint32_t hole = i;
    for (uint32_t j = (i + 1) & mask; t[j].key[0]; j = (j + 1) & mask) {
        uint32_t home = t[j].hash & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            t[hole] = t[j];
            hole = j;
        }
    }
    memset(&t[hole], 0, sizeof(t[hole]));
    kc->used--;
}
