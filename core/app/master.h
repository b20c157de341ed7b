/* master.h - the master process that runs `workers = N` (N > 1) worker
 * processes on the listeners it binds. */
#ifndef KURIR_MASTER_H
#define KURIR_MASTER_H

#include <stdbool.h>
#include "lua/engine.h"

struct master_opts {
    const char *script;
    int argc;
    char **argv;
    char **listen;       /* -l options */
    int nlisten;
    int workers;         /* N > 1 */
};

/* The number of workers: -w (cli > 0), else the script's `workers`, else
 * the number of online cores. */
int master_workers(const struct engine *e, int cli);
/* Run the master with the checked engine e (taken over). Returns the exit
 * code; *worker is set in a worker process, which returns here when it is
 * done so that main can free what it owns and exit with that code. */
int master_run(struct engine *e, const struct master_opts *o, bool *worker);

#endif
