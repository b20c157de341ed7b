/* privdrop.h - dropping root after the listeners are bound (user, group,
 * run_as_root configuration keys). */
#ifndef KURIR_PRIVDROP_H
#define KURIR_PRIVDROP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum privdrop_result {
    PRIVDROP_FAILED = -1,     /* err says why; the server must not run */
    PRIVDROP_UNPRIVILEGED,    /* not root to begin with: nothing to do */
    PRIVDROP_DROPPED,         /* now running as info->uid / info->gid */
    PRIVDROP_ROOT_ALLOWED,    /* root, because the script set run_as_root */
    PRIVDROP_ROOT_WARN,       /* root on unprivileged ports only, no user: allowed, log a warning */
};

/* What the configuration asks for (user, group, run_as_root, spool). */
struct privdrop_want {
    const char *user, *group;     /* NULL: not set */
    bool run_as_root;
    bool privileged_port;         /* a listener on a port below 1024 (0 is never one) */
    const char *spool;            /* must stay writable by user */
};

struct privdrop_info {
    uid_t uid;
    gid_t gid;
};

/* Apply c->user / c->group / c->run_as_root. Call once, after binding the
 * listeners and loading the TLS keys. */
enum privdrop_result privdrop_apply(const struct privdrop_want *c, struct privdrop_info *info, char *err,
                                    size_t cap);

#endif
