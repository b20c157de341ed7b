/* test_spool_maildir.c - the spool file (buffered appends of every size,
 * read back by pread and by copy to files and pipes, sticky errors, no
 * named file left behind) and Maildir delivery (one file in new/, empty
 * tmp/, exact contents, parents created, and failure paths that return -1
 * with a reason and leave no file). Works in a mkdtemp dir under /tmp,
 * removed at the end.
 *
 * Durability is observed through fsync itself: this binary is linked with
 * -Wl,--wrap=fsync (CMakeLists.txt), so every fsync the code under test
 * makes goes through __wrap_fsync below, which records what the fd was
 * and can be told to fail. */
#include "sys/maildir.h"
#include "sys/spool.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MB5 (5u * 1024u * 1024u)

/* ---- the fsync wrapper ------------------------------------------------ */

int __real_fsync(int fd);
int __wrap_fsync(int fd);

#define FSYNC_LOG_MAX 16

struct fsync_seen {
    dev_t dev;
    ino_t ino;
    bool dir;
    int entries;   /* a directory: its entries at the time of the fsync */
};

static struct fsync_seen fsync_log[FSYNC_LOG_MAX];
static int fsync_count;
static bool fsync_fail_dirs;   /* make every directory fsync fail with EIO */

static int count_entries(const char *dir);

int __wrap_fsync(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && fsync_count < FSYNC_LOG_MAX) {
        struct fsync_seen *f = &fsync_log[fsync_count++];
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        f->dir = S_ISDIR(st.st_mode);
        f->entries = -1;
        if (f->dir) {
            char path[64];
            snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
            f->entries = count_entries(path);
        }
        if (f->dir && fsync_fail_dirs) {
            errno = EIO;
            return -1;
        }
    }
    return __real_fsync(fd);
}

static void fsync_log_reset(void)
{
    fsync_count = 0;
    fsync_fail_dirs = false;
}

/* The index in fsync_log of the fsync of path, or -1. */
static int fsync_find(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    for (int i = 0; i < fsync_count; i++)
        if (fsync_log[i].dev == st.st_dev && fsync_log[i].ino == st.st_ino)
            return i;
    return -1;
}

/* Deterministic body bytes: byte i of a body is pattern(i). */
static unsigned char pattern(uint64_t i)
{
    return (unsigned char)((i * 2654435761u) >> 13 ^ i);
}

static char *make_body(size_t n)
{
    char *p = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)pattern(i);
    return p;
}

/* Number of entries in dir other than . and .., or -1. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* Whole file into a fresh buffer; false when it cannot be read. */
static bool slurp_fd(int fd, struct buf *out)
{
    for (int i = 0; i < 100000; i++) {
        char *p = buf_reserve(out, 65536);
        ssize_t r = read(fd, p, 65536);
        if (r < 0)
            return false;
        if (r == 0)
            return true;
        buf_commit(out, (size_t)r);
    }
    return false;
}

static bool slurp(const char *path, struct buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = slurp_fd(fd, out);
    close(fd);
    return ok;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Fill a spool with n pattern bytes in chunks whose sizes cycle through
 * `chunks`, then finish it. */
static int fill_spool(struct spool *s, const char *body, size_t n, const size_t *chunks,
                      size_t nchunks)
{
    size_t off = 0, k = 0;
    while (off < n) {
        size_t c = chunks[k++ % nchunks];
        if (c > n - off)
            c = n - off;
        spool_append(s, body + off, c);
        off += c;
    }
    return spool_finish(s);
}

/* pread the whole spool back in pieces of `piece` bytes and compare. */
static bool readback_ok(struct spool *s, const char *body, size_t n, size_t piece)
{
    char *got = xmalloc(piece);
    bool ok = true;
    for (size_t off = 0; off < n && ok; off += piece) {
        size_t want = piece < n - off ? piece : n - off;
        ssize_t r = spool_pread(s, got, want, off);
        ok = r == (ssize_t)want && memcmp(got, body + off, want) == 0;
    }
    /* Past the end: 0 bytes. */
    ssize_t r = spool_pread(s, got, piece, n);
    ok = ok && r == 0;
    free(got);
    return ok;
}

/* Copy the spool into a new file in dir and compare with body. */
static bool copy_ok(struct spool *s, const char *dir, const char *body, size_t n, bool append)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/copy", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (append ? O_APPEND : 0), 0600);
    if (fd < 0)
        return false;
    /* Something before the copy: the copy goes at the file position. */
    bool ok = write(fd, "HDR\n", 4) == 4 && spool_copy_to(s, fd) == 0;
    close(fd);
    struct buf got;
    buf_init(&got);
    ok = ok && slurp(path, &got) && buf_used(&got) == n + 4 &&
         memcmp(buf_peek(&got), "HDR\n", 4) == 0 && (n == 0 || memcmp(buf_peek(&got) + 4, body, n) == 0);
    buf_free(&got);
    unlink(path);
    return ok;
}

