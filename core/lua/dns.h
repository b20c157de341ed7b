/* dns.h - one c-ares channel per engine, driven by the engine's libev loop,
 * and the kurir.dns Lua bindings (lua_dns.c) built on it. */
#ifndef KURIR_DNS_H
#define KURIR_DNS_H

#include <ares.h>
#include <lua.h>

struct dns;

/* The channel of the engine that owns L, created on first use from the
 * configuration the engine left in the registry ("kurir.dns_config").
 * It lives in the registry as a userdata whose __gc calls dns_free, so
 * lua_close destroys it (before main() destroys the event loop). Raises
 * when L has no event loop yet (load time) or c-ares cannot start. */
struct dns *dns_channel(lua_State *L);
/* Start one query (class IN). cb runs exactly once: possibly before this
 * returns, otherwise from the event loop, and with ARES_EDESTRUCTION when
 * the channel is destroyed with the query pending. */
void dns_query(struct dns *d, const char *name, int type, ares_callback cb, void *arg);
/* Seconds a lookup may take at most: timeout x tries of the configuration. */
double dns_wait_limit(const struct dns *d);
/* Stop the watchers and destroy the channel (pending queries get their
 * callback with ARES_EDESTRUCTION). Safe to call twice. */
void dns_free(struct dns *d);

/* kurir.dns = { a, aaaa, addr, mx, txt, ptr } on the table at the top of
 * the stack. */
void ldns_open(lua_State *L);

#endif
