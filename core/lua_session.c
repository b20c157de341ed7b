/* lua_session.c - the "kurir.session" userdata that every hook gets as `s`.
 * It holds a pointer to the C session and a closed state: when the session
 * is freed the pointer is cleared and every access raises "session is
 * closed". The script's own per-session values live in the userdata's user
 * value table, so they survive across hooks of one session. */
#include <lauxlib.h>
#include <string.h>

#include "engine_session.h"
#include "logfmt.h"
#include "server.h"
#include "tls.h"

#define SESSION_MT "kurir.session"

struct lsession {
    struct session *s;
};

/* One checked accessor: raises for a closed session. */
static struct session *session_check(lua_State *L, int i)
{
    struct lsession *ls = luaL_checkudata(L, i, SESSION_MT);
    if (!ls->s)
        luaL_error(L, "session is closed");
    return ls->s;
}

/* (session, event, fields) | (session, ...) -> () */
static int l_log(lua_State *L)
{
    struct session *s = session_check(L, 1);
    struct buf *b = &s->srv->log;
    const char *event = "script";
    if (lua_gettop(L) >= 3 && lua_type(L, 2) == LUA_TSTRING && lua_istable(L, 3))
        event = lua_tostring(L, 2);
    buf_reset(b);   /* drop a line that an error left half-built */
    logfmt_begin(b, "info", s->id, event);
    lua_log_fields(L, 2, b);
    server_log_end(s->srv);
    return 0;
}

static void push_tls(lua_State *L, struct session *s)
{
    if (!s->tls || !s->conn.tls) {
        lua_pushnil(L);
        return;
    }
    struct tls_info ti;
    tls_conn_info(&s->conn, &ti);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, ti.version ? ti.version : "");
    lua_setfield(L, -2, "version");
    lua_pushstring(L, ti.cipher ? ti.cipher : "");
    lua_setfield(L, -2, "cipher");
    lua_pushinteger(L, ti.bits);
    lua_setfield(L, -2, "bits");
    if (ti.peer_subject) {
        lua_pushstring(L, ti.peer_subject);
        lua_setfield(L, -2, "subject");
    }
    lua_pushboolean(L, ti.peer_verified);
    lua_setfield(L, -2, "verified");
}

static const char *const builtin[] = {
    "id", "remote_ip", "remote_port", "local_ip", "local_port", "helo", "esmtp", "tls",
    "user", "from", "rcpts", "log", NULL,
};

static bool is_builtin(const char *k)
{
    for (int i = 0; builtin[i]; i++)
        if (!strcmp(k, builtin[i]))
            return true;
    return false;
}

/* (session, key) -> value */
static int l_index(lua_State *L)
{
    struct session *s = session_check(L, 1);
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    if (k) {
        switch (k[0]) {
        case 'i':
            if (!strcmp(k, "id")) {
                lua_pushstring(L, s->id);
                return 1;
            }
            break;
        case 'r':
            if (!strcmp(k, "remote_ip")) {
                lua_pushstring(L, s->conn.peer_ip);
                return 1;
            }
            if (!strcmp(k, "remote_port")) {
                lua_pushinteger(L, s->conn.peer_port);
                return 1;
            }
            if (!strcmp(k, "rcpts")) {
                if (s->tx.rcpts_ref == LUA_NOREF)
                    lua_newtable(L);
                else
                    lua_rawgeti(L, LUA_REGISTRYINDEX, s->tx.rcpts_ref);
                return 1;
            }
            break;
        case 'l':
            if (!strcmp(k, "local_ip")) {
                lua_pushstring(L, s->conn.local_ip);
                return 1;
            }
            if (!strcmp(k, "local_port")) {
                lua_pushinteger(L, s->conn.local_port);
                return 1;
            }
            if (!strcmp(k, "log")) {
                lua_pushcfunction(L, l_log);
                return 1;
            }
            break;
        case 'h':
            if (!strcmp(k, "helo")) {
                if (s->helo)
                    lua_pushstring(L, s->helo);
                else
                    lua_pushnil(L);
                return 1;
            }
            break;
        case 'e':
            if (!strcmp(k, "esmtp")) {
                lua_pushboolean(L, s->esmtp);
                return 1;
            }
            break;
        case 't':
            if (!strcmp(k, "tls")) {
                push_tls(L, s);
                return 1;
            }
            break;
        case 'u':
            if (!strcmp(k, "user")) {
                if (s->user)
                    lua_pushstring(L, s->user);
                else
                    lua_pushnil(L);
                return 1;
            }
            break;
        case 'f':
            if (!strcmp(k, "from")) {
                if (s->tx.from_ref == LUA_NOREF)
                    lua_pushnil(L);
                else
                    lua_rawgeti(L, LUA_REGISTRYINDEX, s->tx.from_ref);
                return 1;
            }
            break;
        }
    }
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* (session, key, value) -> () ; script values, never the built-in fields */
static int l_newindex(lua_State *L)
{
    session_check(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING && is_builtin(lua_tostring(L, 2)))
        return luaL_error(L, "session field '%s' is read-only", lua_tostring(L, 2));
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

/* (session) -> string */
static int l_tostring(lua_State *L)
{
    struct lsession *ls = luaL_checkudata(L, 1, SESSION_MT);
    if (ls->s)
        lua_pushfstring(L, "kurir.session(%s %s)", ls->s->id, ls->s->conn.peer_ip);
    else
        lua_pushliteral(L, "kurir.session(closed)");
    return 1;
}

static const luaL_Reg session_meta[] = {
    {"__index", l_index},
    {"__newindex", l_newindex},
    {"__tostring", l_tostring},
    {NULL, NULL},
};

void lua_session_register(lua_State *L)
{
    luaL_newmetatable(L, SESSION_MT);
    luaL_setfuncs(L, session_meta, 0);
    lua_pop(L, 1);
}

void lua_session_push_new(lua_State *L, struct session *s)
{
    struct lsession *ls = lua_newuserdatauv(L, sizeof(*ls), 1);
    ls->s = s;
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, SESSION_MT);
}

void lua_session_invalidate(lua_State *L, int ud_ref)
{
    if (ud_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ud_ref);
    struct lsession *ls = luaL_testudata(L, -1, SESSION_MT);
    if (ls)
        ls->s = NULL;
    lua_pop(L, 1);
}