static void test_spool_sizes(const char *root)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/spool", root);
    CHECK(mkdir(dir, 0700) == 0);

    static const size_t small_chunks[] = { 1, 7, 100, 1000, 4093 };
    static const size_t big_chunks[] = { 65535, 65536, 65537, 3, 200000, 1 };
    static const struct {
        size_t size;
        const size_t *chunks;
        size_t nchunks;
    } cases[] = {
        { 0, small_chunks, 5 },
        { 11, small_chunks, 5 },
        { 65536, small_chunks, 5 },        /* exactly one buffer */
        { 65537, small_chunks, 5 },        /* one byte past it */
        { 150000, small_chunks, 5 },       /* > 64 KiB in small appends */
        { 150000, big_chunks, 6 },         /* > 64 KiB in direct writes */
        { MB5, big_chunks, 6 },
        { MB5, small_chunks, 5 },
    };
    char *body = make_body(MB5);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct spool s;
        spool_init(&s);
        if (!CHECK(spool_open(&s, dir) == 0))
            continue;
        /* Nothing named in the spool directory, ever. */
        CHECK(count_entries(dir) == 0);
        CHECK(fill_spool(&s, body, cases[i].size, cases[i].chunks, cases[i].nchunks) == 0);
        CHECK(s.size == cases[i].size);
        CHECK(s.err == 0);
        if (cases[i].size <= 64 * 1024) {
            CHECK(s.fd == -1);   /* small bodies never touch the disk */
            CHECK(spool_file_offset(&s) == 0);
        } else {
            struct stat st;
            CHECK(fstat(s.fd, &st) == 0 &&
                  (uint64_t)st.st_size + buf_used(&s.wbuf) == SPOOL_FILE_RESERVE + cases[i].size);
            CHECK(spool_file_offset(&s) == SPOOL_FILE_RESERVE);
            CHECK((st.st_mode & 0777) == 0600);
        }
        if (!CHECK(readback_ok(&s, body, cases[i].size, 4096)))
            fprintf(stderr, "    case %zu (size %zu): pread mismatch\n", i, cases[i].size);
        CHECK(readback_ok(&s, body, cases[i].size, 1000000));
        if (!CHECK(copy_ok(&s, dir, body, cases[i].size, false)))
            fprintf(stderr, "    case %zu (size %zu): copy mismatch\n", i, cases[i].size);
        /* O_APPEND target: copy_file_range refuses it; the fallback must not. */
        CHECK(copy_ok(&s, dir, body, cases[i].size, true));
        CHECK(count_entries(dir) == 0);
        spool_close(&s);
        CHECK(s.fd == -1);
        spool_close(&s);   /* idempotent */
        CHECK(s.fd == -1);
    }
    free(body);
    CHECK(count_entries(dir) == 0);
}

/* spool_dup shares the file (one more reference): the body stays readable
 * through the second handle after the first is closed. spool_link gives
 * the unnamed file a name in another directory of the same file system:
 * the same inode, the body at SPOOL_FILE_RESERVE, zeros before it. */
