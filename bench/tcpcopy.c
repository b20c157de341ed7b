/* tcpcopy.c - the physical limit for large messages in bench/run.sh: one
 * process copies BYTES over a loopback TCP connection to a child that reads
 * and drops them (1 MiB buffers, no parsing, no file), REPS times, and
 * prints the median MB/s and the reading side's CPU seconds per GB on one
 * line. What kurir does with a 50 MB DATA or BDAT (parsing, spooling) is
 * compared to this.
 *
 *   tcpcopy BYTES [REPS]      e.g. tcpcopy 52428800 5 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)
#define MAX_REPS 100

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void sink(int ls, int reps, char *buf)
{
    for (int r = 0; r < reps; r++) {
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            _exit(1);
        for (;;) {
            ssize_t n = read(c, buf, CHUNK);
            if (n > 0)
                continue;
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        close(c);
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: tcpcopy BYTES [REPS]\n");
        return 2;
    }
    long long total = atoll(argv[1]);
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    if (total <= 0 || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "tcpcopy: BYTES > 0 and 1 <= REPS <= %d\n", MAX_REPS);
        return 2;
    }
    char *buf = malloc(CHUNK);
    if (!buf)
        return 1;
    memset(buf, 'x', CHUNK);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 4) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &alen) < 0) {
        perror("tcpcopy: listen");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("tcpcopy: fork");
        return 1;
    }
    if (child == 0)
        sink(ls, reps, buf);
    close(ls);
    double rates[MAX_REPS];
    int done = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
            perror("tcpcopy: connect");
            break;
        }
        long long left = total;
        while (left > 0) {
            ssize_t n = write(s, buf, left < CHUNK ? (size_t)left : CHUNK);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                perror("tcpcopy: write");
                break;
            }
            left -= n;
        }
        shutdown(s, SHUT_WR);
        char c;
        while (read(s, &c, 1) > 0) {
        }   /* the sink closes once it has read everything */
        close(s);
        if (left != 0)
            break;
        rates[done++] = (double)total / (now() - t0) / 1e6;
    }
    if (done < reps)
        kill(child, SIGTERM);   /* it would wait for connections that never come */
    int st;
    struct rusage ru;
    double sink_cpu = -1;
    if (wait4(child, &st, 0, &ru) == child)
        sink_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    if (done == 0)
        return 1;
    qsort(rates, (size_t)done, sizeof(rates[0]), cmp);
    printf("bytes=%lld reps=%d mb_per_s=%.1f min=%.1f max=%.1f sink_cpu_s_per_gb=%.2f\n", total, done,
           rates[(done - 1) / 2], rates[0], rates[done - 1], sink_cpu / ((double)total * done / 1e9));
    return 0;
}
