/* lstate.c - Lua states with the pooled allocator. What luaL_newstate adds
 * to lua_newstate is kept as it behaves in lauxlib: an error outside any
 * protected call prints "PANIC: unprotected error in call to Lua API
 * (<message>)" on stderr before Lua aborts, and warn() prints nothing
 * until the script sends the control message "@on" ("@off" stops it
 * again); a warning is "Lua warning: " and its pieces on one line. */
#include "lua/lstate.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "proto/pool_alloc.h"

static int on_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n",
            msg ? msg : "error object is not a string");
    fflush(stderr);
    return 0;   /* Lua aborts */
}

static void warn_off(void *ud, const char *msg, int tocont);
static void warn_on(void *ud, const char *msg, int tocont);

/* "@on" / "@off" as a whole message (not a piece of one): true when msg
 * was such a control message (an unknown one is ignored) */
static bool warn_control(lua_State *L, const char *msg, int tocont)
{
    if (tocont || msg[0] != '@')
        return false;
    if (strcmp(msg + 1, "on") == 0)
        lua_setwarnf(L, warn_on, L);
    else if (strcmp(msg + 1, "off") == 0)
        lua_setwarnf(L, warn_off, L);
    return true;
}

static void warn_off(void *ud, const char *msg, int tocont)
{
    warn_control(ud, msg, tocont);
}

/* a later piece of a warning: no prefix, the line ends with the last */
static void warn_more(void *ud, const char *msg, int tocont)
{
    fputs(msg, stderr);
    if (!tocont)
        fputs("\n", stderr);
    fflush(stderr);
    lua_setwarnf(ud, tocont ? warn_more : warn_on, ud);
}

static void warn_on(void *ud, const char *msg, int tocont)
{
    if (warn_control(ud, msg, tocont))
        return;
    fputs("Lua warning: ", stderr);
    warn_more(ud, msg, tocont);
}

lua_State *lstate_new(void)
{
    struct pool_alloc *p = pool_alloc_new(0);
    if (!p)
        return NULL;
    lua_State *L = lua_newstate(pool_alloc_fn, p);
    if (!L) {
        pool_alloc_destroy(p);
        return NULL;
    }
    lua_atpanic(L, on_panic);
    lua_setwarnf(L, warn_off, L);
    return L;
}

void lstate_close(lua_State *L)
{
    if (!L)
        return;
    void *ud = NULL;
    lua_Alloc f = lua_getallocf(L, &ud);
    lua_close(L);
    if (f == pool_alloc_fn)
        pool_alloc_destroy(ud);
}
