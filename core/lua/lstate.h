/* lstate.h - a new Lua state as luaL_newstate makes it (the panic
 * function, warnings off until "@on"), but with kurir's allocator
 * (proto/pool_alloc.h): the small blocks of every message come from free
 * lists instead of malloc. */
#ifndef KURIR_LSTATE_H
#define KURIR_LSTATE_H

#include <lua.h>

/* NULL when memory is short. */
lua_State *lstate_new(void);
/* lua_close, then the allocator's kept blocks. */
void lstate_close(lua_State *L);

#endif
