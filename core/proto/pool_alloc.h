/* pool_alloc.h - the allocator of a Lua state: blocks of up to
 * POOL_ALLOC_SMALL bytes come from free lists, one per 16-byte size class,
 * so that the small objects a message makes and drops (tables, strings,
 * userdata: about a dozen per message) are reused without malloc/free;
 * larger blocks go to malloc. At most `keep` bytes wait on the lists, the
 * rest goes back to free(). Every block is its own malloc'ed block, so a
 * block can always leave the lists with free().
 *
 * pool_alloc_fn has the lua_Alloc contract (lua.h): (ud, ptr, osize,
 * nsize) frees ptr when nsize is 0, allocates when ptr is NULL, else
 * resizes; NULL when memory is short, except that a shrink never fails.
 * Pure: no Lua here, only the function type. One pool per Lua state, one
 * thread. */
#ifndef KURIR_POOL_ALLOC_H
#define KURIR_POOL_ALLOC_H

#include <stddef.h>

#define POOL_ALLOC_CLASS 16                     /* bytes between two size classes */
#define POOL_ALLOC_SMALL 256                    /* the largest pooled block */
#define POOL_ALLOC_CLASSES (POOL_ALLOC_SMALL / POOL_ALLOC_CLASS)
#define POOL_ALLOC_KEEP ((size_t)4 << 20)       /* bytes kept on the lists by default */

struct pool_alloc {
    void *free[POOL_ALLOC_CLASSES];   /* class k: blocks of (k + 1) * 16 bytes, linked by their first word */
    size_t kept;                      /* bytes on the lists */
    size_t keep;                      /* at most this many */
};

/* A new pool (NULL when memory is short); keep 0 takes POOL_ALLOC_KEEP. */
struct pool_alloc *pool_alloc_new(size_t keep);
/* Free the blocks on the lists and the pool. The blocks handed out are the
 * caller's to have released first (lua_close does). NULL is ignored. */
void pool_alloc_destroy(struct pool_alloc *p);
/* lua_Alloc; ud is the pool. */
void *pool_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize);

#endif
