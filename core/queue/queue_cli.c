/* queue_cli.c - `kurir queue list [--json] | show ID | flush [ID] |
 * delete ID | hold ID | release ID [--spool DIR]`: reads the spool
 * directly (no server needed), and asks a running server through its
 * control socket where the server must act (flush, and hold, release and
 * delete so that its in-memory queue agrees). Exit 0, 1 unknown id or
 * unreadable spool, 2 bad command line. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "queue/queue.h"
#include "queue/queue_cli.h"
#include "queue/queue_ctl.h"

static const char cli_usage[] =
    "usage: kurir queue list [--json] [--spool DIR]\n"
    "       kurir queue show ID [--spool DIR]\n"
    "       kurir queue flush [ID] [--spool DIR]\n"
    "       kurir queue delete|hold|release ID [--spool DIR]\n"
    "\n"
    "DIR is the queue directory (queue.dir; default ./queue). flush needs a\n"
    "running server; the other commands also work without one.\n";

struct spool_dir {
    const char *dir;
    int msgfd, stfd;
};

static int open_spool(struct spool_dir *sd, const char *dir)
{
    char p[4096];
    sd->dir = dir;
    snprintf(p, sizeof(p), "%s/msg", dir);
    sd->msgfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(p, sizeof(p), "%s/st", dir);
    sd->stfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sd->msgfd < 0) {
        if (errno == ENOENT)
            return 0;   /* no queue yet: empty */
        fprintf(stderr, "kurir queue: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static void close_spool(struct spool_dir *sd)
{
    if (sd->msgfd >= 0)
        close(sd->msgfd);
    if (sd->stfd >= 0)
        close(sd->stfd);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static bool valid_id(const char *id)
{
    if (!id || !*id || strlen(id) >= 24)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
            return false;
    return true;
}

static int load(struct spool_dir *sd, const char *id, struct qenv *e)
{
    char err[256];
    if (sd->msgfd < 0 || !valid_id(id))
        return -1;
    if (queue_load(sd->msgfd, sd->stfd, id, e, err, sizeof(err)) < 0) {
        if (errno != ENOENT)
            fprintf(stderr, "kurir queue: %s: %s\n", id, err);
        return -1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **list_ids(struct spool_dir *sd, int *n)
{
    *n = 0;
    if (sd->msgfd < 0)
        return NULL;
    int fd = dup(sd->msgfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d)
        return NULL;
    char **ids = NULL;
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            ids = xrealloc(ids, size_mul((size_t)cap, sizeof(char *)));
        }
        ids[(*n)++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (*n > 1)
        qsort(ids, (size_t)*n, sizeof(char *), cmp_str);
    return ids;
}

static long long file_size(struct spool_dir *sd, const char *id, uint64_t off)
{
    struct stat st;
    if (fstatat(sd->msgfd, id, &st, 0) < 0)
        return 0;
    return (long long)st.st_size - (long long)off;
}

static int cmd_list(struct spool_dir *sd, bool json)
{
    int n;
    char **ids = list_ids(sd, &n);
    if (json)
        printf("[");
    int shown = 0;
    for (int i = 0; i < n; i++) {
        struct qenv e;
        if (load(sd, ids[i], &e) < 0)
            continue;
        long long size = file_size(sd, ids[i], e.body_off);
        if (json) {
            printf("%s\n  {\"id\": ", shown ? "," : "");
            json_str(stdout, e.id);
            printf(", \"from\": ");
            json_str(stdout, e.from);
            printf(", \"arrival\": %.3f, \"size\": %lld, \"held\": %s, \"rcpts\": [", e.arrival, size,
                   e.held ? "true" : "false");
            for (int r = 0; r < e.nrcpts; r++) {
                const struct qrcpt *q = &e.rcpts[r];
                printf("%s{\"address\": ", r ? ", " : "");
                json_str(stdout, q->address);
                printf(", \"status\": \"%s\", \"attempts\": %d", queue_file_status_name(q->status, e.held),
                       q->attempts);
                if (q->diag) {
                    printf(", \"diag\": ");
                    json_str(stdout, q->diag);
                }
                char agent[32];
                queue_file_route_agent(q->route, agent, sizeof(agent));
                printf(", \"agent\": ");
                json_str(stdout, agent);
                printf("}");
            }
            printf("]}");
        } else {
            char when[64];
            time_t t = (time_t)e.arrival;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
            printf("%-18s %8lld %s  <%s>%s\n", e.id, size, when, e.from ? e.from : "", e.held ? "  (held)" : "");
            for (int r = 0; r < e.nrcpts; r++) {
                const struct qrcpt *q = &e.rcpts[r];
                printf("    %-9s <%s>", queue_file_status_name(q->status, e.held), q->address);
                if (q->diag && q->status != QS_DELIVERED)
                    printf("  (%s)", q->diag);
                printf("\n");
            }
        }
        shown++;
        queue_file_free(&e);
    }
    if (json)
        printf("%s]\n", shown ? "\n" : "");
    else if (shown == 0)
        printf("The queue is empty.\n");
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    return 0;
}

static int cmd_show(struct spool_dir *sd, const char *id)
{
    struct qenv e;
    if (load(sd, id, &e) < 0) {
        fprintf(stderr, "kurir queue: no message %s\n", id);
        return 1;
    }
    printf("id: %s\nfrom: <%s>\n", e.id, e.from ? e.from : "");
    if (e.held)
        printf("held: yes\n");
    for (int r = 0; r < e.nrcpts; r++) {
        const struct qrcpt *q = &e.rcpts[r];
        printf("rcpt: <%s> %s attempts=%d route=%s", q->address, queue_file_status_name(q->status, e.held),
               q->attempts, q->route);
        if (q->diag)
            printf(" diag=\"%s\"", q->diag);
        printf("\n");
    }
    printf("\n");
    fflush(stdout);
    int fd = openat(sd->msgfd, id, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char b[65536];
        off_t off = (off_t)e.body_off;
        ssize_t r;
        while ((r = pread(fd, b, sizeof(b), off)) > 0) {
            fwrite(b, 1, (size_t)r, stdout);
            off += r;
        }
        close(fd);
    }
    queue_file_free(&e);
    return 0;
}

/* No server: change the spool files directly. */
static int offline(struct spool_dir *sd, const char *verb, const char *id)
{
    struct qenv e;
    if (load(sd, id, &e) < 0) {
        fprintf(stderr, "kurir queue: no message %s\n", id);
        return 1;
    }
    queue_file_free(&e);
    if (!strcmp(verb, "delete")) {
        unlinkat(sd->stfd, id, 0);
        if (unlinkat(sd->msgfd, id, 0) < 0) {
            fprintf(stderr, "kurir queue: delete %s: %s\n", id, strerror(errno));
            return 1;
        }
        fsync(sd->msgfd);
        return 0;
    }
    int fd = openat(sd->stfd, id, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    struct buf b;
    buf_init(&b);
    queue_file_status_line(&b, -1, verb, 0, (double)time(NULL), NULL, NULL);
    int rc = fd >= 0 && write(fd, buf_peek(&b), buf_used(&b)) == (ssize_t)buf_used(&b) && fsync(fd) == 0 ? 0 : 1;
    if (rc)
        fprintf(stderr, "kurir queue: %s %s: %s\n", verb, id, strerror(errno));
    if (fd >= 0)
        close(fd);
    buf_free(&b);
    return rc;
}

int queue_cli_main(int argc, char **argv)
{
    const char *dir = "./queue", *cmd = NULL, *id = NULL;
    bool json = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--spool")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kurir queue: --spool needs a directory\n%s", cli_usage);
                return 2;
            }
            dir = argv[++i];
        } else if (!strncmp(a, "--spool=", 8)) {
            dir = a + 8;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(cli_usage, stdout);
            return 0;
        } else if (a[0] == '-') {
            fprintf(stderr, "kurir queue: unknown option '%s'\n%s", a, cli_usage);
            return 2;
        } else if (!cmd) {
            cmd = a;
        } else if (!id) {
            id = a;
        } else {
            fprintf(stderr, "kurir queue: unexpected argument '%s'\n%s", a, cli_usage);
            return 2;
        }
    }
    if (!cmd)
        cmd = "list";
    bool needs_id = !strcmp(cmd, "show") || !strcmp(cmd, "delete") || !strcmp(cmd, "hold") ||
                    !strcmp(cmd, "release");
    bool known = needs_id || !strcmp(cmd, "list") || !strcmp(cmd, "flush");
    if (!known || (needs_id && !id) || (!strcmp(cmd, "list") && id) || (json && strcmp(cmd, "list"))) {
        fprintf(stderr, "kurir queue: %s\n%s", !known ? "unknown command" : "bad arguments", cli_usage);
        return 2;
    }
    struct spool_dir sd;
    if (open_spool(&sd, dir) < 0)
        return 1;
    int rc;
    if (!strcmp(cmd, "list")) {
        rc = cmd_list(&sd, json);
    } else if (!strcmp(cmd, "show")) {
        rc = cmd_show(&sd, id);
    } else {
        char reply[1024];
        int r = queue_ctl_request(dir, cmd, id, reply, sizeof(reply));
        if (r >= 0) {
            if (r != 0)
                fprintf(stderr, "kurir queue: %s\n", reply);
            rc = r == 0 ? 0 : r == 1 ? 1 : 2;
        } else if (!strcmp(cmd, "flush")) {
            struct qenv e;
            if (id && load(&sd, id, &e) < 0) {
                fprintf(stderr, "kurir queue: no message %s\n", id);
                rc = 1;
            } else {
                if (id)
                    queue_file_free(&e);
                fprintf(stderr, "kurir queue: no server is running on %s; queued messages are tried when it starts\n",
                        dir);
                rc = 0;
            }
        } else {
            rc = offline(&sd, cmd, id);
        }
    }
    close_spool(&sd);
    return rc;
}
