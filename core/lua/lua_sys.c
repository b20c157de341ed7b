/* lua_sys.c - what plain Lua lacks and the mock needs: kurir.fs.list(dir),
 * the names in a directory (no "." or ".."), to rebuild the store's index
 * from the Maildir at start. (The clocks, kurir.now() and kurir.time(),
 * live in lua_kurir.c.) Owns nothing past one call. */
#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <string.h>

#include "lua/lua_mime.h"
#include "proto/util.h"

/* (string) -> {string} | nil, err */
static int l_list(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_newtable(L);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        lua_pushstring(L, de->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    return 1;
}

void lua_fs_open(lua_State *L)
{
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_list);
    lua_setfield(L, -2, "list");
    lua_setfield(L, -2, "fs");
}
