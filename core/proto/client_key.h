/* client_key.h - the key under which the per-client connection limit
 * counts a peer address: an IPv4 address as is, an IPv6 address cut to
 * its first N bits (a /64 is usually one subscriber, who can use all of
 * it), an IPv4-mapped IPv6 address as the IPv4 address. Pure. */
#ifndef KURIR_CLIENT_KEY_H
#define KURIR_CLIENT_KEY_H

#include <stddef.h>
#include <sys/socket.h>

#define CLIENT_KEY_MAX 64

/* Write the key of ss into out (e.g. "192.0.2.7", "2001:db8:1:2::/64");
 * v6_prefix in 1..128. An unknown family gives "". */
void client_key_text(const struct sockaddr_storage *ss, int v6_prefix, char *out, size_t cap);

#endif
