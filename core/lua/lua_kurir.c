/* lua_kurir.c - the `kurir` module table that `require "kurir"` returns:
 * kurir.on (hook table that refuses unknown names and cannot be replaced),
 * kurir.sleep, kurir.now/kurir.time (clocks),
 * kurir.spawn / kurir.every (detached tasks, engine.c),
 * kurir.log, kurir.version, kurir.hostname, kurir.worker, kurir.shared,
 * kurir.reply (the texts of proto/reply.c for the shipped Lua)
 * (lua_shared.c), kurir.connect (lua_socket.c),
 * kurir.dns (lua_dns.c). The shipped kurir.api module adds the parts
 * written in Lua (kurir.configure, kurir.maildir, kurir.connect by name). */
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>
#include <unistd.h>

#include "lua/dns.h"
#include "lua/engine.h"
#include "proto/logfmt.h"
#include "proto/reply.h"
#include "lua/lua_mime.h"
#include "lua/lua_socket.h"
#include "sys/maildir.h"
#include "net/worker.h"
#include "lua/task.h"

static struct engine *engine_of(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "kurir.engine");
    struct engine *e = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return e;
}

/* (table, string, function) -> () ; kurir.on.<name> = fn */
static int on_newindex(lua_State *L)
{
    const char *name = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    bool known = false;
    for (int h = 0; name && h < HOOK_COUNT; h++)
        if (!strcmp(name, engine_hook_name(h)))
            known = true;
    if (!known) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (int h = 0; h < HOOK_COUNT; h++) {
            if (h > 0)
                luaL_addstring(&b, ", ");
            luaL_addstring(&b, engine_hook_name(h));
        }
        luaL_pushresult(&b);
        return luaL_error(L, "unknown hook '%s' (hooks: %s)", name ? name : luaL_typename(L, 2),
                          lua_tostring(L, -1));
    }
    if (!lua_isfunction(L, 3) && !lua_isnil(L, 3))
        return luaL_error(L, "hook '%s' must be a function, got %s", name, luaL_typename(L, 3));
    lua_getfield(L, LUA_REGISTRYINDEX, "kurir.hooks");
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

/* (table, key) -> function|nil */
static int on_index(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "kurir.hooks");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* (table, key, value) -> () ; kurir.<key> = value, except kurir.on */
static int kurir_newindex(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "on"))
        return luaL_error(L, "kurir.on cannot be replaced by a table; set each hook on it: "
                             "function kurir.on.rcpt(s, rcpt) ... end");
    lua_rawset(L, 1);
    return 0;
}

/* () -> number ; monotonic clock, fractional seconds */
static int k_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)time_mono());
    return 1;
}

/* () -> number ; wall clock, seconds since the epoch, fractional */
static int k_time(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)time_wall());
    return 1;
}

/* (number) -> () ; suspends only the calling hook or task */
static int k_sleep(lua_State *L)
{
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0 && secs == secs, 1, "expected a non-negative number of seconds");
    return task_sleep(L, (double)secs);
}

/* (function, ...) -> true | nil, "stopped" ; fn(...) runs in a new task
 * from the next loop iteration (after the script loaded, at load time) */
static int k_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (engine_spawn(engine_of(L), L, lua_gettop(L) - 1, 0) < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "stopped");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* (seconds, function) -> true | nil, "stopped" ; fn() every `seconds`,
 * the first run one period after the call (or after the script loaded) */
static int k_every(lua_State *L)
{
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0.001 && secs <= 1e9, 1, "expected a period of 0.001 to 1e9 seconds");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    if (engine_spawn(engine_of(L), L, 0, (double)secs) < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "stopped");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

void lkurir_log_fields(lua_State *L, int first, struct buf *b)
{
    int top = lua_gettop(L);
    if (top >= first + 1 && lua_type(L, first) == LUA_TSTRING && lua_istable(L, first + 1)) {
        /* keys in sorted order so lines are stable */
        lua_getglobal(L, "table");
        lua_newtable(L);
        int keys = lua_gettop(L);
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, first + 1)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING) {
                lua_pushvalue(L, -1);
                lua_rawseti(L, keys, ++n);
            }
        }
        lua_getfield(L, keys - 1, "sort");
        lua_pushvalue(L, keys);
        lua_call(L, 1, 0);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, keys, i);
            lua_gettable(L, first + 1);
            size_t vl;
            const char *v = luaL_tolstring(L, -1, &vl);
            lua_rawgeti(L, keys, i);
            logfmt_mem(b, lua_tostring(L, -1), v, vl);
            lua_pop(L, 3);
        }
        lua_settop(L, top);
        return;
    }
    luaL_Buffer lb;
    luaL_buffinit(L, &lb);
    for (int i = first; i <= top; i++) {
        if (i > first)
            luaL_addchar(&lb, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&lb);
    }
    luaL_pushresult(&lb);
    size_t ml;
    const char *m = lua_tolstring(L, -1, &ml);
    logfmt_mem(b, "msg", m, ml);
    lua_settop(L, top);
}

