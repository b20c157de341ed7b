/* lua_http.c - the Lua side of HTTP: kurir.http.handle(fn) names the
 * function that answers every request of every http:// listener, and the
 * request object it gets (metatable "kurir.http_request"): method, path,
 * query, body, header(name), respond(), stream()/send() for Server-Sent
 * Events, deadline() for an answer that C gives if Lua has not answered in
 * time. A handler runs on the engine's main Lua thread and must not wait;
 * what it leaves unanswered stays suspended in http.c until some later
 * Lua code (a data hook, say) answers it. The object outlives nothing: once
 * http.c finishes the request every method raises "request is closed". */
#include <lauxlib.h>
#include <string.h>

#include "http/http.h"
#include "proto/logfmt.h"
#include "lua/engine.h"
#include "net/worker.h"

#define REQ_MT "kurir.http_request"
#define HANDLER_KEY "kurir.http_handler"

struct lreq {
    struct http_req *r;
};

static struct http_req *req_check(lua_State *L, int i)
{
    struct lreq *q = luaL_checkudata(L, i, REQ_MT);
    if (!q->r)
        luaL_error(L, "request is closed");
    return q->r;
}

/* NULL once the request is finished: answering it then is a normal race
 * (the client left, the deadline fired), not a bug, so it returns false */
static struct http_req *req_open(lua_State *L, int i)
{
    struct lreq *q = luaL_checkudata(L, i, REQ_MT);
    return q->r;
}

/* {Name = value} -> "Name: value\n"... on the buffer; CR/LF are refused */
static void headers_arg(lua_State *L, int i, struct buf *b)
{
    if (lua_isnoneornil(L, i))
        return;
    luaL_checktype(L, i, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, i)) {
        size_t kl, vl;
        const char *k = luaL_checklstring(L, -2, &kl);
        const char *v = luaL_checklstring(L, -1, &vl);
        if (strcspn(k, "\r\n:") != kl || strcspn(v, "\r\n") != vl || kl == 0)
            luaL_error(L, "bad response header '%s'", k);
        buf_printf(b, "%s: %s\n", k, v);
        lua_pop(L, 1);
    }
    buf_append(b, "", 1);
}

static int status_arg(lua_State *L, int i)
{
    lua_Integer st = luaL_checkinteger(L, i);
    luaL_argcheck(L, st >= 100 && st <= 599, i, "expected an HTTP status 100-599");
    return (int)st;
}

/* (request, status, [body], [headers]) -> boolean */
static int l_respond(lua_State *L)
{
    struct http_req *r = req_open(L, 1);
    if (!r) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int st = status_arg(L, 2);
    size_t len = 0;
    const char *body = luaL_optlstring(L, 3, "", &len);
    struct buf h;
    buf_init(&h);
    headers_arg(L, 4, &h);
    int rc = http_req_respond(r, st, buf_used(&h) ? buf_peek(&h) : "", body, len);
    buf_free(&h);
    lua_pushboolean(L, rc == 0);
    return 1;
}

/* (request, status, [headers]) -> boolean */
static int l_stream(lua_State *L)
{
    struct http_req *r = req_open(L, 1);
    if (!r) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int st = status_arg(L, 2);
    struct buf h;
    buf_init(&h);
    headers_arg(L, 3, &h);
    int rc = http_req_stream(r, st, buf_used(&h) ? buf_peek(&h) : "");
    buf_free(&h);
    lua_pushboolean(L, rc == 0);
    return 1;
}

/* (request, string) -> boolean ; false once the stream is gone */
static int l_send(lua_State *L)
{
    struct lreq *q = luaL_checkudata(L, 1, REQ_MT);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_pushboolean(L, q->r && http_req_send(q->r, data, len) == 0);
    return 1;
}

/* (request, seconds, status, [body], [headers]) -> boolean */
static int l_deadline(lua_State *L)
{
    struct http_req *r = req_open(L, 1);
    if (!r) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_Number secs = luaL_checknumber(L, 2);
    luaL_argcheck(L, secs >= 0 && secs == secs, 2, "expected a non-negative number of seconds");
    int st = status_arg(L, 3);
    size_t len = 0;
    const char *body = luaL_optlstring(L, 4, "", &len);
    struct buf h;
    buf_init(&h);
    headers_arg(L, 5, &h);
    http_req_deadline(r, (double)secs, st, buf_used(&h) ? buf_peek(&h) : "", body, len);
    buf_free(&h);
    lua_pushboolean(L, 1);
    return 1;
}

