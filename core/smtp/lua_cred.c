/* lua_cred.c - the "kurir.cred" userdata given to the auth hook: the
 * mechanism, the identities the client sent, and cred:verify(secret) which
 * checks a plaintext secret for every mechanism (CRAM-MD5 included). It is
 * closed once the AUTH exchange is over. */
#include <lauxlib.h>
#include <string.h>

#include "lua/binding.h"
#include "smtp/engine_session.h"
#include "proto/sasl.h"

#define CRED_MT "kurir.cred"

struct lcred {
    struct session *s;
};

static struct session *cred_check(lua_State *L, int i)
{
    struct lcred *c = luaL_checkudata(L, i, CRED_MT);
    if (!c->s || c->s->sasl.mech == SASL_NONE)
        luaL_error(L, "credentials are closed (only valid inside the auth hook)");
    return c->s;
}

/* (cred, string) -> boolean */
static int l_verify(lua_State *L)
{
    struct session *s = cred_check(L, 1);
    size_t len;
    const char *secret = luaL_checklstring(L, 2, &len);
    lua_pushboolean(L, sasl_verify(&s->sasl, secret, len));
    return 1;
}

/* (cred) -> string */
static int f_mechanism(lua_State *L)
{
    lua_pushstring(L, sasl_mech_name(cred_check(L, 1)->sasl.mech));
    return 1;
}

/* (cred) -> string */
static int f_user(lua_State *L)
{
    const struct sasl *a = &cred_check(L, 1)->sasl;
    lua_pushstring(L, a->user ? a->user : "");
    return 1;
}

/* (cred) -> string|nil ; PLAIN and LOGIN only */
static int f_password(lua_State *L)
{
    const struct sasl *a = &cred_check(L, 1)->sasl;
    if (a->password)
        lua_pushstring(L, a->password);
    else
        lua_pushnil(L);
    return 1;
}

/* (cred) -> string|nil */
static int f_authzid(lua_State *L)
{
    const struct sasl *a = &cred_check(L, 1)->sasl;
    if (a->authzid)
        lua_pushstring(L, a->authzid);
    else
        lua_pushnil(L);
    return 1;
}

static int l_tostring(lua_State *L)
{
    struct lcred *c = luaL_checkudata(L, 1, CRED_MT);
    if (c->s && c->s->sasl.mech != SASL_NONE)
        lua_pushfstring(L, "kurir.cred(%s %s)", sasl_mech_name(c->s->sasl.mech),
                        c->s->sasl.user ? c->s->sasl.user : "");
    else
        lua_pushliteral(L, "kurir.cred(closed)");
    return 1;
}

static const luaL_Reg cred_meta[] = {
    {"__tostring", l_tostring},
    {NULL, NULL},
};

static const luaL_Reg cred_methods[] = {
    {"verify", l_verify},
    {NULL, NULL},
};

static const luaL_Reg cred_fields[] = {
    {"mechanism", f_mechanism},
    {"user", f_user},
    {"password", f_password},
    {"authzid", f_authzid},
    {NULL, NULL},
};

static const struct binding_class cred_class = {
    CRED_MT, cred_meta, cred_methods, cred_fields, NULL, NULL,
};

void lcred_register(lua_State *L)
{
    binding_register(L, &cred_class);
}

void lcred_push_new(lua_State *L, struct session *s)
{
    struct lcred *c = lua_newuserdatauv(L, sizeof(*c), 0);
    c->s = s;
    luaL_setmetatable(L, CRED_MT);
}

void lcred_invalidate(lua_State *L, int ref)
{
    if (ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    struct lcred *c = luaL_testudata(L, -1, CRED_MT);
    if (c)
        c->s = NULL;
    lua_pop(L, 1);
}
