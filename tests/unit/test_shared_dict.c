/* test_shared_dict.c - kurir.shared dictionaries and the shared connection
 * counts: values and modes, expiry, LRU eviction within the size bound,
 * and atomic increments from two processes at once. */
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sys/conn_limit.h"
#include "sys/shared_dict.h"
#include "testutil.h"

static struct sd_value num(long long i)
{
    struct sd_value v = {.t = SD_INT, .i = i};
    return v;
}

static struct sd_value str(const char *s)
{
    struct sd_value v = {.t = SD_STR, .s = s, .n = strlen(s)};
    return v;
}

static void test_values(void)
{
    char err[256];
    struct shared_dict *d = shared_dict_open("values", 64 * 1024, err, sizeof(err));
    CHECK(d != NULL);
    CHECK(shared_dict_open("values", 64 * 1024, err, sizeof(err)) == d);
    CHECK(shared_dict_open("values", 128 * 1024, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "a new size needs a restart") != NULL);
    CHECK(shared_dict_open("tiny", 1024, err, sizeof(err)) == NULL);

    struct buf b;
    buf_init(&b);
    struct sd_value v;
    const char *e = NULL;
    CHECK(shared_dict_get(d, "k", 1, &v, &b) == 0);
    struct sd_value s = str("hello\0world");
    s.n = 11;
    CHECK(shared_dict_set(d, "k", 1, &s, 0, SD_SET, &e) == 0);
    CHECK(shared_dict_get(d, "k", 1, &v, &b) == 1);
    CHECK(v.t == SD_STR);
    CHECK_BYTES(v.s, v.n, "hello\0world", 11);
    struct sd_value one = num(1);
    CHECK(shared_dict_set(d, "k", 1, &one, 0, SD_ADD, &e) == 1);
    struct sd_value nil = {.t = SD_NIL};
    CHECK(shared_dict_set(d, "k", 1, &nil, 0, SD_SET, &e) == 0);
    CHECK(shared_dict_get(d, "k", 1, &v, &b) == 0);
    CHECK(shared_dict_set(d, "k", 1, &one, 0, SD_ADD, &e) == 0);

    struct sd_value out, by = num(41), init = num(100);
    CHECK(shared_dict_incr(d, "k", 1, &by, NULL, 0, &out) == 0);
    CHECK(out.t == SD_INT && out.i == 42);
    CHECK(shared_dict_incr(d, "n", 1, &by, NULL, 0, &out) == 1);
    CHECK(shared_dict_incr(d, "n", 1, &by, &init, 0, &out) == 0);
    CHECK(out.i == 141);
    struct sd_value half = {.t = SD_NUM, .d = 0.5};
    CHECK(shared_dict_incr(d, "n", 1, &half, NULL, 0, &out) == 0);
    CHECK(out.t == SD_NUM && out.d == 141.5);
    s = str("text");
    CHECK(shared_dict_set(d, "s", 1, &s, 0, SD_SET, &e) == 0);
    CHECK(shared_dict_incr(d, "s", 1, &by, NULL, 0, &out) == 2);

    /* expiry */
    CHECK(shared_dict_set(d, "t", 1, &one, 0.05, SD_SET, &e) == 0);
    double r;
    CHECK(shared_dict_ttl(d, "t", 1, &r) == 1 && r > 0 && r <= 0.05);
    struct timespec ts = {0, 80 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK(shared_dict_get(d, "t", 1, &v, &b) == 0);
    CHECK(shared_dict_set(d, "t", 1, &one, 0, SD_ADD, &e) == 0);   /* expired counts as absent */

    /* too large */
    char *big = malloc(70000);
    memset(big, 'x', 70000);
    struct sd_value bv = {.t = SD_STR, .s = big, .n = 70000};
    CHECK(shared_dict_set(d, "big", 3, &bv, 0, SD_SET, &e) == -1);
    CHECK(strstr(e, "too large") != NULL);
    free(big);
    buf_free(&b);
}

static void test_eviction(void)
{
    char err[256];
    struct shared_dict *d = shared_dict_open("lru", 32 * 1024, err, sizeof(err));
    CHECK(d != NULL);
    struct buf b;
    buf_init(&b);
    struct sd_value v, one = num(1);
    const char *e;
    char key[32];
    /* far more keys than fit: every set succeeds, old keys go first */
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "key%d", i);
        if (i > 0)
            shared_dict_get(d, "key0", 4, &v, &b);   /* keep key0 recently used */
        CHECK(shared_dict_set(d, key, strlen(key), &one, 0, SD_SET, &e) == 0);
    }
    long long count, evicted;
    shared_dict_stats(d, &count, &evicted);
    CHECK(count > 100 && count <= 512);   /* 32 KiB of 64-byte nodes */
    CHECK(evicted == 5000 - count);
    CHECK(shared_dict_get(d, "key0", 4, &v, &b) == 1);
    CHECK(shared_dict_get(d, "key1", 4, &v, &b) == 0);
    CHECK(shared_dict_get(d, "key4999", 7, &v, &b) == 1);
    buf_free(&b);
}

