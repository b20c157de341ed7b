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
 * little else: every view shares one metatable per engine (made once by
 * laddress_register, its metamethods plain C functions). What a view
 * points at sits in the table under integer keys no script uses
 * (math.mininteger and the two above it): the envelope's anchor, its index
 * (-1 for the sender) and the route value. The anchor is a userdata
 * holding one reference on the envelope, shared by the views of one
 * envelope (a recipient's view takes the sender's), so a view the script
 * keeps after the transaction reads the envelope it belonged to, never
 * freed memory; one finalizer per transaction, not per view. Built-in
 * names are told apart in C, without a table lookup. A script can still
 * reach the hidden keys (a raw `next`, rawset), so every read checks the
 * anchor (its size and magic word) and the index range and raises "not a
 * kurir address" rather than trusting them; assigning one the table
 * lacks (the route before it is set) raises. */
#include <lauxlib.h>
#include <string.h>

#include "lua/lroute.h"
#include "proto/envelope.h"
#include "smtp/engine_session.h"

#define ADDRESS_MT "kurir.address"
#define ANCHOR_MT "kurir.address_envelope"

/* The hidden keys of a view: integers no script uses as a field name
 * (integer keys are found on Lua's fast path, about half the cost of a
 * light userdata key), and the registry keys of the metatables. */
#define KEY_ANCHOR LUA_MININTEGER
#define KEY_IDX (LUA_MININTEGER + 1)
#define KEY_ROUTE (LUA_MININTEGER + 2)
static const char key_anchor_mt, key_address_mt;

/* magic is &key_anchor_mt: a userdata a script moved under a hidden key is
 * told from an anchor without a metatable lookup (only C makes userdata,
 * and none of kurir's others starts with this address) */
struct anchor {
    const void *magic;
    struct envelope *env;            /* one reference, dropped by __gc; NULL after */
};

/* the built-in names */
enum field { F_NONE, F_ADDRESS, F_USER, F_DOMAIN, F_PARAMS, F_ROUTE };
static const char *const field_names[] = {NULL, "address", "user", "domain", "params", "route"};

struct view {
    struct envelope *env;
    int idx;
};

/* The anchor at the top of the stack, or NULL when it is not one. */
static struct anchor *anchor_at_top(lua_State *L)
{
    if (lua_type(L, -1) != LUA_TUSERDATA || lua_rawlen(L, -1) != sizeof(struct anchor))
        return NULL;
    struct anchor *a = lua_touserdata(L, -1);
    return a->magic == &key_anchor_mt && a->env ? a : NULL;
}

/* The envelope and index of view t (absolute index); false when the hidden
 * keys do not hold an anchor and an index of its envelope. Leaves the
 * stack as it was. */
static bool view_read(lua_State *L, int t, struct view *v)
{
    lua_rawgeti(L, t, KEY_ANCHOR);
    struct anchor *a = anchor_at_top(L);
    lua_rawgeti(L, t, KEY_IDX);
    int isint = 0;
    lua_Integer i = lua_tointegerx(L, -1, &isint);
    lua_pop(L, 2);
    if (!a || !isint || i < -1 || i >= a->env->nrcpts)
        return false;
    v->env = a->env;
    v->idx = (int)i;
    return true;
}

/* The view at index 1 of a metamethod (the shared metatable is only ever
 * set on views: __metatable keeps scripts from setting it elsewhere). */
static struct view view_check(lua_State *L)
{
    struct view v = {NULL, 0};
    if (!view_read(L, 1, &v))
        luaL_error(L, "not a kurir address");
    return v;
}

/* The built-in that key k names (F_NONE when k is not a string or none),
 * told apart by length and bytes: no table lookup, no string made. */
static enum field field_of(lua_State *L, int k)
{
    if (lua_type(L, k) != LUA_TSTRING)
        return F_NONE;
    size_t n;
    const char *s = lua_tolstring(L, k, &n);
    enum field f = F_NONE;
    switch (n) {
    case 4: f = F_USER; break;
    case 5: f = F_ROUTE; break;
    case 6: f = s[0] == 'd' ? F_DOMAIN : F_PARAMS; break;
    case 7: f = F_ADDRESS; break;
    default: return F_NONE;
    }
    return memcmp(s, field_names[f], n) == 0 ? f : F_NONE;
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
    case F_ROUTE: lua_rawgeti(L, 1, KEY_ROUTE); break;
    case F_NONE: lua_pushnil(L); break;
    }
}

static bool hidden_key(lua_State *L, int k)
{
    if (!lua_isinteger(L, k))
        return false;
    lua_Integer i = lua_tointeger(L, k);
    return i == KEY_ANCHOR || i == KEY_IDX || i == KEY_ROUTE;
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
    if (hidden_key(L, 2))
        return luaL_error(L, "%s[%I] is reserved", v.idx < 0 ? "from" : "rcpt", lua_tointeger(L, 2));
    if (f == F_ROUTE && v.idx >= 0) {
        lua_pushvalue(L, 3);
        lua_rawseti(L, 1, KEY_ROUTE);
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

/* (anchor) -> () ; idempotent: a script that reached the anchor through
 * a raw `next` cannot see its metatable (__metatable), and a second call
 * finds env NULL */
static int anchor_gc(lua_State *L)
{
    struct anchor *a = lua_touserdata(L, 1);
    if (a && lua_rawlen(L, 1) == sizeof(*a) && a->magic == &key_anchor_mt) {
        envelope_unref(a->env);
        a->env = NULL;
    }
    return 0;
}

void laddress_register(lua_State *L)
{
    luaL_newmetatable(L, ANCHOR_MT);
    lua_pushcfunction(L, anchor_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, ANCHOR_MT);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_anchor_mt);

    static const luaL_Reg meta[] = {
        {"__index", l_index},
        {"__newindex", l_newindex},
        {"__pairs", l_pairs},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    luaL_newmetatable(L, ADDRESS_MT);    /* sets __name */
    luaL_setfuncs(L, meta, 0);
    lua_pushliteral(L, ADDRESS_MT);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_address_mt);
}

void laddress_push(lua_State *L, struct envelope *env, int idx, int sibling)
{
    sibling = sibling ? lua_absindex(L, sibling) : 0;
    lua_createtable(L, 0, 2);                              /* the view */
    struct view sv;
    if (sibling && lua_istable(L, sibling) && view_read(L, sibling, &sv) && sv.env == env) {
        lua_rawgeti(L, sibling, KEY_ANCHOR);
    } else {
        struct anchor *a = lua_newuserdatauv(L, sizeof(*a), 0);
        a->magic = &key_anchor_mt;
        a->env = NULL;
        lua_rawgetp(L, LUA_REGISTRYINDEX, &key_anchor_mt);
        lua_setmetatable(L, -2);
        envelope_ref(env);
        a->env = env;
    }
    lua_rawseti(L, -2, KEY_ANCHOR);
    lua_pushinteger(L, idx);
    lua_rawseti(L, -2, KEY_IDX);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_address_mt);
    lua_setmetatable(L, -2);
}

void laddress_push_route(lua_State *L, int i)
{
    if (lua_istable(L, i))
        lua_rawgeti(L, i, KEY_ROUTE);
    else
        lua_pushnil(L);
}

int laddress_index(lua_State *L, int i, const struct envelope *env)
{
    i = lua_absindex(L, i);
    if (!lua_istable(L, i) || !lua_getmetatable(L, i))
        return -1;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_address_mt);
    bool is_view = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    struct view v;
    if (!is_view || !view_read(L, i, &v))
        return -1;
    return v.env == env ? v.idx : -1;
}
