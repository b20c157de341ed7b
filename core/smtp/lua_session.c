/* lua_session.c - the "kurir.session" userdata that every hook gets as `s`.
 * It holds a pointer to the C session and a closed state: when the session
 * is freed the pointer is cleared and every access raises "session is
 * closed". The script's own per-session values live in the userdata's user
 * value table, so they survive across hooks of one session. */
#include <lauxlib.h>

#include "lua/binding.h"
#include "smtp/engine_session.h"
#include "proto/logfmt.h"
#include "net/worker.h"
#include "net/tls.h"

#define SESSION_MT "kurir.session"

/* the first word of every kurir.session (binding_test) */
static const char session_magic;

struct lsession {
    const void *magic;
    struct session *s;
};

/* One checked accessor: raises for a closed session. */
static struct session *session_check(lua_State *L, int i)
{
    struct lsession *ls = binding_test(L, i, &session_magic, sizeof(*ls));
    if (!ls)
        ls = luaL_checkudata(L, i, SESSION_MT);   /* raises: not a session */
    if (!ls->s)
        luaL_error(L, "session is closed");
    return ls->s;
}

/* (session, event, fields) | (session, ...) -> () */
static int l_log(lua_State *L)
{
    struct session *s = session_check(L, 1);
    struct buf *b = &s->w->log;
    const char *event = "script";
    if (lua_gettop(L) >= 3 && lua_type(L, 2) == LUA_TSTRING && lua_istable(L, 3))
        event = lua_tostring(L, 2);
    buf_reset(b);   /* drop a line that an error left half-built */
    logfmt_begin(b, "info", s->id, event);
    lkurir_log_fields(L, 2, b);
    worker_log_end(s->w);
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

/* (session) -> string */
static int f_id(lua_State *L)
{
    lua_pushstring(L, session_check(L, 1)->id);
    return 1;
}

/* (session) -> string */
static int f_remote_ip(lua_State *L)
{
    lua_pushstring(L, session_check(L, 1)->conn.peer_ip);
    return 1;
}

/* (session) -> integer */
static int f_remote_port(lua_State *L)
{
    lua_pushinteger(L, session_check(L, 1)->conn.peer_port);
    return 1;
}

/* (session) -> string */
static int f_local_ip(lua_State *L)
{
    lua_pushstring(L, session_check(L, 1)->conn.local_ip);
    return 1;
}

/* (session) -> integer */
static int f_local_port(lua_State *L)
{
    lua_pushinteger(L, session_check(L, 1)->conn.local_port);
    return 1;
}

/* (session) -> string|nil */
static int f_helo(lua_State *L)
{
    struct session *s = session_check(L, 1);
    if (s->helo)
        lua_pushstring(L, s->helo);
    else
        lua_pushnil(L);
    return 1;
}

/* (session) -> boolean */
static int f_esmtp(lua_State *L)
{
    lua_pushboolean(L, session_check(L, 1)->esmtp);
    return 1;
}

/* (session) -> table|nil */
static int f_tls(lua_State *L)
{
    push_tls(L, session_check(L, 1));
    return 1;
}

/* (session) -> string|nil */
static int f_user(lua_State *L)
{
    struct session *s = session_check(L, 1);
    if (s->user)
        lua_pushstring(L, s->user);
    else
        lua_pushnil(L);
    return 1;
}

/* (session) -> address table|nil */
static int f_from(lua_State *L)
{
    struct session *s = session_check(L, 1);
    if (s->tx.from_ref == LUA_NOREF)
        lua_pushnil(L);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->tx.from_ref);
    return 1;
}

/* (session) -> {address...} ; a new array of the accepted recipients */
static int f_rcpts(lua_State *L)
{
    engine_push_rcpts(session_check(L, 1), L);
    return 1;
}

/* (session, key) -> value ; the script's own per-session values */
static int l_index(lua_State *L)
{
    session_check(L, 1);
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* (session, key, value) -> () ; script values (built-in fields are read-only) */
static int l_newindex(lua_State *L)
{
    session_check(L, 1);
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

/* (session, [integer]) -> () ; fault injection (kurir.faults): without n,
 * the connection is closed with no reply once the running hook ends; with
 * n, it is closed once n bytes of the next message body have arrived */
static int l_drop(lua_State *L)
{
    struct session *s = session_check(L, 1);
    if (lua_isnoneornil(L, 2)) {
        s->drop_now = true;
    } else {
        lua_Integer n = luaL_checkinteger(L, 2);
        luaL_argcheck(L, n >= 0, 2, "expected a byte count >= 0");
        s->drop_data = true;
        s->drop_data_at = (uint64_t)n;
    }
    return 0;
}

static const luaL_Reg session_meta[] = {
    {"__tostring", l_tostring},
    {NULL, NULL},
};

static const luaL_Reg session_methods[] = {
    {"log", l_log},
    {"drop", l_drop},
    {NULL, NULL},
};

static const luaL_Reg session_fields[] = {
    {"id", f_id},
    {"remote_ip", f_remote_ip},
    {"remote_port", f_remote_port},
    {"local_ip", f_local_ip},
    {"local_port", f_local_port},
    {"helo", f_helo},
    {"esmtp", f_esmtp},
    {"tls", f_tls},
    {"user", f_user},
    {"from", f_from},
    {"rcpts", f_rcpts},
    {NULL, NULL},
};

static const struct binding_class session_class = {
    SESSION_MT, session_meta, session_methods, session_fields, l_index, l_newindex,
};

void lsession_register(lua_State *L)
{
    binding_register(L, &session_class);
}

void lsession_push_new(lua_State *L, struct session *s)
{
    struct lsession *ls = lua_newuserdatauv(L, sizeof(*ls), 1);
    ls->magic = &session_magic;
    ls->s = s;
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, SESSION_MT);
}

void lsession_invalidate(lua_State *L, int ud_ref)
{
    if (ud_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ud_ref);
    struct lsession *ls = binding_test(L, -1, &session_magic, sizeof(*ls));
    if (ls)
        ls->s = NULL;
    lua_pop(L, 1);
}
