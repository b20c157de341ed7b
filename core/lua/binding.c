/* binding.c - the shared __index / __newindex of kurir's Lua classes
 * (binding.h). The method, getter and fallback tables are upvalues of the
 * metamethods, so a lookup is two raw table reads. A getter or fallback
 * is a C function run on the metamethod's stack (obj, key[, value]) as a
 * direct call: what it pushes last is the result. */
#include "lua/binding.h"

#include <stdbool.h>

/* upvalues: 1 methods, 2 getters, 3 fallback (or nil) */
static int class_index(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
            return 1;
        lua_pop(L, 1);
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) {
            lua_CFunction get = lua_tocfunction(L, -1);
            lua_settop(L, 2);
            return get(L);
        }
        lua_pop(L, 1);
    }
    lua_CFunction fallback = lua_tocfunction(L, lua_upvalueindex(3));
    if (!fallback) {
        lua_pushnil(L);
        return 1;
    }
    lua_settop(L, 2);
    return fallback(L);
}

/* upvalues: 1 methods, 2 getters, 3 fallback (or nil), 4 class name */
static int class_newindex(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        bool method = lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL;
        lua_pushvalue(L, 2);
        bool field = lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL;
        lua_pop(L, 2);
        if (method || field)
            return luaL_error(L, "%s field '%s' is read-only", lua_tostring(L, lua_upvalueindex(4)),
                              lua_tostring(L, 2));
    }
    lua_CFunction fallback = lua_tocfunction(L, lua_upvalueindex(3));
    if (!fallback)
        return luaL_error(L, "%s objects take no new fields", lua_tostring(L, lua_upvalueindex(4)));
    lua_settop(L, 3);
    fallback(L);
    return 0;
}

static void push_lib(lua_State *L, const luaL_Reg *l)
{
    lua_newtable(L);
    if (l)
        luaL_setfuncs(L, l, 0);
}

void binding_register(lua_State *L, const struct binding_class *c)
{
    luaL_newmetatable(L, c->name);
    if (c->meta)
        luaL_setfuncs(L, c->meta, 0);
    int mt = lua_gettop(L);
    push_lib(L, c->methods);
    push_lib(L, c->fields);
    for (int i = 1; i <= 2; i++)
        lua_pushvalue(L, mt + i);
    if (c->index)
        lua_pushcfunction(L, c->index);
    else
        lua_pushnil(L);
    lua_pushcclosure(L, class_index, 3);
    lua_setfield(L, mt, "__index");
    if (c->newindex)
        lua_pushcfunction(L, c->newindex);
    else
        lua_pushnil(L);
    lua_pushstring(L, c->name);
    lua_pushcclosure(L, class_newindex, 4);   /* takes methods and fields */
    lua_setfield(L, mt, "__newindex");
    lua_settop(L, mt - 1);
}

void binding_add_method(lua_State *L, const char *name, const char *method, lua_CFunction fn)
{
    luaL_getmetatable(L, name);
    lua_getfield(L, -1, "__index");
    lua_getupvalue(L, -1, 1);            /* the method table */
    lua_pushcfunction(L, fn);
    lua_setfield(L, -2, method);
    lua_pop(L, 3);
}
