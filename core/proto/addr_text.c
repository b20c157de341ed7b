/* addr_text.c - see addr_text.h. Owns nothing; writes into the caller's
 * buffer, which always has room for the longest form. */
#include "proto/addr_text.h"

#include <netinet/in.h>
#include <stdbool.h>

static const char hexdigits[] = "0123456789abcdef";

/* one byte in decimal, no leading zeros */
static char *put_dec(char *p, unsigned v)
{
    if (v >= 100) {
        *p++ = (char)('0' + v / 100);
        v %= 100;
        *p++ = (char)('0' + v / 10);
        *p++ = (char)('0' + v % 10);
    } else if (v >= 10) {
        *p++ = (char)('0' + v / 10);
        *p++ = (char)('0' + v % 10);
    } else {
        *p++ = (char)('0' + v);
    }
    return p;
}

static char *put_v4(char *p, const unsigned char *a)
{
    p = put_dec(p, a[0]);
    *p++ = '.';
    p = put_dec(p, a[1]);
    *p++ = '.';
    p = put_dec(p, a[2]);
    *p++ = '.';
    return put_dec(p, a[3]);
}

/* one 16-bit group in lowercase hex, no leading zeros */
static char *put_hex(char *p, unsigned v)
{
    int shift = v >= 0x1000 ? 12 : v >= 0x100 ? 8 : v >= 0x10 ? 4 : 0;
    for (; shift >= 0; shift -= 4)
        *p++ = hexdigits[(v >> shift) & 0xf];
    return p;
}

size_t addr_text_v4(const unsigned char *a, char *out)
{
    char *p = put_v4(out, a);
    *p = '\0';
    return (size_t)(p - out);
}

size_t addr_text_v6(const unsigned char *a, char *out)
{
    unsigned g[8];
    for (int i = 0; i < 8; i++)
        g[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
    /* the longest run of zero groups, the first one on a tie */
    int best = -1, best_len = 0;
    for (int i = 0; i < 8;) {
        if (g[i]) {
            i++;
            continue;
        }
        int j = i;
        while (j < 8 && !g[j])
            j++;
        if (j - i > best_len) {
            best = i;
            best_len = j - i;
        }
        i = j;
    }
    if (best_len < 2)
        best = -1;   /* one zero group stays "0" (RFC 5952 4.2.2) */
    char *p = out;
    /* IPv4-mapped (::ffff:a.b.c.d) and, as inet_ntop writes it, the
     * IPv4-compatible ::a.b.c.d (the first six groups zero, the seventh not) */
    bool v4_tail = best == 0 && (best_len == 6 || (best_len == 5 && g[5] == 0xffff));
    int end = v4_tail ? 6 : 8;
    for (int i = 0; i < end; i++) {
        if (i == best) {
            *p++ = ':';
            if (i == 0)
                *p++ = ':';
            i += best_len - 1;
            continue;
        }
        p = put_hex(p, g[i]);
        if (i < end - 1 || v4_tail)
            *p++ = ':';
    }
    if (v4_tail)
        p = put_v4(p, a + 12);
    *p = '\0';
    return (size_t)(p - out);
}

size_t addr_text_sockaddr(const struct sockaddr_storage *ss, char *out, int *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        *port = ntohs(a->sin_port);
        return addr_text_v4((const unsigned char *)&a->sin_addr, out);
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        *port = ntohs(a->sin6_port);
        return addr_text_v6(a->sin6_addr.s6_addr, out);
    }
    *port = 0;
    out[0] = '\0';
    return 0;
}
