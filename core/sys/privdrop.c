/* privdrop.c - giving up root once the listeners are bound and the TLS keys
 * are read (configuration keys user, group, run_as_root).
 *
 * Owns the policy: with `user` set, kurir started as root drops to that user
 * (setgroups to the one group, setgid, setuid) and checks that root cannot
 * be regained; without it, staying root is refused when a privileged port
 * (< 1024) is bound unless the script sets run_as_root = true. Root on an
 * unprivileged port only (the developer mock, test runs) is allowed with a
 * warning. Nothing here logs: the caller reports what happened. */
#include "sys/privdrop.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A decimal id ("65534"), or -1. */
static long numeric_id(const char *s)
{
    if (!*s || strlen(s) > 10)
        return -1;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

static int resolve(const struct privdrop_want *c, uid_t *uid, gid_t *gid, char *err, size_t cap)
{
    const struct passwd *pw = getpwnam(c->user);
    long n = numeric_id(c->user);
    if (!pw && n >= 0)
        pw = getpwuid((uid_t)n);
    if (pw) {
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
    } else if (n >= 0) {
        *uid = (uid_t)n;
        if (!c->group) {
            snprintf(err, cap, "user = \"%s\": no such user in the password database; give group too",
                     c->user);
            return -1;
        }
    } else {
        snprintf(err, cap, "user = \"%s\": no such user", c->user);
        return -1;
    }
    if (c->group) {
        const struct group *gr = getgrnam(c->group);
        long g = numeric_id(c->group);
        if (gr)
            *gid = gr->gr_gid;
        else if (g >= 0)
            *gid = (gid_t)g;
        else {
            snprintf(err, cap, "group = \"%s\": no such group", c->group);
            return -1;
        }
    }
    if (*uid == 0) {
        snprintf(err, cap, "user = \"%s\" is root; leave user out and set run_as_root = true instead",
                 c->user);
        return -1;
    }
    return 0;
}

enum privdrop_result privdrop_apply(const struct privdrop_want *c, struct privdrop_info *info, char *err,
                                    size_t cap)
{
    memset(info, 0, sizeof(*info));
    info->uid = geteuid();
    info->gid = getegid();
    if (!c->user) {
        if (info->uid != 0)
            return PRIVDROP_UNPRIVILEGED;
        if (c->run_as_root)
            return PRIVDROP_ROOT_ALLOWED;
        if (c->privileged_port) {
            snprintf(err, cap, "refusing to run as root with a listener on a port below 1024: set "
                               "user = \"...\" (kurir drops to it after binding), give the binary "
                               "CAP_NET_BIND_SERVICE and start it as that user, or set "
                               "run_as_root = true");
            return PRIVDROP_FAILED;
        }
        return PRIVDROP_ROOT_WARN;
    }
    uid_t uid;
    gid_t gid;
    if (resolve(c, &uid, &gid, err, cap) < 0)
        return PRIVDROP_FAILED;
    info->uid = uid;
    info->gid = gid;
    if (geteuid() != 0) {
        if (geteuid() == uid && getuid() == uid)
            return PRIVDROP_UNPRIVILEGED;   /* started as that user already */
        snprintf(err, cap, "user = \"%s\": switching to uid %lu needs kurir to start as root "
                           "(running as uid %lu)", c->user, (unsigned long)uid, (unsigned long)geteuid());
        return PRIVDROP_FAILED;
    }
    /* groups first: after setuid there is no right left to change them */
    if (setgroups(1, &gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
        snprintf(err, cap, "cannot switch to user %s (uid %lu, gid %lu): %s", c->user,
                 (unsigned long)uid, (unsigned long)gid, strerror(errno));
        return PRIVDROP_FAILED;
    }
    gid_t groups[2];
    int ngroups = getgroups(2, groups);
    if (setuid(0) == 0 || getuid() != uid || geteuid() != uid || getgid() != gid ||
        getegid() != gid || ngroups != 1 || groups[0] != gid) {
        snprintf(err, cap, "privileges still held after switching to user %s", c->user);
        return PRIVDROP_FAILED;
    }
    if (access(c->spool, W_OK | X_OK) != 0) {
        snprintf(err, cap, "spool %s is not writable by user %s: %s", c->spool, c->user,
                 strerror(errno));
        return PRIVDROP_FAILED;
    }
    return PRIVDROP_DROPPED;
}
