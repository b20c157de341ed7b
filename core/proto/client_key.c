/* client_key.c - see client_key.h: masks an IPv6 peer address to the
 * configured prefix so that the per-IP connection limit counts a whole
 * network as one client. Owns nothing; writes into the caller's buffer. */
#include "proto/client_key.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

void client_key_text(const struct sockaddr_storage *ss, int v6_prefix, char *out, size_t cap)
{
    if (!cap)
        return;
    out[0] = '\0';
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, out, (socklen_t)cap);
        return;
    }
    if (ss->ss_family != AF_INET6)
        return;
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
    if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
        struct in_addr v4;
        memcpy(&v4, &a6->sin6_addr.s6_addr[12], 4);
        inet_ntop(AF_INET, &v4, out, (socklen_t)cap);
        return;
    }
    if (v6_prefix < 1 || v6_prefix > 128)
        v6_prefix = 128;
    struct in6_addr m = a6->sin6_addr;
    for (int bit = v6_prefix; bit < 128; bit++)
        m.s6_addr[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    char text[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &m, text, sizeof(text));
    snprintf(out, cap, "%s/%d", text, v6_prefix);
}
