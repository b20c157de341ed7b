/* test_pool_alloc.c - the Lua state's allocator: a freed small block is
 * the next one of its size class, resizing inside a class keeps the block,
 * across classes and to and from malloc'ed sizes it keeps the contents,
 * the lists hold at most `keep` bytes, and a long mixed workload checked
 * against a copy of every block's bytes (run it under ASan/valgrind for
 * the overflows and leaks). */
#include "proto/pool_alloc.h"
#include "testutil.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed * 31u + i * 7u);
}

static bool filled(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 31u + i * 7u))
            return false;
    return true;
}

static void test_reuse_and_resize(void)
{
    struct pool_alloc *p = pool_alloc_new(0);
    CHECK(p && p->keep == POOL_ALLOC_KEEP && p->kept == 0);
    CHECK(pool_alloc_fn(p, NULL, 0, 0) == NULL);   /* free(NULL) */

    /* every small size: the block freed is the next of its class */
    for (size_t n = 1; n <= POOL_ALLOC_SMALL; n++) {
        unsigned char *a = pool_alloc_fn(p, NULL, 5, n);   /* osize: a Lua type tag */
        CHECK(a != NULL);
        fill(a, n, (unsigned)n);
        CHECK(filled(a, n, (unsigned)n));
        pool_alloc_fn(p, a, n, 0);
        size_t same = (n + POOL_ALLOC_CLASS - 1) / POOL_ALLOC_CLASS * POOL_ALLOC_CLASS;   /* its class's largest size */
        unsigned char *b = pool_alloc_fn(p, NULL, 0, same);
        CHECK(b == a);
        fill(b, same, 1);   /* the whole class size is usable */
        pool_alloc_fn(p, b, same, 0);
    }
    CHECK(p->kept == (size_t)POOL_ALLOC_CLASSES * (POOL_ALLOC_CLASSES + 1) / 2 * POOL_ALLOC_CLASS);

    /* inside a class: the same block; to another class: contents kept */
    unsigned char *a = pool_alloc_fn(p, NULL, 0, 17);
    fill(a, 17, 9);
    CHECK(pool_alloc_fn(p, a, 17, 32) == a);
    unsigned char *b = pool_alloc_fn(p, a, 32, 100);
    CHECK(b != a && filled(b, 17, 9));
    unsigned char *c = pool_alloc_fn(p, b, 100, 1000);   /* to malloc */
    CHECK(c && filled(c, 17, 9));
    fill(c, 1000, 4);
    unsigned char *d = pool_alloc_fn(p, c, 1000, 5000);  /* realloc */
    CHECK(d && filled(d, 1000, 4));
    unsigned char *e = pool_alloc_fn(p, d, 5000, 200);   /* back to a class */
    CHECK(e && filled(e, 200, 4));
    unsigned char *f = pool_alloc_fn(p, e, 200, 3);      /* a shrink */
    CHECK(f && filled(f, 3, 4));
    pool_alloc_fn(p, f, 3, 0);
    pool_alloc_destroy(p);
    pool_alloc_destroy(NULL);
}

static void test_keep_bound(void)
{
    /* room for three 64-byte blocks */
    struct pool_alloc *p = pool_alloc_new(3 * 64);
    void *blk[5];
    for (int i = 0; i < 5; i++)
        blk[i] = pool_alloc_fn(p, NULL, 0, 64);
    for (int i = 0; i < 5; i++)
        pool_alloc_fn(p, blk[i], 64, 0);   /* the last two go to free() */
    CHECK(p->kept == 3 * 64);
    void *again[3];
    for (int i = 0; i < 3; i++)
        again[i] = pool_alloc_fn(p, NULL, 0, 64);
    CHECK(again[0] == blk[2] && again[1] == blk[1] && again[2] == blk[0]);   /* last in, first out */
    CHECK(p->kept == 0);
    for (int i = 0; i < 3; i++)
        pool_alloc_fn(p, again[i], 64, 0);
    /* large blocks never wait on a list */
    void *big = pool_alloc_fn(p, NULL, 0, POOL_ALLOC_SMALL + 1);
    pool_alloc_fn(p, big, POOL_ALLOC_SMALL + 1, 0);
    CHECK(p->kept == 3 * 64);
    pool_alloc_destroy(p);
}

/* A deterministic mix of allocations, resizes and frees over sizes around
 * the class boundaries and the small/large limit, every block checked. */
static void test_workload(void)
{
    enum { SLOTS = 64, ROUNDS = 20000 };
    struct pool_alloc *p = pool_alloc_new(4096);
    unsigned char *ptr[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    unsigned seed[SLOTS] = {0};
    uint32_t x = 12345;
    int bad = 0;
    for (int r = 0; r < ROUNDS; r++) {
        x = x * 1103515245u + 12345u;
        int i = (int)((x >> 8) % SLOTS);
        uint32_t y = x >> 16;
        size_t n = (y & 3) == 0 ? 1 + y % 600 : 1 + y % (POOL_ALLOC_SMALL + 20);
        if (ptr[i] && !filled(ptr[i], size[i], seed[i]))
            bad++;
        if (!ptr[i]) {
            ptr[i] = pool_alloc_fn(p, NULL, 0, n);
        } else if ((y & 7) == 1) {
            pool_alloc_fn(p, ptr[i], size[i], 0);
            ptr[i] = NULL;
            continue;
        } else {
            unsigned char *q = pool_alloc_fn(p, ptr[i], size[i], n);
            size_t keep = size[i] < n ? size[i] : n;
            if (!q || !filled(q, keep, seed[i]))
                bad++;
            ptr[i] = q;
        }
        size[i] = n;
        seed[i] = (unsigned)r;
        fill(ptr[i], n, seed[i]);
        if (p->kept > 4096)
            bad++;
    }
    CHECK(bad == 0);
    for (int i = 0; i < SLOTS; i++)
        if (ptr[i])
            pool_alloc_fn(p, ptr[i], size[i], 0);
    pool_alloc_destroy(p);
}

int main(void)
{
    test_reuse_and_resize();
    test_keep_bound();
    test_workload();
    return testutil_summary();
}