/* (event, fields) | (...) -> () */
static int k_log(lua_State *L)
{
    struct engine *e = engine_of(L);
    /* at load time there is no worker yet: the engine's own buffer */
    struct buf *b = e->w ? &e->w->log : &e->log;
    buf_reset(b);   /* drop a line that an error left half-built */
    const char *event = "script";
    if (lua_gettop(L) >= 2 && lua_type(L, 1) == LUA_TSTRING && lua_istable(L, 2))
        event = lua_tostring(L, 1);
    logfmt_begin(b, "info", NULL, event);
    lkurir_log_fields(L, 1, b);
    if (e->w)
        worker_log_end(e->w);
    else
        logfmt_emit(b, 2);
    return 0;
}

static int worker_id = 0, worker_count = 1;

void lkurir_set_worker(int id, int count)
{
    worker_id = id;
    worker_count = count;
}

/* () -> integer|nil, integer ; nil while the master checks the script */
static int k_worker(lua_State *L)
{
    if (worker_id < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, worker_id);
    lua_pushinteger(L, worker_count);
    return 2;
}

/* () -> string */
static int k_hostname(lua_State *L)
{
    struct engine *e = engine_of(L);
    if (e->cfg.hostname) {
        lua_pushstring(L, e->cfg.hostname);
        return 1;
    }
    char host[256];
    if (gethostname(host, sizeof(host) - 1) != 0)
        strcpy(host, "localhost");
    host[sizeof(host) - 1] = '\0';
    lua_pushstring(L, host);
    return 1;
}

/* (dir) -> true | nil, err: create the Maildir dir (tmp/ new/ cur/ and
 * parents) now; kurir.api hands it to kurir.maildir (agent:prepare()) and removes it
 * from the kurir table. */
static int k_maildir_prepare(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    if (maildir_prepare(dir) < 0) {
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: %s", dir, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* (name [, arg]) -> code, text: a reply of the one table (proto/reply.c)
 * as a hook returns it, "%a" in its text replaced by arg; the shipped Lua
 * answers with these rather than writing reply texts of its own. */
static int k_reply(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *arg = luaL_optstring(L, 2, NULL);
    enum reply_id id = reply_by_name(name);
    if (id == R_COUNT) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (int i = 0; reply_name_at(i); i++) {
            luaL_addstring(&b, i ? ", " : "");
            luaL_addstring(&b, reply_name_at(i));
        }
        luaL_pushresult(&b);
        return luaL_error(L, "kurir.reply: no reply named \"%s\" (one of %s)", name, lua_tostring(L, -1));
    }
    struct buf t;
    buf_init(&t);
    reply_row_text(&t, id, arg);
    lua_pushinteger(L, reply_get(id)->code);
    lua_pushlstring(L, buf_peek(&t), buf_used(&t));
    buf_free(&t);
    return 2;
}

static const luaL_Reg kurir_funcs[] = {
    {"sleep", k_sleep},
    {"reply", k_reply},
    {"spawn", k_spawn},
    {"every", k_every},
    {"log", k_log},
    {"hostname", k_hostname},
    {"_maildir_prepare", k_maildir_prepare},   /* taken by kurir.api for kurir.maildir */
    {"connect", lsocket_connect},
    {"now", k_now},
    {"time", k_time},
    {"worker", k_worker},
    {"shared", lshared_open},
    {NULL, NULL},
};

void lkurir_open(lua_State *L)
{
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "kurir.hooks");
    lsocket_register(L);
    lshared_register(L);

    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    luaL_newlib(L, kurir_funcs);
    ldns_open(L);
    lua_mime_open(L);
    lua_fs_open(L);
    lua_pushstring(L, KURIR_VERSION);
    lua_setfield(L, -2, "version");
    lua_newtable(L);                 /* kurir.on: an empty proxy */
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, on_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, on_index);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "kurir.on");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
    /* kurir.on lives in kurir's metatable, so that assigning it reaches
     * __newindex and is refused */
    lua_createtable(L, 0, 2);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "on");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, kurir_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_remove(L, -2);
    lua_setmetatable(L, -2);
    /* kurir.configure, kurir.maildir, kurir.discard and kurir.connect by
     * name come from the shipped kurir.api module (engine_load) */
    lua_setfield(L, -2, "kurir");
    lua_pop(L, 1);
}
