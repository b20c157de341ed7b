/* lua_message.c - the "kurir.message" userdata given to the data hook as
 * `msg`. The body stays in the transaction's spool file; header lookups and
 * raw() read it back. The object is closed when the transaction ends. */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "lua/binding.h"
#include "smtp/engine_session.h"
#include "lua/lua_mime.h"
#include "sys/maildir.h"
#include "proto/msg_scan.h"

#define MESSAGE_MT "kurir.message"
/* s->scratch is shrunk back to this after a header lookup, so that an idle
 * session does not keep the copy of a large header section */
#define SCRATCH_KEEP 4096

/* the first word of every kurir.message (binding_test) */
static const char message_magic;

struct lmessage {
    const void *magic;
    struct session *s;
};

static struct session *message_check(lua_State *L, int i)
{
    struct lmessage *m = binding_test(L, i, &message_magic, sizeof(*m));
    if (!m)
        m = luaL_checkudata(L, i, MESSAGE_MT);   /* raises: not a message */
    if (!m->s)
        luaL_error(L, "message is closed (it is only valid inside the data hook)");
    return m->s;
}

/* Read the header section into s->scratch (at most limits.header_size:
 * a longer section was already refused with 552 at the end of data). The
 * caller gives the memory back with release_headers. */
static int read_headers(lua_State *L, struct session *s)
{
    uint64_t n = s->tx.scan.header_len;
    if (n > s->eng->cfg.header_size)
        n = s->eng->cfg.header_size;
    buf_reset(&s->scratch);
    char *p = buf_reserve(&s->scratch, (size_t)n);
    ssize_t r = n ? spool_pread(&s->tx.spool, p, (size_t)n, 0) : 0;
    if (r < 0)
        return luaL_error(L, "cannot read the message: %s", strerror(errno));
    buf_commit(&s->scratch, (size_t)r);
    return 0;
}

static void release_headers(struct session *s)
{
    buf_reset(&s->scratch);
    buf_shrink(&s->scratch, SCRATCH_KEEP);
}

struct collect {
    lua_State *L;
    int n;
    bool first_only;
};

static void collect_cb(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    (void)name;
    (void)nlen;
    struct collect *c = ctx;
    if (c->first_only && c->n > 0)
        return;
    lua_pushlstring(c->L, value, vlen);
    c->n++;
    if (!c->first_only)
        lua_rawseti(c->L, -2, c->n);
}

/* (message, string) -> string|nil ; first value of a header field */
static int l_header(lua_State *L)
{
    struct session *s = message_check(L, 1);
    const char *name = luaL_checkstring(L, 2);
    read_headers(L, s);
    struct collect c = {L, 0, true};
    msg_headers_each(buf_peek(&s->scratch), buf_used(&s->scratch), name, collect_cb, &c);
    release_headers(s);
    if (c.n == 0)
        lua_pushnil(L);
    return 1;
}

/* (message, string) -> {string...} ; every value, in order */
static int l_headers(lua_State *L)
{
    struct session *s = message_check(L, 1);
    const char *name = luaL_checkstring(L, 2);
    read_headers(L, s);
    lua_newtable(L);
    struct collect c = {L, 0, false};
    msg_headers_each(buf_peek(&s->scratch), buf_used(&s->scratch), name, collect_cb, &c);
    release_headers(s);
    return 1;
}

/* (message) -> string ; the bytes as received, after dot-unstuffing */
static int l_raw(lua_State *L)
{
    struct session *s = message_check(L, 1);
    uint64_t size = s->tx.spool.size;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)size);
    ssize_t r = size ? spool_pread(&s->tx.spool, p, (size_t)size, 0) : 0;
    if (r < 0 || (uint64_t)r != size)
        return luaL_error(L, "cannot read the message: %s", strerror(errno));
    luaL_pushresultsize(&b, (size_t)r);
    s->tx.handed = true;   /* the script took the bytes somewhere itself */
    return 1;
}

/* (message) -> () ; the script drops the message on purpose (no warning) */
static int l_discard(lua_State *L)
{
    struct session *s = message_check(L, 1);
    s->tx.handed = true;
    return 0;
}

static bool valid_field_name(const char *n, size_t len)
{
    if (len == 0 || len > 200)
        return false;
    for (size_t i = 0; i < len; i++)
        if (n[i] < 33 || n[i] > 126 || n[i] == ':')
            return false;
    return true;
}

