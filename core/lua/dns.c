/* dns.c - the engine's c-ares channel on the libev loop.
 *
 * Owns: one ares_channel per engine (a userdata in the engine's Lua
 * registry, "kurir.dns", destroyed by its __gc at lua_close), one ev_io per
 * socket c-ares opens (started and stopped from ARES_OPT_SOCK_STATE_CB),
 * and one ev_timer that follows ares_timeout(). Uses the dns configuration
 * engine_load leaves in the registry ("kurir.dns_config": servers, timeout,
 * tries). Queries and their lifetime belong to lua_dns.c. */
#include "lua/dns.h"

#include <arpa/nameser.h>
#include <ev.h>
#include <lauxlib.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lua/engine.h"
#include "proto/util.h"

#define DNS_META "kurir.dns_channel"
#define DNS_KEY "kurir.dns"

struct dns_sock {
    ev_io w;
    int fd;
    struct dns *d;
};

struct dns {
    ares_channel ch;
    bool live;            /* ch is initialised */
    bool closing;         /* inside dns_free: watchers are gone */
    struct ev_loop *loop;
    struct engine *eng;
    ev_timer timer;
    struct dns_sock **socks;   /* pointers: ev watchers must not move */
    int nsocks, capsocks;
    double wait_limit;
};

static void update_timer(struct dns *d)
{
    struct timeval tv;
    struct timeval *t = ares_timeout(d->ch, NULL, &tv);
    ev_timer_stop(d->loop, &d->timer);
    if (!t)
        return;
    ev_timer_set(&d->timer, (double)t->tv_sec + (double)t->tv_usec / 1e6, 0.);
    ev_timer_start(d->loop, &d->timer);
}

/* Callbacks of finished queries may resume hooks, and a hook may end the
 * last session of an old engine: hold a reference so that the engine (and
 * with it this channel) is not destroyed inside ares_process_fd. */