static void test_spool_share_link(const char *root)
{
    char dir[512], qdir[512], name[600];
    snprintf(dir, sizeof(dir), "%s/share", root);
    snprintf(qdir, sizeof(qdir), "%s/queue", root);
    CHECK(mkdir(dir, 0700) == 0 && mkdir(qdir, 0700) == 0);
    size_t n = 200000;
    char *body = make_body(n);
    struct spool s, d;
    spool_init(&s);
    CHECK(spool_open(&s, dir) == 0);
    spool_append(&s, body, n);
    CHECK(spool_finish(&s) == 0);
    CHECK(spool_dup(&s, &d) == 0);
    CHECK(d.fd == s.fd);
    spool_close(&s);
    CHECK(readback_ok(&d, body, n, 65536));   /* still open: the dup holds it */

    int qfd = open(qdir, O_RDONLY | O_DIRECTORY);
    CHECK(spool_link(&d, qfd, "ID1") == 0);
    struct stat a, b;
    snprintf(name, sizeof(name), "%s/ID1", qdir);
    CHECK(fstat(d.fd, &a) == 0 && stat(name, &b) == 0 && a.st_ino == b.st_ino && b.st_nlink == 1);
    struct buf got;
    buf_init(&got);
    CHECK(slurp(name, &got));
    CHECK(buf_used(&got) == SPOOL_FILE_RESERVE + n);
    bool zeros = true;
    for (size_t i = 0; i < SPOOL_FILE_RESERVE && i < buf_used(&got); i++)
        zeros = zeros && buf_peek(&got)[i] == 0;
    CHECK(zeros);
    CHECK(buf_used(&got) == SPOOL_FILE_RESERVE + n &&
          memcmp(buf_peek(&got) + SPOOL_FILE_RESERVE, body, n) == 0);
    buf_free(&got);
    CHECK(spool_link(&d, qfd, "ID1") == -1 && errno == EEXIST);
    CHECK(count_entries(dir) == 0);   /* the spool directory stays empty */
    spool_close(&d);
    CHECK(unlink(name) == 0);

    /* a body in memory has no file to link */
    spool_init(&s);
    CHECK(spool_open(&s, dir) == 0);
    spool_append(&s, "small", 5);
    CHECK(spool_finish(&s) == 0);
    CHECK(spool_link(&s, qfd, "ID2") == -1 && errno == EBADF);
    spool_close(&s);
    close(qfd);
    free(body);
}

static void test_spool_pipe(const char *root)
{
    /* A pipe target: neither copy_file_range nor a seekable file. */
    struct spool s;
    spool_init(&s);
    if (!CHECK(spool_open(&s, root) == 0))
        return;
    char *body = make_body(30000);
    spool_append(&s, body, 30000);
    CHECK(spool_finish(&s) == 0);
    int fds[2];
    if (CHECK(pipe(fds) == 0)) {
        CHECK(fcntl(fds[1], F_SETPIPE_SZ, 65536) >= 0);
        CHECK(spool_copy_to(&s, fds[1]) == 0);
        close(fds[1]);
        struct buf got;
        buf_init(&got);
        CHECK(slurp_fd(fds[0], &got));
        CHECK_BYTES(buf_peek(&got), buf_used(&got), body, 30000);
        buf_free(&got);
        close(fds[0]);
    }
    free(body);
    spool_close(&s);
}

static void test_spool_errors(const char *root)
{
    char path[4096];

    /* Missing directory: -1 with errno, nothing open. */
    struct spool s;
    spool_init(&s);
    snprintf(path, sizeof(path), "%s/does/not/exist", root);
    errno = 0;
    CHECK(spool_open(&s, path) == -1 && errno == ENOENT);
    CHECK(s.fd == -1);

    /* Appending to a spool that was never opened is a sticky error. */
    spool_append(&s, "abc", 3);
    CHECK(s.size == 3);
    errno = 0;
    CHECK(spool_finish(&s) == -1 && errno == EBADF);
    spool_close(&s);

    /* A write error is sticky: appends keep counting, finish reports it,
     * reads of the body are refused. Writes fail because the fd underneath
     * is swapped for a read-only one. */
    spool_init(&s);
    if (!CHECK(spool_open(&s, root) == 0))
        return;
    char *first = make_body(70000);
    spool_append(&s, first, 70000);   /* past 64 KiB: the body is now a file */
    free(first);
    CHECK(s.fd >= 0 && s.err == 0);
    int ro = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(ro >= 0 && dup2(ro, s.fd) == s.fd);
    if (ro >= 0)
        close(ro);
    char *big = make_body(100000);
    spool_append(&s, big, 100000);   /* direct write: fails now */
    CHECK(s.err == EBADF);
    spool_append(&s, "more", 4);
    CHECK(s.size == 170004);
    errno = 0;
    CHECK(spool_finish(&s) == -1 && errno == EBADF);
    CHECK(spool_copy_to(&s, STDERR_FILENO) == -1);
    free(big);
    spool_close(&s);
    spool_close(&s);
}

