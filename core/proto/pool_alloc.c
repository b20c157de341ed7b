/* pool_alloc.c - size-class free lists in front of malloc for a Lua state
 * (see pool_alloc.h). A block on a list is poisoned for AddressSanitizer,
 * so that the sanitizer build still reports a use after free of a pooled
 * block. */
#include "proto/pool_alloc.h"

#include <stdlib.h>
#include <string.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* the class of a block of n bytes, 1 <= n <= POOL_ALLOC_SMALL */
static size_t class_of(size_t n)
{
    return (n - 1) / POOL_ALLOC_CLASS;
}

static size_t class_size(size_t k)
{
    return (k + 1) * POOL_ALLOC_CLASS;
}

struct pool_alloc *pool_alloc_new(size_t keep)
{
    struct pool_alloc *p = calloc(1, sizeof(*p));
    if (p)
        p->keep = keep ? keep : POOL_ALLOC_KEEP;
    return p;
}

void pool_alloc_destroy(struct pool_alloc *p)
{
    if (!p)
        return;
    for (size_t k = 0; k < POOL_ALLOC_CLASSES; k++) {
        void *b = p->free[k];
        while (b) {
            UNPOISON(b, class_size(k));
            void *next = *(void **)b;
            free(b);
            b = next;
        }
    }
    free(p);
}

/* n >= 1 bytes: a pooled block of n's class, or malloc */
static void *take(struct pool_alloc *p, size_t n)
{
    if (n > POOL_ALLOC_SMALL)
        return malloc(n);
    size_t k = class_of(n);
    void *b = p->free[k];
    if (!b)
        return malloc(class_size(k));
    UNPOISON(b, class_size(k));
    p->free[k] = *(void **)b;
    p->kept -= class_size(k);
    return b;
}

/* give back block b that was taken for osize bytes */
static void give(struct pool_alloc *p, void *b, size_t osize)
{
    if (osize == 0 || osize > POOL_ALLOC_SMALL) {
        free(b);
        return;
    }
    size_t k = class_of(osize);
    if (p->kept + class_size(k) > p->keep) {
        free(b);
        return;
    }
    *(void **)b = p->free[k];
    p->free[k] = b;
    p->kept += class_size(k);
    POISON(b, class_size(k));
}

void *pool_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct pool_alloc *p = ud;
    if (nsize == 0) {
        if (ptr)
            give(p, ptr, osize);
        return NULL;
    }
    if (!ptr)
        return take(p, nsize);   /* osize is then the kind of object: not a size */
    if (osize <= POOL_ALLOC_SMALL && nsize <= POOL_ALLOC_SMALL && class_of(osize) == class_of(nsize))
        return ptr;
    if (osize > POOL_ALLOC_SMALL && nsize > POOL_ALLOC_SMALL) {
        void *q = realloc(ptr, nsize);
        return q ? q : nsize <= osize ? ptr : NULL;
    }
    void *q = take(p, nsize);
    if (!q)
        return nsize <= osize ? ptr : NULL;   /* a shrink keeps the larger block */
    memcpy(q, ptr, osize < nsize ? osize : nsize);
    give(p, ptr, osize);
    return q;
}