static void process(struct dns *d, int rfd, int wfd)
{
    struct engine *e = d->eng;
    engine_ref(e);
    ares_process_fd(d->ch, rfd, wfd);
    if (!d->closing)
        update_timer(d);
    engine_unref(e);   /* may run lua_close: d is not touched after this */
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct dns_sock *ds = w->data;
    struct dns *d = ds->d;
    int fd = ds->fd;    /* ds may be freed by the state callback while processing */
    process(d, (revents & EV_READ) ? fd : ARES_SOCKET_BAD, (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    process(w->data, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    if (d->closing)
        return;
    int i = 0;
    while (i < d->nsocks && d->socks[i]->fd != fd)
        i++;
    int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
    if (i == d->nsocks) {
        if (!events)
            return;
        if (d->nsocks == d->capsocks) {
            d->capsocks = d->capsocks ? d->capsocks * 2 : 4;
            d->socks = xrealloc(d->socks, size_mul((size_t)d->capsocks, sizeof(*d->socks)));
        }
        struct dns_sock *ds = xcalloc(1, sizeof(*ds));
        ds->fd = fd;
        ds->d = d;
        ev_io_init(&ds->w, io_cb, fd, events);
        ds->w.data = ds;
        ev_io_start(d->loop, &ds->w);
        d->socks[d->nsocks++] = ds;
        return;
    }
    struct dns_sock *ds = d->socks[i];
    ev_io_stop(d->loop, &ds->w);
    if (events) {
        ev_io_set(&ds->w, fd, events);
        ev_io_start(d->loop, &ds->w);
        return;
    }
    free(ds);
    d->socks[i] = d->socks[--d->nsocks];
}

void dns_free(struct dns *d)
{
    if (!d->live)
        return;
    d->closing = true;
    ev_timer_stop(d->loop, &d->timer);
    for (int i = 0; i < d->nsocks; i++) {
        ev_io_stop(d->loop, &d->socks[i]->w);
        free(d->socks[i]);
    }
    free(d->socks);
    d->socks = NULL;
    d->nsocks = d->capsocks = 0;
    /* pending queries get ARES_EDESTRUCTION here; their owners were all
     * cancelled when their tasks ended (sessions and the engine's own
     * tasks all end before lua_close) */
    ares_destroy(d->ch);
    d->live = false;
}

/* (dns_channel) -> () */
static int channel_gc(lua_State *L)
{
    dns_free(luaL_checkudata(L, 1, DNS_META));
    return 0;
}

static const luaL_Reg channel_meta[] = {
    {"__gc", channel_gc},
    {NULL, NULL},
};

/* Servers "ADDR:PORT" / "[v6]:PORT" (checked by kurir.config) joined
 * with commas for ares_set_servers_ports_csv. Returns an ares status. */
static int set_servers(lua_State *L, struct dns *d, int cfg)
{
    int rc = ARES_SUCCESS;
    lua_getfield(L, cfg, "servers");
    if (lua_istable(L, -1)) {
        struct buf csv;
        buf_init(&csv);
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const char *srv = lua_tostring(L, -1);
            if (srv) {
                if (buf_used(&csv))
                    buf_append(&csv, ",", 1);
                buf_appends(&csv, srv);
            }
            lua_pop(L, 1);
        }
        buf_append(&csv, "", 1);
        if (n > 0)
            rc = ares_set_servers_ports_csv(d->ch, buf_peek(&csv));
        buf_free(&csv);
    }
    lua_pop(L, 1);
    return rc;
}

static double config_number(lua_State *L, int cfg, const char *key, double dflt)
{
    lua_getfield(L, cfg, key);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return (v > 0 && isfinite(v)) ? v : dflt;
}

struct dns *dns_channel(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, DNS_KEY);
    struct dns *d = luaL_testudata(L, -1, DNS_META);
    lua_pop(L, 1);
    if (d)
        return d;
    struct ev_loop *loop = engine_loop(L);
    if (!loop)
        luaL_error(L, "kurir.dns: lookups can only run inside a hook, not at load time");
    lua_getfield(L, LUA_REGISTRYINDEX, "kurir.engine");
    struct engine *e = lua_touserdata(L, -1);
    lua_pop(L, 1);

    d = lua_newuserdatauv(L, sizeof(*d), 0);
    memset(d, 0, sizeof(*d));
    if (luaL_newmetatable(L, DNS_META))
        luaL_setfuncs(L, channel_meta, 0);
    lua_setmetatable(L, -2);
    d->loop = loop;
    d->eng = e;
    ev_timer_init(&d->timer, timer_cb, 0., 0.);
    d->timer.data = d;

    lua_getfield(L, LUA_REGISTRYINDEX, "kurir.dns_config");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    int cfg = lua_gettop(L);
    double timeout = config_number(L, cfg, "timeout", 5);
    double tries = config_number(L, cfg, "tries", 2);
    d->wait_limit = timeout * tries;

    struct ares_options o;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = sock_state_cb;
    o.sock_state_cb_data = d;
    o.timeout = (int)ceil(timeout * 1000.);
    o.tries = (int)tries;
    /* hand SERVFAIL and REFUSED to the script instead of a generic "could
     * not contact DNS servers" (c-ares still drops answers to another
     * question) */
    o.flags = ARES_FLAG_NOCHECKRESP;
    int rc = ares_init_options(&d->ch, &o,
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS);
    if (rc != ARES_SUCCESS)
        luaL_error(L, "kurir.dns: cannot start the resolver: %s", ares_strerror(rc));
    d->live = true;   /* from here on __gc destroys the channel */
    rc = set_servers(L, d, cfg);
    if (rc != ARES_SUCCESS)
        luaL_error(L, "kurir.dns: bad dns.servers: %s", ares_strerror(rc));
    lua_pop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, DNS_KEY);
    return d;
}

void dns_query(struct dns *d, const char *name, int type, ares_callback cb, void *arg)
{
    ares_query(d->ch, name, ns_c_in, type, cb, arg);
    if (d->live && !d->closing)
        update_timer(d);
}

double dns_wait_limit(const struct dns *d)
{
    return d->wait_limit;
}
