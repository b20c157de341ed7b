/* maildir.c - delivery into a Maildir (cr.yp.to/proto/maildir.html): the
 * message is written to tmp/<unique>, fsync'ed, linked into new/ and new/
 * is fsync'ed; only then does maildir_deliver() return 0. Directories it
 * creates are made durable by fsync'ing their parents. Unique names come
 * from time, pid and 32 random bits (getrandom), with O_EXCL retries: no
 * counter, no global state. Owns nothing beyond one call; reads the body
 * through spool_copy_to(). */
#include "sys/maildir.h"
#include "proto/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAILDIR_NAME_TRIES 5

static const char *const maildir_subdirs[] = { "tmp", "new", "cur" };

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* mkdir path; when it was created, fsync the directory that holds it.
 * An existing directory is fine. 0 or -1 with errno. */
static int mkdir_durable(char *path, size_t len)
{
    if (mkdir(path, 0700) < 0) {
        if (errno != EEXIST)
            return -1;
        struct stat st;
        if (stat(path, &st) < 0)
            return -1;
        if (!S_ISDIR(st.st_mode)) {
            errno = ENOTDIR;
            return -1;
        }
        return 0;
    }
    /* Parent of path: up to the last '/', "/" for "/x", "." for "x". */
    size_t cut = len;
    while (cut > 0 && path[cut - 1] != '/')
        cut--;
    while (cut > 1 && path[cut - 1] == '/')
        cut--;
    if (cut == 0)
        return fsync_dir(".");
    char save = path[cut];
    path[cut] = '\0';
    int rc = fsync_dir(path);
    path[cut] = save;
    return rc;
}

int maildir_prepare(const char *dir)
{
    size_t dlen = dir ? strlen(dir) : 0;
    if (dlen == 0) {
        errno = ENOENT;
        return -1;
    }
    if (dlen + sizeof("/tmp") > PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    char path[PATH_MAX];
    memcpy(path, dir, dlen + 1);
    while (dlen > 1 && path[dlen - 1] == '/')
        path[--dlen] = '\0';

    /* Every leading component, then the whole path (mkdir -p). */
    for (size_t i = 1; i <= dlen; i++) {
        if (i < dlen && (path[i] != '/' || path[i - 1] == '/'))
            continue;
        char save = path[i];
        path[i] = '\0';
        int rc = mkdir_durable(path, i);
        path[i] = save;
        if (rc < 0)
            return -1;
    }
    for (size_t k = 0; k < sizeof(maildir_subdirs) / sizeof(maildir_subdirs[0]); k++) {
        snprintf(path + dlen, sizeof(path) - dlen, "/%s", maildir_subdirs[k]);
        if (mkdir_durable(path, strlen(path)) < 0)
            return -1;
    }
    return 0;
}

/* The host part of a unique name, with '/' and ':' encoded as the Maildir
 * convention asks (\057, \072) and other unsafe bytes as '_'. */
static void host_part(char *out, size_t cap)
{
    char host[256];
    if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    size_t o = 0;
    for (size_t i = 0; host[i] && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c == '/' || c == ':') {
            o += (size_t)snprintf(out + o, cap - o, "\\%03o", c);
        } else {
            out[o++] = (c > 0x20 && c < 0x7f) ? (char)c : '_';
        }
    }
    out[o] = '\0';
}

static void unique_name(char *out, size_t cap, const char *host)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint32_t r;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        struct timespec m;
        clock_gettime(CLOCK_MONOTONIC, &m);
        r = (uint32_t)m.tv_nsec ^ (uint32_t)((uintptr_t)&m >> 4);
    }
    snprintf(out, cap, "%lld.M%ldP%ldR%08x.%s", (long long)ts.tv_sec, ts.tv_nsec / 1000L,
             (long)getpid(), (unsigned)r, host);
}

static void set_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static bool path_fits(char *dst, const char *dir, const char *sub, const char *name)
{
    int n = snprintf(dst, PATH_MAX, "%s/%s%s%s", dir, sub, name ? "/" : "", name ? name : "");
    return n > 0 && n < PATH_MAX;
}

