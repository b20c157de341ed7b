/* engine_session.c - a session's side of the engine: its task (task.c
 * runs it; convert_result turns what a hook returned into a struct
 * hook_result, in exactly one place), its Lua userdata, starting and
 * aborting hooks, and the Lua objects of a transaction. The engine
 * (lua/engine.c) knows nothing of sessions; it only holds the hook refs. */
#include "smtp/engine_session.h"

#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>

#include "lua/engine.h"
#include "proto/logfmt.h"
#include "smtp/session.h"

/* What the smtp layer adds to every engine's Lua state: the classes of a
 * session, a message, an address (a view on the envelope) and a SASL
 * credential. */
void engine_session_register(lua_State *L)
{
    lsession_register(L);
    lmessage_register(L);
    laddress_register(L);
    lcred_register(L);
}

/* ---- sessions ----------------------------------------------------------- */

static struct session *session_of(struct task *t)
{
    return (struct session *)((char *)t - offsetof(struct session, task));
}

static void log_hook_error(struct session *s, const char *msg, const char *tb)
{
    struct buf *b = session_log_begin(s, "error", "hook_error");
    logfmt_str(b, "hook", engine_hook_name(s->cur_hook));
    logfmt_str(b, "error", msg ? msg : "?");
    logfmt_str(b, "traceback", tb ? tb : "");
    session_log_end(s);
}

static void session_task_error(struct task *t, const char *msg, const char *tb)
{
    log_hook_error(session_of(t), msg, tb);
}

/* A hook returned something that is not a result: name the hook function
 * (file:line where it is defined) and show the value, clipped. */
static void log_bad_return(struct session *s, lua_State *co, int idx, const char *msg)
{
    lua_State *L = s->eng->L;
    int ref = s->eng->hook_ref[s->cur_hook];
    if (s->cur_hook == HOOK_DATA && ref == LUA_NOREF)
        ref = s->eng->default_data_ref;
    char where[300] = "?";
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_Debug ar;
    if (lua_isfunction(L, -1) && lua_getinfo(L, ">S", &ar))
        snprintf(where, sizeof(where), "%s:%d", ar.short_src, ar.linedefined);
    else
        lua_pop(L, 1);
    size_t vlen;
    const char *v = luaL_tolstring(co, idx, &vlen);
    char value[140];
    if (lua_type(co, idx) == LUA_TSTRING)
        snprintf(value, sizeof(value), "\"%.*s%s\"", vlen > 120 ? 120 : (int)vlen, v, vlen > 120 ? "..." : "");
    else
        snprintf(value, sizeof(value), "%.*s (%s)", vlen > 100 ? 100 : (int)vlen, v, luaL_typename(co, idx));
    lua_pop(co, 1);
    struct buf *b = session_log_begin(s, "error", "hook_error");
    logfmt_str(b, "hook", engine_hook_name(s->cur_hook));
    logfmt_str(b, "error", msg ? msg : "?");
    logfmt_str(b, "where", where);
    logfmt_str(b, "returned", value);
    session_log_end(s);
}

/* The one place where what a hook returned becomes a hook_result. The
 * values are on co's stack at [top-nres+1 .. top]. */
static struct hook_result convert_result(struct session *s, lua_State *co, int nres)
{
    struct hook_result r = {HR_DEFAULT, 0, NULL, 0};
    int top = lua_gettop(co);
    int first = top - nres + 1;
    if (nres == 0 || lua_isnil(co, first))
        return r;
    if (lua_isboolean(co, first)) {
        r.kind = lua_toboolean(co, first) ? HR_DEFAULT : HR_REJECT;
        return r;
    }
    int isint = 0;
    lua_Integer code = lua_tointegerx(co, first, &isint);
    if (!isint || code < 200 || code > 599) {
        log_bad_return(s, co, first,
                       isint ? "hook returned a reply code outside 200..599"
                       : lua_type(co, first) == LUA_TSTRING
                           ? "hook returned a string: return the code and the text apart, e.g. return 550, \"5.7.1 go away\""
                           : "hook returned neither nil, a boolean nor a reply code");
        r.kind = HR_ERROR;
        return r;
    }
    r.kind = HR_REPLY;
    r.code = (int)code;
    buf_reset(&s->hook_text);
    if (nres >= 2 && !lua_isnil(co, first + 1)) {
        if (!lua_isstring(co, first + 1)) {
            log_bad_return(s, co, first + 1, "hook returned a reply text that is not a string");
            r.kind = HR_ERROR;
            return r;
        }
        size_t len;
        const char *t = lua_tolstring(co, first + 1, &len);
        buf_append(&s->hook_text, t, len);
    }
    r.text = buf_peek(&s->hook_text);
    r.tlen = buf_used(&s->hook_text);
    return r;
}

static void session_task_done(struct task *t, bool ok, int nres)
{
    struct session *s = session_of(t);
    struct hook_result r = {HR_ERROR, 0, NULL, 0};
    if (ok) {
        r = convert_result(s, t->co, nres);
        lua_settop(t->co, 0);
    }
    session_hook_finished(s, &r);
}

static const struct task_ops session_task_ops = {session_task_error, session_task_done};

