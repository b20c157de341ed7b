/* addr_text.h - IPv4 and IPv6 addresses as text, without sprintf: the
 * per-connection path formats the peer and local address of every
 * connection, and glibc's inet_ntop goes through sprintf (~1,700
 * instructions a call). The text is the same as inet_ntop's on glibc:
 * RFC 5952 for IPv6 (lowercase hex without leading zeros, the longest
 * run of two or more zero groups as "::", the first on a tie; an
 * IPv4-mapped address as ::ffff:a.b.c.d) and, like inet_ntop, the
 * deprecated IPv4-compatible form ::a.b.c.d when exactly the first six
 * groups are zero. Pure. */
#ifndef KURIR_ADDR_TEXT_H
#define KURIR_ADDR_TEXT_H

#include <stddef.h>
#include <sys/socket.h>

/* room for the longest text and its NUL (INET6_ADDRSTRLEN) */
#define ADDR_TEXT_MAX 46

/* a (4 bytes, network order) as dotted quad; out holds ADDR_TEXT_MAX.
 * Returns the length written (without the NUL). */
size_t addr_text_v4(const unsigned char *a, char *out);
/* a (16 bytes, network order) as above */
size_t addr_text_v6(const unsigned char *a, char *out);
/* the address of an AF_INET or AF_INET6 sockaddr, and its port (host
 * order); another family gives "" and port 0. */
size_t addr_text_sockaddr(const struct sockaddr_storage *ss, char *out, int *port);

#endif
