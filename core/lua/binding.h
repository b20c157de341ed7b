/* binding.h - how a kurir Lua class is registered: a namespaced metatable
 * whose __index looks a key up in a method table (functions shared by
 * every object, as Lua's liolib does), then in a table of field getters
 * (one C function per read-only field), then in the class's own fallback
 * (the script's per-object values). No string compares, no closure made
 * per access. */
#ifndef KURIR_BINDING_H
#define KURIR_BINDING_H

#include <lauxlib.h>
#include <lua.h>

struct binding_class {
    const char *name;            /* metatable name, e.g. "kurir.session" */
    const luaL_Reg *meta;        /* __tostring, __gc, ... (no __index) */
    const luaL_Reg *methods;     /* obj:method(...) */
    const luaL_Reg *fields;      /* obj.field: getter(obj) -> value */
    /* (obj, key) -> value for other keys; NULL: nil */
    lua_CFunction index;
    /* (obj, key, value) for keys that are neither methods nor fields;
     * NULL: objects take no new keys. Built-in keys are read-only. */
    lua_CFunction newindex;
};

/* Create the metatable of c in L's registry. */
void binding_register(lua_State *L, const struct binding_class *c);
/* Add a method to the registered class name (a higher layer extends a
 * lower layer's class, e.g. msg:enqueue from queue/). */
void binding_add_method(lua_State *L, const char *name, const char *method, lua_CFunction fn);

#endif