void engine_session_open(struct session *s)
{
    lua_State *L = s->eng->L;
    task_init(&s->task, s->eng, L, &session_task_ops, s->eng->cfg.t_hook);
    s->task.sid = s->id;
    lsession_push_new(L, s);
    s->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void engine_release_ref(struct session *s, int *ref)
{
    if (*ref != LUA_NOREF && *ref != LUA_REFNIL)
        luaL_unref(s->eng->L, LUA_REGISTRYINDEX, *ref);
    *ref = LUA_NOREF;
}

void engine_session_close(struct session *s)
{
    lua_State *L = s->eng->L;
    if (!L)
        return;
    lsession_invalidate(L, s->ud_ref);
    lcred_invalidate(L, s->arg_ref);   /* a cred the script kept must not outlive us */
    engine_release_ref(s, &s->ud_ref);
    engine_release_ref(s, &s->arg_ref);
    engine_release_ref(s, &s->rcpts_ref);
    task_close(&s->task);
}

void engine_start_hook(struct session *s, enum hook h, int (*push)(struct session *, lua_State *))
{
    lua_State *co = s->task.co;
    lua_settop(co, 0);
    int ref = s->eng->hook_ref[h];
    if (h == HOOK_DATA && ref == LUA_NOREF)
        ref = s->eng->default_data_ref;
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref);
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->ud_ref);
    int nargs = 1 + (push ? push(s, co) : 0);
    task_run(&s->task, nargs);
}

void engine_abort_hook(struct session *s)
{
    if (s->task.co)
        lcred_invalidate(s->eng->L, s->arg_ref);
    task_abort(&s->task);
}

/* ---- transaction objects ---------------------------------------------- */

int engine_push_arg(struct session *s, lua_State *co)
{
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->arg_ref);
    return 1;
}

int engine_push_line_arg(struct session *s, lua_State *co)
{
    struct smtp_span a = session_arg(s);
    lua_pushlstring(co, a.ptr ? a.ptr : "", a.len);
    return 1;
}

int engine_push_command_args(struct session *s, lua_State *co)
{
    struct smtp_span verb, arg;
    smtp_cmd_split(buf_peek(&s->line), buf_used(&s->line), &verb, &arg);
    luaL_Buffer b;
    luaL_buffinit(co, &b);
    for (size_t i = 0; i < verb.len; i++) {
        char ch = verb.ptr[i];
        luaL_addchar(&b, (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch);
    }
    luaL_pushresult(&b);
    lua_pushlstring(co, arg.ptr ? arg.ptr : "", arg.len);
    return 2;
}

int engine_address_ref(struct session *s, struct envelope *env, int idx)
{
    lua_State *L = s->eng->L;
    if (idx >= 0 && env == s->tx.env && s->tx.from_ref != LUA_NOREF) {
        /* a recipient shares the sender view's reference on the envelope */
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->tx.from_ref);
        laddress_push(L, env, idx, -1);
        lua_remove(L, -2);
    } else {
        laddress_push(L, env, idx, 0);
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

void engine_tx_set_from(struct session *s, int ref)
{
    engine_release_ref(s, &s->tx.from_ref);
    s->tx.from_ref = ref;
    if (s->rcpts_ref == LUA_NOREF) {
        lua_State *L = s->eng->L;
        lua_newtable(L);
        s->rcpts_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

/* s->rcpts_ref holds the views by envelope index + 1, so that a
 * recipient's own fields (the script's, its route object) stay with it */
void engine_tx_add_rcpt(struct session *s, int idx, int ref)
{
    lua_State *L = s->eng->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->rcpts_ref);
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        lua_rawseti(L, -2, (lua_Integer)idx + 1);
    }
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

void engine_push_rcpts(struct session *s, lua_State *L)
{
    const struct envelope *e = s->tx.env;
    lua_createtable(L, e ? e->accepted : 0, 0);
    if (!e || s->tx.from_ref == LUA_NOREF || s->rcpts_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->rcpts_ref);
    int n = 0;
    for (int i = 0; i < e->nrcpts; i++) {
        if (!envelope_rcpt_accepted(e, i))
            continue;
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        lua_rawseti(L, -3, ++n);
    }
    lua_pop(L, 1);
}

bool engine_check_route(struct session *s, int ref)
{
    lua_State *L = s->eng->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->eng->check_route_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 2);
        return true;
    }
    laddress_push_route(L, -1);
    lua_remove(L, -2);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 2);   /* no route: nothing to check (check_route(nil) is nil) */
        return true;
    }
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc == LUA_OK && lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return true;
    }
    const char *why = lua_tostring(L, -1);
    struct buf *b = session_log_begin(s, "error", "bad_route");
    logfmt_str(b, "hook", "rcpt");
    logfmt_str(b, "error", why ? why : "?");
    session_log_end(s);
    lua_pop(L, 1);
    return false;
}

void engine_tx_release(struct session *s)
{
    if (!s->eng || !s->eng->L)
        return;
    if (s->tx.msg_ref != LUA_NOREF) {
        lmessage_invalidate(s->eng->L, s->tx.msg_ref);
        engine_release_ref(s, &s->tx.msg_ref);
    }
    if (s->tx.from_ref != LUA_NOREF && s->tx.env && s->rcpts_ref != LUA_NOREF) {
        /* the session's table of recipient views is kept, emptied */
        lua_State *L = s->eng->L;
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->rcpts_ref);
        for (int i = 1; i <= s->tx.env->nrcpts; i++) {
            lua_pushnil(L);
            lua_rawseti(L, -2, i);
        }
        lua_pop(L, 1);
    }
    engine_release_ref(s, &s->tx.from_ref);
}

int engine_push_message(struct session *s, lua_State *co)
{
    lua_State *L = s->eng->L;
    lmessage_push_new(L, s);
    lua_pushvalue(L, -1);
    s->tx.msg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_xmove(L, co, 1);
    return 1;
}

int engine_push_cred(struct session *s, lua_State *co)
{
    lua_State *L = s->eng->L;
    lcred_push_new(L, s);
    lua_pushvalue(L, -1);
    engine_release_ref(s, &s->arg_ref);
    s->arg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_xmove(L, co, 1);
    return 1;
}
