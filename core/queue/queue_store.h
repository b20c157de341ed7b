/* queue_store.h - the queue directory and the threads that touch the disk
 * for the event loop. Commits (a new message: write tmp/ID, fsync, rename
 * to msg/ID, fsync msg/) and status appends are grouped: a thread takes
 * every pending one at once and makes them durable with one sync, so many
 * sessions committing together share the disk round trip (group commit).
 * Other blocking work (Maildir and mbox deliveries) runs on the same
 * threads one job at a time. Completions come back to the loop through an
 * ev_async; a job's done callback runs there and owns the job. */
#ifndef KURIR_QUEUE_STORE_H
#define KURIR_QUEUE_STORE_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include "sys/spool.h"
#include "proto/util.h"

enum qjob_kind { QJ_COMMIT, QJ_STATUS, QJ_REMOVE, QJ_RUN };

struct qjob;
typedef void (*qjob_fn)(struct qjob *j);

struct qjob {
    struct qjob *next;
    enum qjob_kind kind;
    char id[24];
    struct buf head;        /* COMMIT: envelope + added headers; STATUS: the lines */
    struct spool body;      /* COMMIT: the message body (owned) */
    bool has_body;
    bool link;              /* COMMIT: head = envelope (env_len bytes) + added headers,
                             * laid out in front of the spilled body's own file
                             * (body_off: where the added headers start), which is
                             * linked as tmp/ID, or copied when it cannot be */
    bool linked;            /* COMMIT: it was linked (for the log) */
    size_t env_len;
    uint64_t body_off;
    qjob_fn run;            /* RUN: called on a thread */
    qjob_fn done;           /* called in the loop; owns the job */
    void *arg;
    void *data;
    int err;                /* errno of a failure, 0 on success */
    char errtext[256];
    struct queue_store *store;
};

struct queue_store {
    char *dir;
    int dirfd, tmpfd, msgfd, stfd;
    struct ev_loop *loop;
    ev_async async;
    pthread_t th[2];
    int nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct qjob *grouped, *grouped_tail;   /* COMMIT and STATUS: taken all at once */
    struct qjob *todo, *todo_tail;         /* RUN */
    struct qjob *done, *done_tail;
    bool stop;
    uint64_t batches, grouped_jobs;        /* for the log: jobs per sync */
    uint64_t syncs;                        /* fsync/fdatasync calls of the groups */
};

/* Create dir/{tmp,msg,st} as needed, remove leftovers in tmp/ (half-written
 * commits), start the threads. -1 with a reason in err. */
/* Remove the half-written commits in tmp/ (they never got a 250): all of
 * them (min_age 0, only for a process that holds the queue alone), or
 * those not written for min_age seconds (other workers may be committing). */
void queue_store_clean_tmp(struct queue_store *qs, double min_age);
int queue_store_open(struct queue_store *qs, struct ev_loop *loop, const char *dir, char *err, size_t cap);
void queue_store_close(struct queue_store *qs);   /* finishes queued jobs first */
struct qjob *queue_store_job(struct queue_store *qs, enum qjob_kind kind, qjob_fn done, void *arg);
void queue_store_submit(struct queue_store *qs, struct qjob *j);
void queue_store_job_free(struct qjob *j);
/* path helpers: dir/sub/id */
void queue_store_path(const char *dir, const char *sub, const char *id, char *out, size_t cap);

#endif
