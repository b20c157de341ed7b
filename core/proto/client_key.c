/* client_key.c - see client_key.h: masks an IPv6 peer address to the
 * configured prefix so that the per-IP connection limit counts a whole
 * network as one client. Owns nothing; writes into the caller's buffer.
 * Formats with addr_text.c, not inet_ntop (sprintf): once per connection. */
#include "proto/client_key.h"

#include <netinet/in.h>
#include <string.h>

#include "proto/addr_text.h"

void client_key_text(const struct sockaddr_storage *ss, int v6_prefix, char *out, size_t cap)
{
    if (!cap)
        return;
    out[0] = '\0';
    char text[ADDR_TEXT_MAX + 8];
    size_t n;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        n = addr_text_v4((const unsigned char *)&a->sin_addr, text);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
            n = addr_text_v4(&a6->sin6_addr.s6_addr[12], text);
        } else {
            if (v6_prefix < 1 || v6_prefix > 128)
                v6_prefix = 128;
            struct in6_addr m = a6->sin6_addr;
            int full = v6_prefix / 8;
            if (v6_prefix % 8)
                m.s6_addr[full++] &= (unsigned char)(0xff00u >> (v6_prefix % 8));
            memset(&m.s6_addr[full], 0, (size_t)(16 - full));
            n = addr_text_v6(m.s6_addr, text);
            text[n++] = '/';
            if (v6_prefix >= 100)
                text[n++] = (char)('0' + v6_prefix / 100);
            if (v6_prefix >= 10)
                text[n++] = (char)('0' + v6_prefix / 10 % 10);
            text[n++] = (char)('0' + v6_prefix % 10);
        }
    } else {
        return;
    }
    if (n >= cap)
        return;   /* too small: "" rather than a cut key that would merge clients */
    memcpy(out, text, n);
    out[n] = '\0';
}
