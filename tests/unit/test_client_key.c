/* test_client_key.c - the per-client connection limit key: IPv4 as is,
 * IPv6 cut to the prefix (addresses of one /64 share a key, of two do
 * not), IPv4-mapped IPv6 as IPv4. */
#include "proto/client_key.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static void key_of(const char *ip, int prefix, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        CHECK(inet_pton(AF_INET6, ip, &a->sin6_addr) == 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        CHECK(inet_pton(AF_INET, ip, &a->sin_addr) == 1);
    }
    client_key_text(&ss, prefix, out, cap);
}

#define CHECK_KEY(ip, prefix, expected)                 \
    do {                                                \
        char k_[CLIENT_KEY_MAX];                        \
        key_of((ip), (prefix), k_, sizeof(k_));         \
        CHECK_MEM(k_, strlen(k_), (expected));          \
    } while (0)

int main(void)
{
    CHECK_KEY("192.0.2.7", 64, "192.0.2.7");
    CHECK_KEY("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64");
    CHECK_KEY("2001:db8:1:2::1", 64, "2001:db8:1:2::/64");
    CHECK_KEY("2001:db8:1:3::1", 64, "2001:db8:1:3::/64");
    CHECK_KEY("2001:db8:1:2::1", 48, "2001:db8:1::/48");
    CHECK_KEY("2001:db8:1:2::1", 128, "2001:db8:1:2::1/128");
    CHECK_KEY("2001:db8:1:2:ffff::1", 56, "2001:db8:1::/56");
    CHECK_KEY("2001:db8:1:2ff::1", 56, "2001:db8:1:200::/56");
    CHECK_KEY("2001:db8::1", 1, "::/1");
    CHECK_KEY("::1", 64, "::/64");
    CHECK_KEY("::ffff:192.0.2.9", 64, "192.0.2.9");
    struct sockaddr_storage none;
    memset(&none, 0, sizeof(none));
    char k[CLIENT_KEY_MAX] = "x";
    client_key_text(&none, 64, k, sizeof(k));
    CHECK(k[0] == '\0');
    return testutil_summary();
}