/* Only Maildir-looking names: "<sec>.M<usec>P<pid>R<8 hex>.<host>". */
static bool name_ok(const char *name)
{
    if (strncmp(name, "new/", 4) != 0)
        return false;
    const char *p = name + 4;
    char *end;
    strtoull(p, &end, 10);
    if (end == p || *end != '.' || end[1] != 'M')
        return false;
    p = end + 2;
    strtoull(p, &end, 10);
    if (end == p || *end != 'P')
        return false;
    p = end + 1;
    if ((long)strtol(p, &end, 10) != (long)getpid() || *end != 'R')
        return false;
    p = end + 1;
    for (int i = 0; i < 8; i++)
        if (!strchr("0123456789abcdef", p[i]))
            return false;
    return p[8] == '.' && p[9] != '\0' && !strchr(p + 9, '/') && !strchr(p + 9, ':');
}

static void check_maildir_file(const char *md, const char *name, const char *prefix,
                               const char *body, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", md, name);
    struct buf got;
    buf_init(&got);
    CHECK(slurp(path, &got));
    size_t plen = strlen(prefix);
    CHECK(buf_used(&got) == plen + n);
    if (buf_used(&got) == plen + n) {
        CHECK_BYTES(buf_peek(&got), plen, prefix, plen);
        CHECK(n == 0 || memcmp(buf_peek(&got) + plen, body, n) == 0);
    }
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_nlink == 1);
    buf_free(&got);
}

static int count_sub(const char *md, const char *sub)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", md, sub);
    return count_entries(path);
}

static void test_maildir_prepare(const char *root)
{
    char md[4096], path[4096];
    snprintf(md, sizeof(md), "%s/p/q/r/Maildir/", root);
    CHECK(maildir_prepare(md) == 0);
    static const char *const subs[] = { "p", "p/q", "p/q/r", "p/q/r/Maildir",
                                        "p/q/r/Maildir/tmp", "p/q/r/Maildir/new",
                                        "p/q/r/Maildir/cur" };
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", root, subs[i]);
        if (!CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700))
            fprintf(stderr, "    %s\n", path);
    }
    /* Again: existing directories are fine. */
    CHECK(maildir_prepare(md) == 0);

    /* Under a regular file: ENOTDIR. */
    snprintf(path, sizeof(path), "%s/plain", root);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    snprintf(md, sizeof(md), "%s/plain/Maildir", root);
    errno = 0;
    CHECK(maildir_prepare(md) == -1 && errno == ENOTDIR);
    /* The Maildir path itself a regular file. */
    errno = 0;
    CHECK(maildir_prepare(path) == -1 && errno == ENOTDIR);
    errno = 0;
    CHECK(maildir_prepare("") == -1 && errno == ENOENT);
}

