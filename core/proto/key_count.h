/* key_count.h - connections per client key (client_key.h) and in total
 * for one process serving alone (no master, so no shared conn_limit):
 * an open-addressing hash in private memory, O(1) per take and release
 * whatever the number of open connections. It grows as needed, so a
 * reload that raises limits.connections needs nothing done here; it never
 * shrinks (its size follows the most distinct clients ever connected at
 * once: 64 KiB per 1,000). Pure. */
#ifndef KURIR_KEY_COUNT_H
#define KURIR_KEY_COUNT_H

#include <stdint.h>

#define KEY_COUNT_KEY_MAX 48   /* longest key + NUL: "ffff:...:ffff/128" is 43 */

struct key_count_entry {
    char key[KEY_COUNT_KEY_MAX];   /* "" = empty */
    uint32_t hash;
    int32_t count;
};

struct key_count {
    struct key_count_entry *t;
    uint32_t cap;          /* a power of two, 0 before the first take */
    uint32_t used;         /* entries in use (distinct keys) */
    int total;             /* connections counted */
};

void key_count_init(struct key_count *kc);
void key_count_free(struct key_count *kc);
/* Count one connection of key unless the total is at max_total or key's
 * count at max_per_key: 0 taken, -1 refused (also for
 * an empty key or one too long, which cannot be counted). */
int key_count_take(struct key_count *kc, const char *key, int max_total, int max_per_key);
/* Undo one take of key (a key not counted is ignored). */
void key_count_release(struct key_count *kc, const char *key);
/* connections counted for key */
int key_count_get(const struct key_count *kc, const char *key);

#endif
