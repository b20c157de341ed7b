/* lua_shared.c - the Lua class of kurir.shared(name, size): a handle on a
 * shared_dict (shared_dict.c) with get/set/add/incr/delete/ttl. Values are
 * strings, numbers (integers stay integers) and booleans; expiry in
 * seconds (fractions allowed). The handle holds no Lua state of its own,
 * so one dictionary is the same across workers and reloads. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/engine.h"
#include "sys/shared_dict.h"

#define SHARED_MT "kurir.shared"

static struct shared_dict *shared_check(lua_State *L, int i)
{
    return *(struct shared_dict **)luaL_checkudata(L, i, SHARED_MT);
}

static void check_value(lua_State *L, int i, struct sd_value *v)
{
    memset(v, 0, sizeof(*v));
    switch (lua_type(L, i)) {
    case LUA_TNIL:
    case LUA_TNONE: v->t = SD_NIL; break;
    case LUA_TBOOLEAN: v->t = SD_BOOL; v->b = lua_toboolean(L, i); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, i)) {
            v->t = SD_INT;
            v->i = lua_tointeger(L, i);
        } else {
            v->t = SD_NUM;
            v->d = lua_tonumber(L, i);
        }
        break;
    case LUA_TSTRING: v->t = SD_STR; v->s = lua_tolstring(L, i, &v->n); break;
    default:
        luaL_argerror(L, i, lua_pushfstring(L, "expected a string, number or boolean, got %s",
                                            luaL_typename(L, i)));
    }
}

static void push_value(lua_State *L, const struct sd_value *v)
{
    switch (v->t) {
    case SD_BOOL: lua_pushboolean(L, v->b); break;
    case SD_INT: lua_pushinteger(L, v->i); break;
    case SD_NUM: lua_pushnumber(L, v->d); break;
    case SD_STR: lua_pushlstring(L, v->s, v->n); break;
    default: lua_pushnil(L); break;
    }
}

static double check_ttl(lua_State *L, int i)
{
    lua_Number t = luaL_optnumber(L, i, 0);
    luaL_argcheck(L, t >= 0 && t == t && t < 1e9, i, "expected a number of seconds >= 0 (0 = no expiry)");
    return (double)t;
}

/* (shared, string) -> value|nil */
static int sh_get(lua_State *L)
{
    struct shared_dict *d = shared_check(L, 1);
    size_t kn;
    const char *k = luaL_checklstring(L, 2, &kn);
    struct sd_value v;
    struct buf str;
    buf_init(&str);
    if (shared_dict_get(d, k, kn, &v, &str))
        push_value(L, &v);
    else
        lua_pushnil(L);
    buf_free(&str);
    return 1;
}

static int do_set(lua_State *L, enum sd_mode mode)
{
    struct shared_dict *d = shared_check(L, 1);
    size_t kn;
    const char *k = luaL_checklstring(L, 2, &kn);
    struct sd_value v;
    check_value(L, 3, &v);
    double ttl = check_ttl(L, 4);
    const char *err = NULL;
    int rc = shared_dict_set(d, k, kn, &v, ttl, mode, &err);
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, rc == 1 ? "exists" : err);
    return 2;
}

/* (shared, key, value|nil[, ttl]) -> true | nil, err */
static int sh_set(lua_State *L)
{
    return do_set(L, SD_SET);
}

/* (shared, key, value[, ttl]) -> true | nil, "exists" | nil, err */
static int sh_add(lua_State *L)
{
    luaL_argcheck(L, !lua_isnoneornil(L, 3), 3, "expected a value");
    return do_set(L, SD_ADD);
}

/* (shared, key) -> true */
static int sh_delete(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushnil(L);
    return do_set(L, SD_SET);
}

/* (shared, key[, by[, init[, init_ttl]]]) -> number | nil, err */
static int sh_incr(lua_State *L)
{
    struct shared_dict *d = shared_check(L, 1);
    size_t kn;
    const char *k = luaL_checklstring(L, 2, &kn);
    struct sd_value by, init, out;
    if (lua_isnoneornil(L, 3)) {
        memset(&by, 0, sizeof(by));
        by.t = SD_INT;
        by.i = 1;
    } else {
        luaL_checknumber(L, 3);
        check_value(L, 3, &by);
    }
    bool has_init = !lua_isnoneornil(L, 4);
    if (has_init) {
        luaL_checknumber(L, 4);
        check_value(L, 4, &init);
    }
    double ttl = check_ttl(L, 5);
    int rc = shared_dict_incr(d, k, kn, &by, has_init ? &init : NULL, ttl, &out);
    if (rc == 0) {
        push_value(L, &out);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, rc == 1 ? "not found" : rc == 2 ? "not a number" : "no memory");
    return 2;
}

/* (shared, key) -> seconds (0: no expiry) | nil, "not found" */
static int sh_ttl(lua_State *L)
{
    struct shared_dict *d = shared_check(L, 1);
    size_t kn;
    const char *k = luaL_checklstring(L, 2, &kn);
    double r;
    if (shared_dict_ttl(d, k, kn, &r)) {
        lua_pushnumber(L, r);
        return 1;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "not found");
    return 2;
}

/* (shared) -> {count=, evicted=} */
static int sh_stats(lua_State *L)
{
    long long count, evicted;
    shared_dict_stats(shared_check(L, 1), &count, &evicted);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, count);
    lua_setfield(L, -2, "count");
    lua_pushinteger(L, evicted);
    lua_setfield(L, -2, "evicted");
    return 1;
}

static int sh_tostring(lua_State *L)
{
    lua_pushfstring(L, "kurir.shared (%p)", (void *)shared_check(L, 1));
    return 1;
}

/* "10m", "512k", "1g" or a number of bytes */
static size_t check_size(lua_State *L, int i)
{
    if (lua_type(L, i) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, i);
        return n < 0 ? 0 : (size_t)n;
    }
    const char *s = luaL_checkstring(L, i);
    char *end;
    double n = strtod(s, &end);
    double mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1024.0 * 1024 * 1024, end++;
    if (end == s || *end || !(n > 0) || n * mul > 1e13)
        luaL_argerror(L, i, "expected a size: bytes, or a number with k, m or g");
    return (size_t)(n * mul);
}

/* (string, size) -> shared */
int lshared_open(lua_State *L)
{
    size_t nl;
    const char *name = luaL_checklstring(L, 1, &nl);
    luaL_argcheck(L, nl > 0 && nl < 128 && strlen(name) == nl, 1, "expected a name of 1 to 127 bytes");
    size_t size = check_size(L, 2);
    char err[256];
    struct shared_dict *d = shared_dict_open(name, size, err, sizeof(err));
    if (!d)
        return luaL_error(L, "kurir.shared: %s", err);
    *(struct shared_dict **)lua_newuserdatauv(L, sizeof(d), 0) = d;
    luaL_setmetatable(L, SHARED_MT);
    return 1;
}

static const luaL_Reg shared_methods[] = {
    {"get", sh_get}, {"set", sh_set}, {"add", sh_add}, {"incr", sh_incr},
    {"delete", sh_delete}, {"ttl", sh_ttl}, {"stats", sh_stats}, {NULL, NULL},
};

void lshared_register(lua_State *L)
{
    luaL_newmetatable(L, SHARED_MT);
    luaL_newlib(L, shared_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sh_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