static void test_maildir_deliver(const char *root)
{
    static const char prefix[] = "Return-Path: <a@example.test>\r\nX-Test: 1\r\n";
    char md[4096], name[512], err[256];
    snprintf(md, sizeof(md), "%s/mail", root);
    CHECK(maildir_prepare(md) == 0);

    size_t n = 1000;
    char *body = make_body(MB5);
    struct spool s;
    spool_init(&s);
    if (!CHECK(spool_open(&s, root) == 0))
        goto out;
    spool_append(&s, body, n);
    CHECK(spool_finish(&s) == 0);

    CHECK(maildir_deliver(md, prefix, strlen(prefix), &s, name, sizeof(name), err, sizeof(err)) ==
          0);
    if (!CHECK(name_ok(name)))
        fprintf(stderr, "    name \"%s\"\n", name);
    CHECK(count_sub(md, "new") == 1);
    CHECK(count_sub(md, "tmp") == 0);
    CHECK(count_sub(md, "cur") == 0);
    check_maildir_file(md, name, prefix, body, n);

    /* The same spool again: a second, different file with the same bytes. */
    char name2[512];
    CHECK(maildir_deliver(md, prefix, strlen(prefix), &s, name2, sizeof(name2), err,
                          sizeof(err)) == 0);
    CHECK(strcmp(name, name2) != 0);
    CHECK(count_sub(md, "new") == 2);
    CHECK(count_sub(md, "tmp") == 0);
    check_maildir_file(md, name2, prefix, body, n);
    spool_close(&s);

    /* 5 MB body, no prefix, into a Maildir that does not exist yet. */
    snprintf(md, sizeof(md), "%s/fresh/deep/Maildir", root);
    spool_init(&s);
    if (!CHECK(spool_open(&s, root) == 0))
        goto out;
    for (size_t off = 0; off < MB5; off += 1000)
        spool_append(&s, body + off, MB5 - off < 1000 ? MB5 - off : 1000);
    CHECK(spool_finish(&s) == 0);
    CHECK(maildir_deliver(md, "", 0, &s, name, sizeof(name), err, sizeof(err)) == 0);
    CHECK(name_ok(name));
    CHECK(count_sub(md, "new") == 1);
    CHECK(count_sub(md, "tmp") == 0);
    CHECK(count_sub(md, "cur") == 0);
    check_maildir_file(md, name, "", body, MB5);
    spool_close(&s);

    /* Empty body. */
    spool_init(&s);
    if (CHECK(spool_open(&s, root) == 0)) {
        CHECK(spool_finish(&s) == 0);
        snprintf(md, sizeof(md), "%s/empty", root);
        CHECK(maildir_deliver(md, prefix, strlen(prefix), &s, name, sizeof(name), err,
                              sizeof(err)) == 0);
        check_maildir_file(md, name, prefix, "", 0);
        spool_close(&s);
    }
out:
    free(body);
}

/* A delivery fsyncs the message file, then new/ once the file is in it,
 * all before maildir_deliver returns 0; a failed fsync of new/ is a failed
 * delivery that leaves no file. */
static void test_maildir_fsync(const char *root)
{
    static const char prefix[] = "X-Test: fsync\r\n";
    char md[1024], path[2048], name[512], err[256];
    snprintf(md, sizeof(md), "%s/fsync", root);
    CHECK(maildir_prepare(md) == 0);
    struct spool s;
    spool_init(&s);
    if (!CHECK(spool_open(&s, root) == 0))
        return;
    spool_append(&s, "body\r\n", 6);
    CHECK(spool_finish(&s) == 0);

    fsync_log_reset();
    CHECK(maildir_deliver(md, prefix, strlen(prefix), &s, name, sizeof(name), err, sizeof(err)) == 0);
    snprintf(path, sizeof(path), "%s/%s", md, name);
    int file = fsync_find(path);   /* link() keeps the inode of the tmp/ file */
    snprintf(path, sizeof(path), "%s/new", md);
    int dir = fsync_find(path);
    if (!CHECK(file >= 0 && dir >= 0))
        fprintf(stderr, "    fsyncs seen %d, message file at %d, new/ at %d\n", fsync_count, file, dir);
    if (file >= 0 && dir >= 0) {
        CHECK(!fsync_log[file].dir);
        CHECK(fsync_log[dir].dir);
        CHECK(file < dir);
        CHECK(fsync_log[dir].entries == 1);   /* the message was already in new/ */
    }

    /* The same with every directory fsync failing: -1, a reason, no file. */
    fsync_log_reset();
    fsync_fail_dirs = true;
    CHECK(maildir_deliver(md, prefix, strlen(prefix), &s, name, sizeof(name), err, sizeof(err)) == -1);
    CHECK(errno == EIO);
    CHECK(strstr(err, "fsync") != NULL);
    CHECK(fsync_find(path) >= 0);
    CHECK(count_sub(md, "new") == 1);
    CHECK(count_sub(md, "tmp") == 0);
    fsync_log_reset();
    spool_close(&s);
}