static void test_two_processes(void)
{
    char err[256];
    struct shared_dict *d = shared_dict_open("procs", 64 * 1024, err, sizeof(err));
    struct sd_value by = num(1), init = num(0), out;
    pid_t pid = fork();
    for (int i = 0; i < 20000; i++)
        shared_dict_incr(d, "c", 1, &by, &init, 0, &out);
    if (pid == 0)
        _exit(0);
    int st;
    waitpid(pid, &st, 0);
    struct buf b;
    buf_init(&b);
    struct sd_value v;
    CHECK(shared_dict_get(d, "c", 1, &v, &b) == 1);
    CHECK(v.t == SD_INT && v.i == 40000);
    buf_free(&b);
    shared_dict_freeze();
    CHECK(shared_dict_open("new", 64 * 1024, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "top level") != NULL);
    CHECK(shared_dict_open("procs", 64 * 1024, err, sizeof(err)) == d);
}

static void test_conn_limit(void)
{
    struct conn_limit *cl = conn_limit_new(3, 16);
    CHECK(cl != NULL);
    CHECK(conn_limit_take(cl, 0, "10.0.0.1", 4, 2) == 0);
    CHECK(conn_limit_take(cl, 1, "10.0.0.1", 4, 2) == 0);
    CHECK(conn_limit_take(cl, 2, "10.0.0.1", 4, 2) == -1);   /* per IP, across slots */
    CHECK(conn_limit_take(cl, 2, "10.0.0.2", 4, 2) == 0);
    CHECK(conn_limit_take(cl, 2, "10.0.0.3", 4, 2) == 0);
    CHECK(conn_limit_take(cl, 0, "10.0.0.4", 4, 2) == -1);   /* total */
    conn_limit_release(cl, 1, "10.0.0.1");
    CHECK(conn_limit_take(cl, 0, "10.0.0.1", 4, 2) == 0);
    conn_limit_clear(cl, 2);                                /* a dead worker's connections */
    CHECK(conn_limit_take(cl, 1, "10.0.0.5", 4, 2) == 0);
    CHECK(conn_limit_take(cl, 1, "10.0.0.6", 4, 2) == 0);
    CHECK(conn_limit_take(cl, 1, "10.0.0.7", 4, 2) == -1);
    conn_limit_free(cl);

    /* many IPs in and out of one slot: deletion keeps every probe chain whole */
    cl = conn_limit_new(1, 1024);
    char ip[48];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 900; i++) {
            snprintf(ip, sizeof(ip), "192.0.%d.%d", i / 256, i % 256);
            CHECK(conn_limit_take(cl, 0, ip, 100000, 1) == 0);
        }
        for (int i = 0; i < 900; i += 2) {
            snprintf(ip, sizeof(ip), "192.0.%d.%d", i / 256, i % 256);
            conn_limit_release(cl, 0, ip);
        }
        for (int i = 1; i < 900; i += 2) {
            snprintf(ip, sizeof(ip), "192.0.%d.%d", i / 256, i % 256);
            CHECK(conn_limit_take(cl, 0, ip, 100000, 1) == -1);   /* still counted */
            conn_limit_release(cl, 0, ip);
        }
    }
    CHECK(conn_limit_take(cl, 0, "192.0.0.1", 1, 1) == 0);   /* total back to 0 */
    conn_limit_free(cl);
}

int main(void)
{
    test_values();
    test_eviction();
    test_conn_limit();
    test_two_processes();
    return testutil_summary();
}