/* (request, string) -> string|nil */
static int l_header(lua_State *L)
{
    struct http_req *r = req_check(L, 1);
    const char *v = http_req_header(r, luaL_checkstring(L, 2));
    if (v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    return 1;
}

static void add_arg(void *ctx, const char *k, const char *v)
{
    lua_State *L = ctx;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static int l_index(lua_State *L)
{
    struct lreq *q = luaL_checkudata(L, 1, REQ_MT);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "closed")) {
        lua_pushboolean(L, q->r == NULL || http_req_answered(q->r));
        return 1;
    }
    static const luaL_Reg methods[] = {
        {"respond", l_respond}, {"stream", l_stream}, {"send", l_send},
        {"deadline", l_deadline}, {"header", l_header}, {NULL, NULL},
    };
    for (const luaL_Reg *m = methods; m->name; m++)
        if (!strcmp(k, m->name)) {
            lua_pushcfunction(L, m->func);
            return 1;
        }
    struct http_req *r = req_check(L, 1);
    if (!strcmp(k, "method")) {
        lua_pushstring(L, http_req_method(r));
    } else if (!strcmp(k, "path")) {
        lua_pushstring(L, http_req_path(r));
    } else if (!strcmp(k, "body")) {
        size_t len;
        const char *b = http_req_body(r, &len);
        lua_pushlstring(L, b, len);
    } else if (!strcmp(k, "query")) {
        lua_getiuservalue(L, 1, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);
            http_req_each_arg(r, add_arg, L);
            lua_pushvalue(L, -1);
            lua_setiuservalue(L, 1, 1);
        }
    } else {
        lua_pushnil(L);
    }
    return 1;
}

static int l_tostring(lua_State *L)
{
    struct lreq *q = luaL_checkudata(L, 1, REQ_MT);
    if (q->r)
        lua_pushfstring(L, "kurir.http_request(%s %s)", http_req_method(q->r), http_req_path(q->r));
    else
        lua_pushliteral(L, "kurir.http_request(closed)");
    return 1;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : luaL_tolstring(L, 1, NULL), 1);
    return 1;
}

void lua_http_handle(struct engine *e, struct http_req *r)
{
    lua_State *L = e->L;
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, HANDLER_KEY);
    if (!lua_isfunction(L, -1)) {
        lua_settop(L, top);
        const char *t = "no HTTP handler in this script\n";
        http_req_respond(r, 404, "Content-Type: text/plain; charset=utf-8\n", t, strlen(t));
        return;
    }
    struct lreq *q = lua_newuserdatauv(L, sizeof(*q), 1);
    q->r = r;
    luaL_setmetatable(L, REQ_MT);
    lua_pushvalue(L, -1);
    http_req_set_lua(r, luaL_ref(L, LUA_REGISTRYINDEX));
    lua_pushcfunction(L, traceback);
    lua_rotate(L, -3, 1);   /* traceback, handler, request */
    if (lua_pcall(L, 1, 0, top + 1) != LUA_OK) {
        struct worker *w = e->w;
        if (w) {
            buf_reset(&w->log);
            logfmt_begin(&w->log, "error", NULL, "http_handler_error");
            logfmt_str(&w->log, "path", http_req_path(r));
            logfmt_str(&w->log, "error", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
            worker_log_end(w);
        }
        const char *t = "{\"error\":\"internal error in the HTTP handler (see the server log)\"}";
        http_req_respond(r, 500, "Content-Type: application/json\n", t, strlen(t));
    }
    lua_settop(L, top);
}

void lua_http_closed(struct engine *e, struct http_req *r, int ref)
{
    (void)r;
    if (ref < 0 || !e->L)
        return;
    lua_State *L = e->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    struct lreq *q = luaL_testudata(L, -1, REQ_MT);
    if (q)
        q->r = NULL;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* (function|nil) -> () */
static int l_handle(lua_State *L)
{
    if (!lua_isnil(L, 1))
        luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, HANDLER_KEY);
    return 0;
}

void lua_http_open(lua_State *L)
{
    if (luaL_newmetatable(L, REQ_MT)) {
        lua_pushcfunction(L, l_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_handle);
    lua_setfield(L, -2, "handle");
    lua_setfield(L, -2, "http");
}
