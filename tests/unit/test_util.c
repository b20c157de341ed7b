/* test_util.c - the buffer's formatting helpers: buf_printf with and
 * without its second pass, decimal integers at their limits, and
 * date_rfc5322 against strftime over dates that cover every weekday,
 * month, leap day and field width (also the same second twice: its kept
 * copy); the buffer pool (kept sizes, its
 * bound, what a taken buffer holds). */
#include "proto/util.h"
#include "testutil.h"

#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void test_printf(void)
{
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "%d-%s", 42, "x");
    CHECK_MEM(buf_peek(&b), buf_used(&b), "42-x");
    /* longer than the first pass's room: formatted again, whole */
    char big[1000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    buf_printf(&b, "[%s]", big);
    CHECK(buf_used(&b) == 4 + 2 + 999);
    CHECK(buf_peek(&b)[4] == '[' && buf_peek(&b)[4 + 1000] == ']');
    /* exactly filling the free space, then one byte over */
    buf_free(&b);
    for (size_t n = 100; n < 300; n++) {
        buf_init(&b);   /* capacity 256 then 512: the room is below 999 bytes */
        buf_append(&b, big, n);
        size_t before = buf_used(&b);
        size_t room = b.cap - b.len;
        buf_printf(&b, "%.*s", (int)room, big);
        CHECK(buf_used(&b) == before + room);
        buf_printf(&b, "%s", "");
        CHECK(buf_used(&b) == before + room);
        CHECK(memcmp(buf_peek(&b) + before, big, room) == 0);
        buf_free(&b);
    }
    /* after consumed bytes at the front */
    buf_reset(&b);
    buf_appends(&b, "0123456789");
    buf_consume(&b, 4);
    buf_printf(&b, "%05u", 7u);
    CHECK_MEM(buf_peek(&b), buf_used(&b), "45678900007");
    buf_free(&b);
}

static void test_ints(void)
{
    struct buf b;
    buf_init(&b);
    buf_append_int(&b, 0);
    buf_appends(&b, " ");
    buf_append_int(&b, -1);
    buf_appends(&b, " ");
    buf_append_int(&b, 1234567890123LL);
    buf_appends(&b, " ");
    buf_append_int(&b, LLONG_MIN);
    buf_appends(&b, " ");
    buf_append_int(&b, LLONG_MAX);
    buf_appends(&b, " ");
    buf_append_uint(&b, ULLONG_MAX);
    CHECK_MEM(buf_peek(&b), buf_used(&b),
              "0 -1 1234567890123 -9223372036854775808 9223372036854775807 18446744073709551615");
    buf_free(&b);
}

static void check_date(time_t t)
{
    char want[64], got[32];
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t wn = strftime(want, sizeof(want), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    size_t n = date_rfc5322(t, got);
    CHECK(n == 31 && strlen(got) == 31);
    CHECK_BYTES(got, n, want, wn);
}

static void test_date(void)
{
    check_date(0);                   /* Thu, 01 Jan 1970 */
    check_date(0);                   /* the same second again: the kept copy */
    check_date(1);
    check_date(0);
    check_date(951782400);           /* Tue, 29 Feb 2000 00:00:00 */
    check_date(1798761599);          /* Thu, 31 Dec 2026 23:59:59 */
    check_date(253402300799LL);      /* Fri, 31 Dec 9999 23:59:59 */
    /* every day for ten years, at a time that moves through the day */
    for (time_t t = 1700000000; t < 1700000000 + 3653LL * 86400; t += 86400 + 3671)
        check_date(t);
}

static void test_pool(void)
{
    struct buf_pool pool;
    buf_pool_init(&pool, 1024);
    struct buf b;
    buf_init(&b);
    buf_pool_take(&pool, &b);   /* empty pool: nothing */
    CHECK(b.cap == 0 && b.data == NULL);
    buf_reserve(&b, 1024);
    CHECK(b.cap == 1024);
    buf_append(&b, "x", 1);
    buf_reset(&b);
    char *kept = b.data;
    buf_pool_give(&pool, &b);
    CHECK(pool.n == 1 && b.cap == 0 && b.data == NULL);
    buf_pool_take(&pool, &b);
    CHECK(pool.n == 0 && b.data == kept && b.cap == 1024 && buf_used(&b) == 0);
    buf_append(&b, "abc", 3);
    CHECK_MEM(buf_peek(&b), buf_used(&b), "abc");
    buf_pool_take(&pool, &b);   /* b holds memory: unchanged */
    CHECK(b.data == kept);
    buf_reset(&b);
    buf_reserve(&b, 2048);   /* twice the size: kept, handed out as 1024 */
    buf_pool_give(&pool, &b);
    CHECK(pool.n == 1);
    buf_reserve(&b, 4096);   /* more than twice: freed */
    buf_pool_give(&pool, &b);
    CHECK(pool.n == 1 && b.data == NULL);
    buf_reserve(&b, 256);   /* smaller: freed */
    buf_pool_give(&pool, &b);
    CHECK(pool.n == 1);
    buf_pool_take(&pool, &b);
    CHECK(b.cap == 1024);
    memset(buf_reserve(&b, 1024), 'y', 1024);   /* all of it is usable */
    buf_commit(&b, 1024);
    buf_free(&b);
    struct buf many[BUF_POOL_MAX + 2];
    for (int i = 0; i < BUF_POOL_MAX + 2; i++) {
        buf_init(&many[i]);
        buf_reserve(&many[i], 1024);
    }
    for (int i = 0; i < BUF_POOL_MAX + 2; i++)
        buf_pool_give(&pool, &many[i]);   /* the rest is freed */
    CHECK(pool.n == BUF_POOL_MAX);
    buf_pool_free(&pool);
    CHECK(pool.n == 0);
}

int main(void)
{
    setenv("TZ", "Asia/Tokyo", 1);   /* the date is UTC whatever the zone */
    tzset();
    test_printf();
    test_ints();
    test_date();
    test_pool();
    return testutil_summary();
}
