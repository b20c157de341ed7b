/* lua_address.c - the address objects the hooks see (`from`, `rcpt`,
 * `s.from`, `s.rcpts`, `msg.from`, `msg.rcpts`): Lua tables that are views
 * on the transaction's C envelope (proto/envelope.h). `address`, `user`,
 * `domain` and `params` are read from the envelope on every access and are
 * read-only; `rcpt.route` keeps the Lua value the script set (so a route
 * object stays itself, with its methods) and writes its route string
 * through to the envelope, which is what the queue stores. Any other field
 * is the script's own and lives in the table itself.
 *
 * A view is built at every MAIL and RCPT, so it costs one table and
 * nothing else: every view shares one metatable per engine (made once by
 * laddress_register), whose metamethods are C closures made at the same
 * time. What a view points at sits in the table under keys a script
 * cannot write by name (light userdata of this file's statics): the
 * envelope's anchor, its index (-1 for the sender) and the route value.
 * The anchor is a userdata holding one reference on the envelope, shared
 * by the views of one envelope (a recipient's view takes the sender's),
 * so a view the script keeps after the transaction reads the envelope it
 * belonged to, never freed memory; one finalizer per transaction, not
 * per view. A script can see those keys through a raw `next` and rawset
 * them, so every read checks the anchor's metatable and the index range
 * and raises "not a kurir address" rather than trusting them. */
#include <lauxlib.h>
#include <string.h>

#include "lua/lroute.h"
#include "proto/envelope.h"
#include "smtp/engine_session.h"

#define ADDRESS_MT "kurir.address"
#define ANCHOR_MT "kurir.address_envelope"

/* the hidden keys of a view, and the registry key of the anchors' metatable */
static const char key_anchor, key_idx, key_route, key_anchor_mt, key_address_mt;

struct anchor {
    struct envelope *env;            /* one reference, dropped by __gc */
};

/* what a built-in name is, from the upvalue table of the metamethods */
enum field { F_NONE, F_ADDRESS, F_USER, F_DOMAIN, F_PARAMS, F_ROUTE };
static const char *const field_names[] = {NULL, "address", "user", "domain", "params", "route"};

/* upvalues of every metamethod */
#define UV_ANCHOR_MT lua_upvalueindex(1)
#define UV_FIELDS lua_upvalueindex(2)

struct view {
    struct envelope *env;
    int idx;
};

/* The envelope and index of view t (absolute index); false when the hidden
 * keys do not hold an anchor and an index of that envelope. anchor_mt is
 * the stack index of the anchors' metatable. Leaves the stack as it was. */
