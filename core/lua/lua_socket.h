/* lua_socket.h - kurir.connect and the "kurir.socket" userdata: a TCP/TLS
 * client socket whose operations suspend only the calling session's hook
 * (SPEC 2.2 waiting functions). */
#ifndef KURIR_LUA_SOCKET_H
#define KURIR_LUA_SOCKET_H

#include <lua.h>

/* kurir.connect(host, port [, opts]) -> socket | nil, err */
int lsocket_connect(lua_State *L);
/* Create the "kurir.socket" metatable. */
void lsocket_register(lua_State *L);

#endif
