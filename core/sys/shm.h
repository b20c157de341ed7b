/* shm.h - memory shared by the master and its workers: anonymous
 * MAP_SHARED mappings made before fork, and robust process-shared mutexes
 * (a worker killed while holding one does not wedge the others). */
#ifndef KURIR_SHM_H
#define KURIR_SHM_H

#include <pthread.h>
#include <stddef.h>

/* A zeroed shared mapping of size bytes (pages are touched lazily), or
 * NULL with errno set. */
void *shm_map(size_t size);
void shm_unmap(void *p, size_t size);
void shm_mutex_init(pthread_mutex_t *m);
/* Lock m; when its last owner died holding it, mark it consistent (the
 * caller's data may be half-updated by the dead owner: callers keep each
 * owner's writes to what that owner alone uses, or tolerate it). */
void shm_lock(pthread_mutex_t *m);
void shm_unlock(pthread_mutex_t *m);

#endif
