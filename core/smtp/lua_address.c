/* lua_address.c - the address objects the hooks see (`from`, `rcpt`,
 * `s.from`, `s.rcpts`, `msg.from`, `msg.rcpts`): Lua tables that are views
 * on the transaction's C envelope (proto/envelope.h). `address`, `user`,
 * `domain` and `params` are read from the envelope on every access and are
 * read-only; `rcpt.route` keeps the Lua value the script set (so a route
 * object stays itself, with its methods) and writes its route string
 * through to the envelope, which is what the queue stores. Any other field
 * is the script's own and lives in the table itself.
 *
 * Each view has its own metatable holding a handle (userdata) with a
 * reference on the envelope, so a view the script keeps after the
 * transaction reads the envelope it belonged to, never freed memory. */
#include <lauxlib.h>
#include <string.h>

#include "lua/lroute.h"
#include "proto/envelope.h"
#include "smtp/engine_session.h"

#define ADDRESS_MT "kurir.address"
#define HANDLE_MT "kurir.address_handle"

struct laddr {
    struct envelope *env;            /* one reference, dropped by __gc */
    int idx;                         /* recipient index, -1 for the sender */
};

static const char *const builtin[] = {"address", "user", "domain", "params", NULL};

/* The handle of the view at index 1 (its metatable's [1]). */
static struct laddr *handle_of(lua_State *L, int i)
{
    struct laddr *h = NULL;
    if (lua_getmetatable(L, i)) {
        lua_rawgeti(L, -1, 1);
        h = luaL_testudata(L, -1, HANDLE_MT);
        lua_pop(L, 2);
    }
    if (!h || !h->env)
        luaL_error(L, "not a kurir address");
    return h;
}

static const struct env_addr *addr_of(const struct laddr *h)
{
    return h->idx < 0 ? &h->env->from : &h->env->rcpts[h->idx].addr;
}

static void push_params(lua_State *L, const struct env_addr *a)
{
    lua_createtable(L, 0, a->nparams);
    for (int i = 0; i < a->nparams; i++) {
        if (a->params[i].value)
            lua_pushstring(L, a->params[i].value);
        else
            lua_pushboolean(L, 1);
        lua_setfield(L, -2, a->params[i].key);
    }
}

/* Push built-in field k of the view; false when k is not one. The route
 * is the handle's user value (nil until the script sets one). */
static bool push_builtin(lua_State *L, const struct laddr *h, int hidx, const char *k)
{
    const struct env_addr *a = addr_of(h);
    if (!strcmp(k, "address"))
        lua_pushstring(L, a->address);
    else if (!strcmp(k, "user"))
        lua_pushstring(L, a->user);
    else if (!strcmp(k, "domain"))
        lua_pushstring(L, a->domain);
    else if (!strcmp(k, "params"))
        push_params(L, a);
    else if (h->idx >= 0 && !strcmp(k, "route"))
        lua_getiuservalue(L, hidx, 1);
    else
        return false;
    return true;
}

/* (address, key) -> value */
static int l_index(lua_State *L)
{
    struct laddr *h = handle_of(L, 1);
    if (lua_type(L, 2) != LUA_TSTRING)
        return 0;
    lua_getmetatable(L, 1);
    lua_rawgeti(L, -1, 1);
    if (!push_builtin(L, h, lua_gettop(L), lua_tostring(L, 2)))
        lua_pushnil(L);
    return 1;
}

/* (address, key, value) -> () ; rcpt.route writes through, built-ins
 * raise, anything else is the script's */
static int l_newindex(lua_State *L)
{
    struct laddr *h = handle_of(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        for (int i = 0; builtin[i]; i++)
            if (!strcmp(k, builtin[i]))
                return luaL_error(L, "%s.%s is read-only", h->idx < 0 ? "from" : "rcpt", k);
        if (h->idx >= 0 && !strcmp(k, "route")) {
            lua_getmetatable(L, 1);
            lua_rawgeti(L, -1, 1);
            lua_pushvalue(L, 3);
            lua_setiuservalue(L, -2, 1);
            /* what the queue stores: the route string of a factory route;
             * anything else (nil, a deliver object, a mistake that the
             * route check reports) leaves none */
            struct buf rb;
            buf_init(&rb);
            char err[256];
            if (lroute_is(L, 3) && lroute_serialize(L, 3, &rb, err, sizeof(err)) == 0) {
                buf_append(&rb, "", 1);
                envelope_rcpt_set_route(h->env, h->idx, buf_peek(&rb));
            } else {
                envelope_rcpt_set_route(h->env, h->idx, NULL);
            }
            buf_free(&rb);
            return 0;
        }
    }
    lua_rawset(L, 1);
    return 0;
}

/* (table, key) -> key, value | nil ; `next` without relying on _ENV */
static int l_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1))
        return 2;
    lua_pushnil(L);
    return 1;
}

/* (address) -> next, snapshot, nil ; built-ins, route and the script's fields */
static int l_pairs(lua_State *L)
{
    struct laddr *h = handle_of(L, 1);
    lua_getmetatable(L, 1);
    lua_rawgeti(L, -1, 1);
    int hidx = lua_gettop(L);
    lua_newtable(L);
    int snap = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, snap);
    }
    for (int i = 0; builtin[i]; i++) {
        push_builtin(L, h, hidx, builtin[i]);
        lua_setfield(L, snap, builtin[i]);
    }
    if (h->idx >= 0) {
        push_builtin(L, h, hidx, "route");
        lua_setfield(L, snap, "route");
    }
    lua_pushcfunction(L, l_next);
    lua_pushvalue(L, snap);
    lua_pushnil(L);
    return 3;
}

static int l_tostring(lua_State *L)
{
    struct laddr *h = handle_of(L, 1);
    lua_pushfstring(L, "kurir.address(<%s>)", addr_of(h)->address);
    return 1;
}

static int handle_gc(lua_State *L)
{
    struct laddr *h = luaL_checkudata(L, 1, HANDLE_MT);
    envelope_unref(h->env);
    h->env = NULL;
    return 0;
}

void laddress_register(lua_State *L)
{
    luaL_newmetatable(L, HANDLE_MT);
    lua_pushcfunction(L, handle_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

void laddress_push(lua_State *L, struct envelope *env, int idx)
{
    lua_newtable(L);                                     /* the view */
    lua_createtable(L, 1, 7);                            /* its metatable */
    struct laddr *h = lua_newuserdatauv(L, sizeof(*h), 1);
    h->env = NULL;
    luaL_setmetatable(L, HANDLE_MT);
    envelope_ref(env);
    h->env = env;
    h->idx = idx;
    lua_rawseti(L, -2, 1);
    static const luaL_Reg meta[] = {
        {"__index", l_index},
        {"__newindex", l_newindex},
        {"__pairs", l_pairs},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    luaL_setfuncs(L, meta, 0);
    lua_pushliteral(L, ADDRESS_MT);
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, ADDRESS_MT);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

int laddress_index(lua_State *L, int i, const struct envelope *env)
{
    if (!lua_istable(L, i) || !lua_getmetatable(L, i))
        return -1;
    lua_rawgeti(L, -1, 1);
    struct laddr *h = luaL_testudata(L, -1, HANDLE_MT);
    int idx = h && h->env == env ? h->idx : -1;
    lua_pop(L, 2);
    return idx;
}
