/* test_addr_text.c - addr_text.c writes what glibc's inet_ntop writes:
 * every IPv4 edge byte in every position, IPv6 with zero runs of every
 * length at every position (ties, single zero groups), mapped and
 * compatible forms, all-zero, loopback, and random addresses whose
 * groups are drawn to be zero often; then addr_text_sockaddr's ports. */
#include "proto/addr_text.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

static int mismatches, compared;

static void same_v4(const unsigned char *a)
{
    char want[INET6_ADDRSTRLEN], got[ADDR_TEXT_MAX];
    compared++;
    inet_ntop(AF_INET, a, want, sizeof(want));
    size_t n = addr_text_v4(a, got);
    if (n != strlen(want) || strcmp(got, want) != 0) {
        if (mismatches++ < 10)
            fprintf(stderr, "v4: want %s got %s\n", want, got);
        CHECK(0);
    }
}

static void same_v6(const unsigned char *a)
{
    char want[INET6_ADDRSTRLEN], got[ADDR_TEXT_MAX];
    compared++;
    inet_ntop(AF_INET6, a, want, sizeof(want));
    size_t n = addr_text_v6(a, got);
    if (n != strlen(want) || strcmp(got, want) != 0) {
        if (mismatches++ < 10)
            fprintf(stderr, "v6: want %s got %s\n", want, got);
        CHECK(0);
    }
}

/* groups g[0..7] into 16 bytes */
static void from_groups(const unsigned *g, unsigned char *a)
{
    for (int i = 0; i < 8; i++) {
        a[2 * i] = (unsigned char)(g[i] >> 8);
        a[2 * i + 1] = (unsigned char)g[i];
    }
}

static uint32_t rng = 12345;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* a group value of each width: 0, 1 hex digit, 2, 3, 4 */
static unsigned any_group(void)
{
    static const unsigned masks[] = {0, 0xf, 0xff, 0xfff, 0xffff};
    unsigned v = next() & masks[next() % 5];
    return v;
}

static void check_exact(const char *text)
{
    unsigned char a[16];
    char got[ADDR_TEXT_MAX];
    CHECK(inet_pton(AF_INET6, text, a) == 1);
    addr_text_v6(a, got);
    CHECK_MEM(got, strlen(got), text);
}

int main(void)
{
    /* IPv4: edge bytes (one/two/three digits and their borders) everywhere */
    static const unsigned char edges[] = {0, 1, 9, 10, 11, 99, 100, 101, 199, 200, 249, 250, 254, 255};
    size_t ne = sizeof(edges);
    for (size_t i = 0; i < ne; i++)
        for (size_t j = 0; j < ne; j++)
            for (size_t k = 0; k < ne; k++)
                for (size_t l = 0; l < ne; l++) {
                    unsigned char a[4] = {edges[i], edges[j], edges[k], edges[l]};
                    same_v4(a);
                }
    for (unsigned v = 0; v < 256; v++) {
        unsigned char a[4] = {(unsigned char)v, (unsigned char)(255 - v), (unsigned char)v, 7};
        same_v4(a);
    }
    for (int i = 0; i < 100000; i++) {
        uint32_t r = next();
        unsigned char a[4] = {(unsigned char)r, (unsigned char)(r >> 8), (unsigned char)(r >> 16),
                              (unsigned char)(r >> 24)};
        same_v4(a);
    }
    CHECK(mismatches == 0);

    /* IPv6: every run of zeros [start, start+len) over nonzero groups of
     * every width, and the same with a second run elsewhere (ties) */
    for (int start = 0; start < 8; start++)
        for (int len = 0; start + len <= 8; len++)
            for (int rep = 0; rep < 50; rep++) {
                unsigned g[8];
                for (int i = 0; i < 8; i++)
                    g[i] = (i >= start && i < start + len) ? 0 : (any_group() | 1);
                unsigned char a[16];
                from_groups(g, a);
                same_v6(a);
                /* a second run somewhere outside the first */
                int s2 = (int)(next() % 8), l2 = 1 + (int)(next() % 4);
                for (int i = s2; i < s2 + l2 && i < 8; i++)
                    if (i < start - 1 || i > start + len)
                        g[i] = 0;
                from_groups(g, a);
                same_v6(a);
            }
    /* random groups, zero half of the time: every mixture of runs */
    for (int i = 0; i < 200000; i++) {
        unsigned g[8];
        for (int k = 0; k < 8; k++)
            g[k] = (next() & 1) ? 0 : any_group();
        unsigned char a[16];
        from_groups(g, a);
        same_v6(a);
    }
    /* the IPv4-in-IPv6 forms: mapped, compatible, and their near misses */
    static const unsigned heads[][6] = {
        {0, 0, 0, 0, 0, 0xffff}, {0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0xfffe},
        {0, 0, 0, 0, 1, 0xffff}, {0, 0, 0, 0, 0, 1}, {1, 0, 0, 0, 0, 0xffff},
        {0x64, 0xff9b, 0, 0, 0, 0},
    };
    for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++)
        for (int i = 0; i < 3000; i++) {
            unsigned g[8];
            memcpy(g, heads[h], sizeof(heads[h]));
            uint32_t r = next();
            g[6] = (i % 3 == 0) ? 0 : (r >> 16);
            g[7] = (i % 5 == 0) ? (unsigned)(i % 2) : (r & 0xffff);
            unsigned char a[16];
            from_groups(g, a);
            same_v6(a);
        }
    CHECK(mismatches == 0);
    CHECK(compared > 300000);

    check_exact("::");
    check_exact("::1");
    check_exact("::ffff:192.0.2.1");
    check_exact("::ffff:0.0.0.0");
    check_exact("::192.0.2.1");
    check_exact("2001:db8::1");
    check_exact("2001:db8:0:1:1:1:1:1");       /* one zero group stays 0 */
    check_exact("2001:0:0:1::1");              /* the longer run wins */
    check_exact("2001:db8::1:0:0:1");          /* the first of equal runs */
    check_exact("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    check_exact("fe80::abcd:ef01:2345:6789");
    check_exact("1::");

    struct sockaddr_storage ss;
    char out[ADDR_TEXT_MAX];
    int port = -1;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    in4->sin_family = AF_INET;
    in4->sin_port = htons(2525);
    inet_pton(AF_INET, "127.0.0.1", &in4->sin_addr);
    CHECK(addr_text_sockaddr(&ss, out, &port) == 9);
    CHECK_MEM(out, strlen(out), "127.0.0.1");
    CHECK(port == 2525);
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(65535);
    inet_pton(AF_INET6, "2001:db8::25", &in6->sin6_addr);
    addr_text_sockaddr(&ss, out, &port);
    CHECK_MEM(out, strlen(out), "2001:db8::25");
    CHECK(port == 65535);
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    CHECK(addr_text_sockaddr(&ss, out, &port) == 0);
    CHECK(out[0] == '\0' && port == 0);
    return testutil_summary();
}