/* (message, name, value) -> () ; prepended when the message is delivered */
static int l_add_header(lua_State *L)
{
    struct session *s = message_check(L, 1);
    size_t nl, vl;
    const char *name = luaL_checklstring(L, 2, &nl);
    const char *value = luaL_checklstring(L, 3, &vl);
    luaL_argcheck(L, valid_field_name(name, nl), 2, "not a valid header field name");
    for (size_t i = 0; i < vl; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            luaL_argerror(L, 3, "header value must not contain CR, LF or NUL");
    struct buf nb;
    buf_init(&nb);
    buf_append(&nb, name, nl);
    buf_append(&nb, ": ", 2);
    buf_append(&nb, value, vl);
    buf_append(&nb, "\r\n", 2);
    buf_append(&nb, buf_peek(&s->tx.added), buf_used(&s->tx.added));
    buf_free(&s->tx.added);
    s->tx.added = nb;
    return 0;
}

/* (message, dir, prefix) -> string | nil, err ; Maildir delivery, fsync'ed */
static int l_store_maildir(lua_State *L)
{
    struct session *s = message_check(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    size_t pl = 0;
    const char *prefix = luaL_optlstring(L, 3, "", &pl);
    if (maildir_prepare(dir) < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", dir, strerror(errno));
        return 2;
    }
    struct buf all;
    buf_init(&all);
    buf_append(&all, prefix, pl);
    buf_append(&all, buf_peek(&s->tx.added), buf_used(&s->tx.added));
    char name[512], err[256];
    int rc = maildir_deliver(dir, buf_peek(&all), buf_used(&all), &s->tx.spool, name, sizeof(name), err,
                             sizeof(err));
    buf_free(&all);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", dir, err);
        return 2;
    }
    s->tx.handed = true;
    lua_pushstring(L, name);
    return 1;
}

/* (message) -> string */
static int f_id(lua_State *L)
{
    lua_pushstring(L, message_check(L, 1)->tx.id);
    return 1;
}

/* (message) -> integer */
static int f_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)message_check(L, 1)->tx.spool.size);
    return 1;
}

/* (message) -> address table */
static int f_from(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, message_check(L, 1)->tx.from_ref);
    return 1;
}

/* (message) -> {address...} ; a new array of the accepted recipients */
static int f_rcpts(lua_State *L)
{
    engine_push_rcpts(message_check(L, 1), L);
    return 1;
}

static int l_tostring(lua_State *L)
{
    struct lmessage *m = luaL_checkudata(L, 1, MESSAGE_MT);
    if (m->s)
        lua_pushfstring(L, "kurir.message(%s)", m->s->tx.id);
    else
        lua_pushliteral(L, "kurir.message(closed)");
    return 1;
}

static const luaL_Reg message_meta[] = {
    {"__tostring", l_tostring},
    {NULL, NULL},
};

static const luaL_Reg message_methods[] = {
    {"header", l_header},
    {"headers", l_headers},
    {"raw", l_raw},
    {"add_header", l_add_header},
    {"store_maildir", l_store_maildir},
    {"discard", l_discard},
    {"mime", lua_mime_parse},
    {NULL, NULL},
};

static const luaL_Reg message_fields[] = {
    {"id", f_id},
    {"size", f_size},
    {"from", f_from},
    {"rcpts", f_rcpts},
    {NULL, NULL},
};

static const struct binding_class message_class = {
    MESSAGE_MT, message_meta, message_methods, message_fields, NULL, NULL,
};

struct session *lmessage_session(lua_State *L, int i)
{
    return message_check(L, i);
}

/* msg:enqueue is added by the queue layer (queue/lua_queue.c) */
void lmessage_register(lua_State *L)
{
    binding_register(L, &message_class);
}

void lmessage_push_new(lua_State *L, struct session *s)
{
    struct lmessage *m = lua_newuserdatauv(L, sizeof(*m), 0);
    m->magic = &message_magic;
    m->s = s;
    luaL_setmetatable(L, MESSAGE_MT);
}

void lmessage_invalidate(lua_State *L, int ref)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    struct lmessage *m = binding_test(L, -1, &message_magic, sizeof(*m));
    if (m)
        m->s = NULL;
    lua_pop(L, 1);
}
