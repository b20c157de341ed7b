/* binding.h - how a kurir Lua class is registered: a namespaced metatable
 * whose __index looks a key up in a method table (functions shared by
 * every object, as Lua's liolib does), then in a table of field getters
 * (one C function per read-only field), then in the class's own fallback
 * (the script's per-object values). No string compares, no closure made
 * per access, and the getters and fallbacks are called as plain C
 * functions on the metamethod's own stack (no lua_call). */
#ifndef KURIR_BINDING_H
#define KURIR_BINDING_H

#include <lauxlib.h>
#include <lua.h>

struct binding_class {
    const char *name;            /* metatable name, e.g. "kurir.session" */
    const luaL_Reg *meta;        /* __tostring, __gc, ... (no __index) */
    const luaL_Reg *methods;     /* obj:method(...) */
    const luaL_Reg *fields;      /* obj.field: getter(obj) -> value; called
                                  * directly (no upvalues), obj at index 1 */
    /* (obj, key) -> value for other keys; NULL: nil (also called directly) */
    lua_CFunction index;
    /* (obj, key, value) for keys that are neither methods nor fields;
     * NULL: objects take no new keys. Built-in keys are read-only. */
    lua_CFunction newindex;
};

/* The userdata at i if it is an object of a class whose objects are size
 * bytes and start with `magic` (the address of a static of the class's
 * file), else NULL. Cheaper than luaL_testudata (no registry lookup by
 * name); only C code makes userdata, and no other kind starts with that
 * address. A class's check falls back on luaL_checkudata for the error. */
static inline void *binding_test(lua_State *L, int i, const void *magic, size_t size)
{
    if (lua_type(L, i) != LUA_TUSERDATA || lua_rawlen(L, i) != size)
        return NULL;
    void *p = lua_touserdata(L, i);
    return *(const void *const *)p == magic ? p : NULL;
}

/* Create the metatable of c in L's registry. */
void binding_register(lua_State *L, const struct binding_class *c);
/* Add a method to the registered class name (a higher layer extends a
 * lower layer's class, e.g. msg:enqueue from queue/). */
void binding_add_method(lua_State *L, const char *name, const char *method, lua_CFunction fn);

#endif