int maildir_deliver(const char *dir, const char *prefix, size_t prefix_len, struct spool *body,
                    char *name_out, size_t name_cap, char *err, size_t err_cap)
{
    char host[256], name[512];
    char tmp_path[PATH_MAX], new_path[PATH_MAX], new_dir[PATH_MAX];
    int fd = -1, saved = 0;
    bool tmp_made = false, new_made = false, prepared = false;

    set_err(err, err_cap, "ok");
    if (!dir || !*dir || (prefix_len && !prefix)) {
        errno = EINVAL;
        set_err(err, err_cap, "no maildir given");
        goto fail;
    }
    host_part(host, sizeof(host));

    /* Bounded: MAILDIR_NAME_TRIES names, plus one retry after creating
     * the Maildir when tmp/ was missing. */
    for (int tries = 0; fd < 0 && tries < MAILDIR_NAME_TRIES; tries++) {
        unique_name(name, sizeof(name), host);
        if (!path_fits(tmp_path, dir, "tmp", name) || !path_fits(new_path, dir, "new", name) ||
            !path_fits(new_dir, dir, "new", NULL)) {
            errno = ENAMETOOLONG;
            set_err(err, err_cap, "maildir path too long");
            goto fail;
        }
        fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0)
            break;
        if (errno == ENOENT && !prepared) {
            prepared = true;
            if (maildir_prepare(dir) < 0) {
                set_err(err, err_cap, "cannot create maildir %s: %s", dir, strerror(errno));
                goto fail;
            }
            tries--;
            continue;
        }
        if (errno != EEXIST) {
            set_err(err, err_cap, "cannot create %s: %s", tmp_path, strerror(errno));
            goto fail;
        }
    }
    if (fd < 0) {
        set_err(err, err_cap, "no unique name in %s/tmp after %d tries", dir, MAILDIR_NAME_TRIES);
        goto fail;
    }
    tmp_made = true;

    if (name_out && (size_t)snprintf(name_out, name_cap, "new/%s", name) >= name_cap) {
        errno = ENAMETOOLONG;
        set_err(err, err_cap, "file name buffer too small");
        goto fail;
    }
    if (prefix_len && write_all(fd, prefix, prefix_len) < 0) {
        set_err(err, err_cap, "write %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    if (body && spool_copy_to(body, fd) < 0) {
        set_err(err, err_cap, "copy body to %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    if (fsync(fd) < 0) {
        set_err(err, err_cap, "fsync %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    int rc = close(fd);
    fd = -1;
    if (rc < 0) {
        set_err(err, err_cap, "close %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    /* link() refuses to replace an existing new/ file; rename() is for
     * filesystems without hard links. */
    if (link(tmp_path, new_path) == 0) {
        new_made = true;
        unlink(tmp_path);
        tmp_made = false;
    } else if (errno == EPERM || errno == ENOSYS || errno == EOPNOTSUPP) {
        if (rename(tmp_path, new_path) < 0) {
            set_err(err, err_cap, "rename to %s: %s", new_path, strerror(errno));
            goto fail;
        }
        new_made = true;
        tmp_made = false;
    } else {
        set_err(err, err_cap, "link to %s: %s", new_path, strerror(errno));
        goto fail;
    }
    if (fsync_dir(new_dir) < 0) {
        set_err(err, err_cap, "fsync %s: %s", new_dir, strerror(errno));
        goto fail;
    }
    return 0;

fail:
    /* Not durable means not delivered: remove what we made. */
    saved = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        unlink(tmp_path);
    if (new_made)
        unlink(new_path);
    if (name_out && name_cap)
        name_out[0] = '\0';
    errno = saved;
    return -1;
}

static bool delivered_before(const char *dir, const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    if (path_fits(p, dir, "new", name) && stat(p, &st) == 0)
        return true;
    char cur[PATH_MAX];
    if (!path_fits(cur, dir, "cur", NULL))
        return false;
    DIR *d = opendir(cur);
    if (!d)
        return false;
    size_t n = strlen(name);
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d)))
        found = !strncmp(de->d_name, name, n) && (de->d_name[n] == '\0' || de->d_name[n] == ':');
    closedir(d);
    return found;
}

int maildir_deliver_named(const char *dir, const char *name, const char *prefix, size_t prefix_len, int src_fd,
                          uint64_t src_off, char *err, size_t err_cap)
{
    char tmp_path[PATH_MAX], new_path[PATH_MAX], new_dir[PATH_MAX];
    int fd = -1, saved;
    set_err(err, err_cap, "ok");
    if (!path_fits(tmp_path, dir, "tmp", name) || !path_fits(new_path, dir, "new", name) ||
        !path_fits(new_dir, dir, "new", NULL)) {
        errno = ENAMETOOLONG;
        set_err(err, err_cap, "maildir path too long");
        return -1;
    }
    if (maildir_prepare(dir) < 0) {
        set_err(err, err_cap, "cannot create maildir %s: %s", dir, strerror(errno));
        return -1;
    }
    if (delivered_before(dir, name))
        return 0;
    fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        set_err(err, err_cap, "cannot create %s: %s", tmp_path, strerror(errno));
        return -1;
    }
    if (prefix_len && write_all(fd, prefix, prefix_len) < 0) {
        set_err(err, err_cap, "write %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    char chunk[65536];
    for (uint64_t off = src_off;;) {
        ssize_t r = pread(src_fd, chunk, sizeof(chunk), (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            set_err(err, err_cap, "read the queued message: %s", strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        if (write_all(fd, chunk, (size_t)r) < 0) {
            set_err(err, err_cap, "write %s: %s", tmp_path, strerror(errno));
            goto fail;
        }
        off += (uint64_t)r;
    }
    if (fsync(fd) < 0) {
        set_err(err, err_cap, "fsync %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    if (link(tmp_path, new_path) < 0 && errno != EEXIST) {
        set_err(err, err_cap, "link to %s: %s", new_path, strerror(errno));
        goto fail;
    }
    unlink(tmp_path);
    if (fsync_dir(new_dir) < 0) {
        set_err(err, err_cap, "fsync %s: %s", new_dir, strerror(errno));
        return -1;   /* the file stays: the retry finds it and only syncs again */
    }
    return 0;
fail:
    saved = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp_path);
    errno = saved;
    return -1;
}