static bool view_read(lua_State *L, int t, int anchor_mt, struct view *v)
{
    bool ok = false;
    v->env = NULL;
    v->idx = 0;
    if (lua_rawgetp(L, t, &key_anchor) == LUA_TUSERDATA && lua_getmetatable(L, -1)) {
        ok = lua_rawequal(L, -1, anchor_mt);
        lua_pop(L, 1);
    }
    if (ok) {
        v->env = ((struct anchor *)lua_touserdata(L, -1))->env;
        int isint = 0;
        lua_rawgetp(L, t, &key_idx);
        lua_Integer i = lua_tointegerx(L, -1, &isint);
        ok = isint && v->env && i >= -1 && i < v->env->nrcpts;
        v->idx = ok ? (int)i : 0;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return ok;
}

/* The view at index 1 of a metamethod (the shared metatable is only ever
 * set on views: __metatable keeps scripts from setting it elsewhere). */
static struct view view_check(lua_State *L)
{
    struct view v = {NULL, 0};
    if (!view_read(L, 1, UV_ANCHOR_MT, &v))
        luaL_error(L, "not a kurir address");
    return v;
}

/* The built-in that key k names (F_NONE when k is not a string or none). */
static enum field field_of(lua_State *L, int k)
{
    if (lua_type(L, k) != LUA_TSTRING)
        return F_NONE;
    lua_pushvalue(L, k);
    lua_rawget(L, UV_FIELDS);
    enum field f = (enum field)lua_tointeger(L, -1);   /* nil -> 0 */
    lua_pop(L, 1);
    return f;
}

static const struct env_addr *addr_of(const struct view *v)
{
    return v->idx < 0 ? &v->env->from : &v->env->rcpts[v->idx].addr;
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

/* Push built-in f of view 1 (f != F_NONE; the sender has no route). */
static void push_field(lua_State *L, const struct view *v, enum field f)
{
    const struct env_addr *a = addr_of(v);
    switch (f) {
    case F_ADDRESS: lua_pushstring(L, a->address); break;
    case F_USER: lua_pushstring(L, a->user); break;
    case F_DOMAIN: lua_pushstring(L, a->domain); break;
    case F_PARAMS: push_params(L, a); break;
    case F_ROUTE: lua_rawgetp(L, 1, &key_route); break;
    case F_NONE: lua_pushnil(L); break;
    }
}

/* (address, key) -> value ; only called for keys the table lacks */
static int l_index(lua_State *L)
{
    struct view v = view_check(L);
    enum field f = field_of(L, 2);
    if (f == F_ROUTE && v.idx < 0)
        f = F_NONE;                  /* the sender's `route` is the script's */
    push_field(L, &v, f);
    return 1;
}

/* (address, key, value) -> () ; rcpt.route writes through, built-ins
 * raise, anything else is the script's */
static int l_newindex(lua_State *L)
{
    struct view v = view_check(L);
    enum field f = field_of(L, 2);
    if (f != F_NONE && f != F_ROUTE)
        return luaL_error(L, "%s.%s is read-only", v.idx < 0 ? "from" : "rcpt", field_names[f]);
    if (f == F_ROUTE && v.idx >= 0) {
        lua_pushvalue(L, 3);
        lua_rawsetp(L, 1, &key_route);
        /* what the queue stores: the route string of a factory route;
         * anything else (nil, a deliver object, a mistake that the route
         * check reports) leaves none */
        struct buf rb;
        buf_init(&rb);
        char err[256];
        if (lroute_is(L, 3) && lroute_serialize(L, 3, &rb, err, sizeof(err)) == 0) {
            buf_append(&rb, "", 1);
            envelope_rcpt_set_route(v.env, v.idx, buf_peek(&rb));
        } else {
            envelope_rcpt_set_route(v.env, v.idx, NULL);
        }
        buf_free(&rb);
        return 0;
    }
    lua_settop(L, 3);
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

static bool hidden_key(lua_State *L, int k)
{
    if (lua_type(L, k) != LUA_TLIGHTUSERDATA)
        return false;
    const void *p = lua_touserdata(L, k);
    return p == &key_anchor || p == &key_idx || p == &key_route;
}

/* (address) -> next, snapshot, nil ; built-ins, route and the script's fields */
static int l_pairs(lua_State *L)
{
    struct view v = view_check(L);
    lua_settop(L, 1);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (hidden_key(L, -2)) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, 2);
    }
    for (enum field f = F_ADDRESS; f <= F_ROUTE; f++) {
        if (f == F_ROUTE && v.idx < 0)
            break;
        push_field(L, &v, f);
        lua_setfield(L, 2, field_names[f]);
    }
    lua_pushcfunction(L, l_next);
    lua_insert(L, 2);
    lua_pushnil(L);
    return 3;
}

static int l_tostring(lua_State *L)
{
    struct view v = view_check(L);
    lua_pushfstring(L, "kurir.address(<%s>)", addr_of(&v)->address);
    return 1;
}

static int anchor_gc(lua_State *L)
{
    struct anchor *a = luaL_checkudata(L, 1, ANCHOR_MT);
    envelope_unref(a->env);
    a->env = NULL;
    return 0;
}

void laddress_register(lua_State *L)
{
    luaL_newmetatable(L, ANCHOR_MT);
    lua_pushcfunction(L, anchor_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_anchor_mt);
    int anchor_mt = lua_gettop(L);

    luaL_newmetatable(L, ADDRESS_MT);   /* sets __name */
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_address_mt);
    lua_pushliteral(L, ADDRESS_MT);
    lua_setfield(L, -2, "__metatable");
    lua_createtable(L, 0, F_ROUTE);
    for (int f = F_ADDRESS; f <= F_ROUTE; f++) {
        lua_pushinteger(L, f);
        lua_setfield(L, -2, field_names[f]);
    }
    int fields = lua_gettop(L);
    static const luaL_Reg meta[] = {
        {"__index", l_index},
        {"__newindex", l_newindex},
        {"__pairs", l_pairs},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    lua_pushvalue(L, anchor_mt);
    lua_pushvalue(L, fields);
    lua_remove(L, fields);
    luaL_setfuncs(L, meta, 2);           /* each closure gets both upvalues */
    lua_pop(L, 2);                       /* the address and anchor metatables */
}

void laddress_push(lua_State *L, struct envelope *env, int idx, int sibling)
{
    sibling = sibling ? lua_absindex(L, sibling) : 0;
    lua_createtable(L, 0, 2);                              /* the view */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_anchor_mt);
    int anchor_mt = lua_gettop(L);
    struct view sv;
    if (sibling && lua_istable(L, sibling) && view_read(L, sibling, anchor_mt, &sv) && sv.env == env) {
        lua_rawgetp(L, sibling, &key_anchor);
    } else {
        struct anchor *a = lua_newuserdatauv(L, sizeof(*a), 0);
        a->env = NULL;
        lua_pushvalue(L, anchor_mt);
        lua_setmetatable(L, -2);
        envelope_ref(env);
        a->env = env;
    }
    lua_rawsetp(L, -3, &key_anchor);
    lua_pop(L, 1);                                         /* anchor_mt */
    lua_pushinteger(L, idx);
    lua_rawsetp(L, -2, &key_idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_address_mt);
    lua_setmetatable(L, -2);
}

int laddress_index(lua_State *L, int i, const struct envelope *env)
{
    i = lua_absindex(L, i);
    if (!lua_istable(L, i) || !lua_getmetatable(L, i))
        return -1;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_address_mt);
    bool is_view = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!is_view)
        return -1;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_anchor_mt);
    struct view v;
    bool ok = view_read(L, i, lua_gettop(L), &v);
    lua_pop(L, 1);
    return ok && v.env == env ? v.idx : -1;
}
