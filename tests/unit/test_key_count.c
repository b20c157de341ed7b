/* test_key_count.c - a lone process's connection counts: the per-key and
 * total limits refuse at the bound and free on release, counts survive
 * the table growing (thousands of keys), deletions keep every other key
 * findable (checked against a plain array), limits that change between
 * takes (a reload) apply to the counts already there. */
#include "proto/key_count.h"
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#define NKEYS 5000

static int model[NKEYS];

static void key_name(int i, char *out, size_t cap)
{
    snprintf(out, cap, "10.%d.%d.%d", i / 65536, i / 256 % 256, i % 256);
}

int main(void)
{
    struct key_count kc;
    key_count_init(&kc);
    CHECK(key_count_get(&kc, "192.0.2.1") == 0);
    key_count_release(&kc, "192.0.2.1");   /* nothing counted: ignored */
    CHECK(kc.total == 0);

    /* per key: the third of a limit of 2 is refused, a release frees one */
    CHECK(key_count_take(&kc, "192.0.2.1", 100, 2) == 0);
    CHECK(key_count_take(&kc, "192.0.2.1", 100, 2) == 0);
    CHECK(key_count_take(&kc, "192.0.2.1", 100, 2) == -1);
    CHECK(key_count_take(&kc, "192.0.2.2", 100, 2) == 0);
    CHECK(key_count_get(&kc, "192.0.2.1") == 2);
    CHECK(kc.total == 3);
    key_count_release(&kc, "192.0.2.1");
    CHECK(key_count_take(&kc, "192.0.2.1", 100, 2) == 0);
    /* a limit lowered (reload) refuses against the counts already held;
     * one raised admits more */
    CHECK(key_count_take(&kc, "192.0.2.1", 100, 1) == -1);
    CHECK(key_count_take(&kc, "192.0.2.1", 100, 3) == 0);
    CHECK(key_count_get(&kc, "192.0.2.1") == 3);
    /* total */
    CHECK(key_count_take(&kc, "192.0.2.9", 4, 10) == -1);   /* 4 held already */
    CHECK(key_count_take(&kc, "192.0.2.9", 5, 10) == 0);
    CHECK(key_count_take(&kc, "192.0.2.10", 5, 10) == -1);
    CHECK(kc.total == 5);
    /* keys that cannot be counted */
    CHECK(key_count_take(&kc, "", 100, 100) == -1);
    char longkey[KEY_COUNT_KEY_MAX + 1];
    memset(longkey, 'a', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    CHECK(key_count_take(&kc, longkey, 100, 100) == -1);
    CHECK(key_count_take(&kc, "2001:db8:1:2::/64", 100, 0) == -1);   /* per-key limit 0 */
    CHECK(kc.total == 5);
    for (int i = 0; i < 3; i++)
        key_count_release(&kc, "192.0.2.1");
    key_count_release(&kc, "192.0.2.2");
    key_count_release(&kc, "192.0.2.9");
    CHECK(kc.total == 0 && kc.used == 0);

    /* many keys: takes and releases in a scrambled order against a model */
    char k[KEY_COUNT_KEY_MAX];
    unsigned r = 1;
    int total = 0;
    for (int step = 0; step < 200000; step++) {
        r = r * 1103515245u + 12345u;
        int i = (int)((r >> 8) % NKEYS);
        key_name(i, k, sizeof(k));
        if ((r >> 4) % 3 != 0) {
            int rc = key_count_take(&kc, k, 1000000, 3);
            if (model[i] < 3) {
                if (!CHECK(rc == 0))
                    break;
                model[i]++;
                total++;
            } else if (!CHECK(rc == -1)) {
                break;
            }
        } else {
            key_count_release(&kc, k);
            if (model[i] > 0) {
                model[i]--;
                total--;
            }
        }
    }
    CHECK(kc.total == total);
    int bad = 0, distinct = 0;
    for (int i = 0; i < NKEYS; i++) {
        key_name(i, k, sizeof(k));
        bad += key_count_get(&kc, k) != model[i];
        distinct += model[i] > 0;
    }
    CHECK(bad == 0);
    CHECK((int)kc.used == distinct);
    CHECK(kc.cap >= 2 * kc.used);
    CHECK(distinct > 1000);   /* the table grew past its first size */
    /* everything released: empty again */
    for (int i = 0; i < NKEYS; i++) {
        key_name(i, k, sizeof(k));
        while (model[i]-- > 0)
            key_count_release(&kc, k);
    }
    CHECK(kc.total == 0 && kc.used == 0);
    key_count_free(&kc);
    return testutil_summary();
}