static void test_maildir_failures(const char *root)
{
    char md[4096], name[512], err[256];
    struct spool s;
    spool_init(&s);
    if (!CHECK(spool_open(&s, root) == 0))
        return;
    spool_append(&s, "Subject: x\r\n\r\nbody\r\n", 20);
    CHECK(spool_finish(&s) == 0);

    /* The Maildir would live under a regular file. */
    snprintf(md, sizeof(md), "%s/file", root);
    int fd = open(md, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(fd >= 0 && write(fd, "x", 1) == 1);
    if (fd >= 0)
        close(fd);
    snprintf(md, sizeof(md), "%s/file/Maildir", root);
    strcpy(name, "junk");
    err[0] = '\0';
    errno = 0;
    CHECK(maildir_deliver(md, "A: b\r\n", 6, &s, name, sizeof(name), err, sizeof(err)) == -1);
    CHECK(errno == ENOTDIR);
    CHECK(err[0] != '\0' && strstr(err, "Not a directory") != NULL);
    CHECK(name[0] == '\0');
    struct stat st;
    snprintf(md, sizeof(md), "%s/file", root);
    CHECK(stat(md, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 1);

    /* Failure after the tmp file exists (name buffer too small): -1 and
     * the tmp file is gone, nothing in new/. */
    snprintf(md, sizeof(md), "%s/small", root);
    CHECK(maildir_prepare(md) == 0);
    char tiny[8];
    err[0] = '\0';
    errno = 0;
    CHECK(maildir_deliver(md, "A: b\r\n", 6, &s, tiny, sizeof(tiny), err, sizeof(err)) == -1);
    CHECK(errno == ENAMETOOLONG && err[0] != '\0');
    CHECK(count_sub(md, "tmp") == 0);
    CHECK(count_sub(md, "new") == 0);

    /* Failure while copying the body (a spool with a sticky error). */
    struct spool bad;
    spool_init(&bad);
    spool_append(&bad, "x", 1);   /* never opened: EBADF */
    err[0] = '\0';
    CHECK(maildir_deliver(md, "A: b\r\n", 6, &bad, name, sizeof(name), err, sizeof(err)) == -1);
    CHECK(err[0] != '\0' && strstr(err, "copy body") != NULL);
    CHECK(count_sub(md, "tmp") == 0);
    CHECK(count_sub(md, "new") == 0);
    spool_close(&bad);

    /* Without write permission on tmp/ (meaningless for root). */
    if (geteuid() != 0) {
        snprintf(md, sizeof(md), "%s/ro", root);
        CHECK(maildir_prepare(md) == 0);
        char tmpdir[4200];
        snprintf(tmpdir, sizeof(tmpdir), "%s/tmp", md);
        CHECK(chmod(tmpdir, 0500) == 0);
        errno = 0;
        CHECK(maildir_deliver(md, "", 0, &s, name, sizeof(name), err, sizeof(err)) == -1);
        CHECK(errno == EACCES && err[0] != '\0');
        CHECK(count_sub(md, "new") == 0);
        chmod(tmpdir, 0700);
    }

    errno = 0;
    CHECK(maildir_deliver("", "", 0, &s, name, sizeof(name), err, sizeof(err)) == -1);
    CHECK(errno == EINVAL && err[0] != '\0');

    /* NULL err/name buffers are allowed. */
    snprintf(md, sizeof(md), "%s/file/Maildir", root);
    CHECK(maildir_deliver(md, "", 0, &s, NULL, 0, NULL, 0) == -1);
    snprintf(md, sizeof(md), "%s/nulls", root);
    CHECK(maildir_deliver(md, "", 0, &s, NULL, 0, NULL, 0) == 0);
    CHECK(count_sub(md, "new") == 1);
    spool_close(&s);
}

int main(void)
{
    char root[] = "/tmp/kurir-test-spool-XXXXXX";
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_spool_sizes(root);
    test_spool_pipe(root);
    test_spool_share_link(root);
    test_spool_errors(root);
    test_maildir_prepare(root);
    test_maildir_deliver(root);
    test_maildir_fsync(root);
    test_maildir_failures(root);
    rm_tree(root);
    CHECK(access(root, F_OK) != 0);
    return testutil_summary();
}
