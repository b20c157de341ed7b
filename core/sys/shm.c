/* shm.c - shared mappings and robust process-shared mutexes for the state
 * that the master and its workers share (connection counts, kurir.shared
 * dictionaries). Inherited across fork, so every process sees the mapping
 * at the same address. */
#include "sys/shm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

void *shm_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void shm_unmap(void *p, size_t size)
{
    if (p)
        munmap(p, size);
}

void shm_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
}

void shm_lock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_lock(m);
    if (rc == EOWNERDEAD)
        pthread_mutex_consistent(m);
    else if (rc != 0) {
        fprintf(stderr, "kurir: shared mutex: error %d\n", rc);
        abort();
    }
}

void shm_unlock(pthread_mutex_t *m)
{
    pthread_mutex_unlock(m);
}
