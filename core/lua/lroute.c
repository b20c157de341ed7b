/* lroute.c - turns route objects (tables whose metatable carries
 * __kurir_route, made by lua/kurir/route.lua and lua/kurir/maildir.lua)
 * into the flat route string a recipient of the envelope and a queue file
 * store. The string is the agent name then key=value tokens, sorted, nested
 * arrays flattened as key.N, so that equal routes give equal strings (the
 * per-destination limit groups by it). Used by the rcpt view when the
 * script sets rcpt.route, and by the DSN routing of the queue. */
#include "lua/lroute.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/queue_file.h"

bool lroute_is(lua_State *L, int idx)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx))
        return false;
    lua_pushliteral(L, "__kurir_route");
    lua_rawget(L, -2);
    bool ok = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return ok;
}

struct kv {
    char *k;
    char *v;
};

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const struct kv *)a)->k, ((const struct kv *)b)->k);
}

static bool scalar(lua_State *L, int idx, struct buf *b)
{
    int t = lua_type(L, idx);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);   /* a copy for numbers: idx is a copy below */
        buf_append(b, s, n);
        return true;
    }
    if (t == LUA_TBOOLEAN) {
        buf_appends(b, lua_toboolean(L, idx) ? "true" : "false");
        return true;
    }
    return false;
}

int lroute_serialize(lua_State *L, int idx, struct buf *out, char *err, size_t cap)
{
    idx = lua_absindex(L, idx);
    if (!lroute_is(L, idx)) {
        snprintf(err, cap, "not a route (make one with kurir.maildir, kurir.mbox, kurir.pipe, kurir.discard)");
        return -1;
    }
    lua_getfield(L, idx, "agent");
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        snprintf(err, cap, "route without an agent name");
        return -1;
    }
    struct buf agent;
    buf_init(&agent);
    buf_appends(&agent, lua_tostring(L, -1));
    lua_pop(L, 1);
    struct kv *kvs = NULL;
    size_t n = 0, capn = 0;
    int rc = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 1);
            continue;
        }
        const char *key = lua_tostring(L, -2);
        if (!strcmp(key, "agent") || lua_type(L, -1) == LUA_TFUNCTION) {
            lua_pop(L, 1);
            continue;
        }
        int vi = lua_gettop(L);
        int items = lua_istable(L, vi) ? (int)lua_rawlen(L, vi) : 1;
        for (int i = 1; i <= items; i++) {
            struct buf k, v;
            buf_init(&k);
            buf_init(&v);
            buf_appends(&k, key);
            bool ok;
            if (lua_istable(L, vi)) {
                buf_printf(&k, ".%d", i);
                lua_rawgeti(L, vi, i);
                lua_pushvalue(L, -1);
                ok = scalar(L, -1, &v);
                lua_pop(L, 2);
            } else {
                lua_pushvalue(L, vi);
                ok = scalar(L, -1, &v);
                lua_pop(L, 1);
            }
            if (!ok) {
                snprintf(err, cap, "route field %s: only strings, numbers, booleans and lists of them", key);
                buf_free(&k);
                buf_free(&v);
                rc = -1;
                break;
            }
            if (n == capn) {
                capn = capn ? capn * 2 : 8;
                kvs = xrealloc(kvs, size_mul(capn, sizeof(*kvs)));
            }
            kvs[n].k = xmemdup(buf_peek(&k), buf_used(&k));
            kvs[n].v = xmemdup(buf_peek(&v), buf_used(&v));
            n++;
            buf_free(&k);
            buf_free(&v);
        }
        lua_pop(L, 1);
        if (rc < 0) {
            lua_pop(L, 1);   /* the key */
            break;
        }
    }
    if (rc == 0) {
        if (n > 1)
            qsort(kvs, n, sizeof(*kvs), kv_cmp);
        queue_file_token(out, buf_peek(&agent), buf_used(&agent));
        for (size_t i = 0; i < n; i++) {
            buf_append(out, " ", 1);
            queue_file_token(out, kvs[i].k, strlen(kvs[i].k));
            buf_append(out, "=", 1);
            queue_file_token(out, kvs[i].v, strlen(kvs[i].v));
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(kvs[i].k);
        free(kvs[i].v);
    }
    free(kvs);
    buf_free(&agent);
    return rc;
}
