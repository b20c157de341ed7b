/* lua_mime.h - kurir.mime and msg:mime() (GMime 3), see lua_mime.c. */
#ifndef KURIR_LUA_MIME_H
#define KURIR_LUA_MIME_H

#include <lua.h>

/* (string|message) -> table | nil, err */
int lua_mime_parse(lua_State *L);
/* kurir.mime on the table at the top of the stack */
void lua_mime_open(lua_State *L);
/* kurir.fs (lua_sys.c) on the table at the top */
void lua_fs_open(lua_State *L);

#endif
