/* engine.c - the Lua side of a worker: one lua_State per loaded script.
 *
 * Owns: loading the script (package.path to the shipped modules, the `arg`
 * table, `require "kurir"`), reading the validated configuration back from
 * kurir.config, the registry references of the hooks, each session's task
 * (task.c runs it; convert_result turns what a hook returned into a struct
 * hook_result, in exactly one place) and the detached tasks of kurir.spawn
 * and kurir.every, which live as long as the engine is the running one. */
#include "lua/engine.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "smtp/engine_session.h"
#include "proto/logfmt.h"
#include "proto/sasl.h"
#include "app/server.h"
#include "smtp/session.h"

static const char *const hook_names[HOOK_COUNT] = {
    "connect", "helo", "starttls", "auth", "mail", "rcpt", "data",
    "vrfy", "expn", "command", "reset", "disconnect",
};

const char *engine_hook_name(enum hook h)
{
    return (h >= 0 && h < HOOK_COUNT) ? hook_names[h] : "?";
}

/* ---- paths ------------------------------------------------------------ */

static bool file_exists(const char *p)
{
    return access(p, R_OK) == 0;
}

/* The directory holding the shipped lua/ modules and scripts/ (README,
 * "Where kurir finds its Lua modules"), first that applies: $KURIR_HOME;
 * <exe dir>/../share/kurir when it holds lua/kurir/config.lua (an
 * installed or relocated binary); the source tree the binary was built
 * from when it still holds them (build/ and build-asan/); else the install
 * prefix's share/kurir compiled in (KURIR_DATA_DIR). */
static void data_dir(char *out, size_t cap)
{
    const char *env = getenv("KURIR_HOME");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char probe[PATH_MAX + 64];
            snprintf(probe, sizeof(probe), "%s/../share/kurir/lua/kurir/config.lua", exe);
            if (file_exists(probe)) {
                snprintf(probe, sizeof(probe), "%s/../share/kurir", exe);
                char real[PATH_MAX];
                if (realpath(probe, real) && strlen(real) < cap) {
                    memcpy(out, real, strlen(real) + 1);
                    return;
                }
            }
        }
    }
    char probe[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s/lua/kurir/config.lua", KURIR_SOURCE_DIR);
    if (file_exists(probe)) {
        snprintf(out, cap, "%s", KURIR_SOURCE_DIR);
        return;
    }
    snprintf(out, cap, "%s", KURIR_DATA_DIR);
}

void engine_default_script(char *out, size_t cap)
{
    char d[PATH_MAX];
    data_dir(d, sizeof(d));
    snprintf(out, cap, "%s/scripts/mock.lua", d);
}

/* ---- configuration read-back ------------------------------------------ */

/* kurir.config.finalize fills in every key with its default (the defaults
 * live there only); a key missing here is a bug in that module, reported
 * as a load error naming the key. */
struct reader {
    lua_State *L;
    const char *missing;
};

static bool field(struct reader *r, int t, const char *k, int type)
{
    lua_getfield(r->L, t, k);
    if (lua_type(r->L, -1) == type)
        return true;
    if (!r->missing)
        r->missing = k;
    return false;
}

static double get_num(struct reader *r, int t, const char *k)
{
    double v = field(r, t, k, LUA_TNUMBER) ? lua_tonumber(r->L, -1) : 0;
    lua_pop(r->L, 1);
    return v;
}

static char *get_str(struct reader *r, int t, const char *k)
{
    char *v = field(r, t, k, LUA_TSTRING) ? xstrdup(lua_tostring(r->L, -1)) : NULL;
    lua_pop(r->L, 1);
    return v;
}

/* absent (nil) is allowed: NULL */
static char *get_opt_str(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    char *v = lua_type(L, -1) == LUA_TSTRING ? xstrdup(lua_tostring(L, -1)) : NULL;
    lua_pop(L, 1);
    return v;
}

static bool get_bool(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* 0, or the name of a key kurir.config.finalize left out */
static const char *read_config(lua_State *L, int t, struct config *c)
{
    struct reader r = {L, NULL};
    t = lua_absindex(L, t);
    c->hostname = get_str(&r, t, "hostname");
    c->spool = get_str(&r, t, "spool");
    c->user = get_opt_str(L, t, "user");     /* absent: no privilege drop */
    lua_getfield(L, t, "workers");           /* absent: 0, the number of cores */
    c->workers = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    c->group = get_opt_str(L, t, "group");
    c->run_as_root = get_bool(L, t, "run_as_root");
    if (field(&r, t, "listen", LUA_TTABLE)) {
        int n = (int)lua_rawlen(L, -1);
        c->listen = xcalloc((size_t)(n ? n : 1), sizeof(*c->listen));
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            struct listen_cfg *lc = &c->listen[c->nlisten++];
            lc->host = get_str(&r, -1, "host");
            lc->port = (int)get_num(&r, lua_gettop(L), "port");
            lc->tls = get_bool(L, -1, "tls");
            lc->http = get_bool(L, -1, "http");
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);

    if (field(&r, t, "limits", LUA_TTABLE)) {
        int l = lua_gettop(L);
        c->line_length = (size_t)get_num(&r, l, "line_length");
        c->text_line_length = (size_t)get_num(&r, l, "text_line_length");
        c->message_size = (uint64_t)get_num(&r, l, "message_size");
        c->header_size = (uint64_t)get_num(&r, l, "header_size");
        c->recipients = (int)get_num(&r, l, "recipients");
        c->connections = (int)get_num(&r, l, "connections");
        c->connections_per_ip = (int)get_num(&r, l, "connections_per_ip");
        c->errors = (int)get_num(&r, l, "errors");
        char *blf = get_str(&r, l, "bare_lf");
        c->bare_lf_reject = !blf || strcmp(blf, "accept") != 0;
        free(blf);
        char *bcr = get_str(&r, l, "bare_cr");
        c->bare_cr_reject = bcr && strcmp(bcr, "reject") == 0;
        free(bcr);
        c->min_data_rate = (int)get_num(&r, l, "min_data_rate");
        c->junk_commands = (int)get_num(&r, l, "junk_commands");
        c->ipv6_prefix = (int)get_num(&r, l, "ipv6_prefix");
        c->spool_reserve = (uint64_t)get_num(&r, l, "spool_reserve");
    }
    lua_pop(L, 1);

    if (field(&r, t, "timeouts", LUA_TTABLE)) {
        int to = lua_gettop(L);
        c->t_command = get_num(&r, to, "command");
        c->t_data = get_num(&r, to, "data");
        c->t_handshake = get_num(&r, to, "handshake");
        c->t_hook = get_num(&r, to, "hook");
        c->t_shutdown = get_num(&r, to, "shutdown");
    }
    lua_pop(L, 1);
    c->cpu_budget = get_num(&r, t, "cpu_budget");

    if (field(&r, t, "queue", LUA_TTABLE)) {
        int q = lua_gettop(L);
        c->queue_dir = get_str(&r, q, "dir");
        c->queue_lifetime = get_num(&r, q, "lifetime");
        c->queue_concurrency = (int)get_num(&r, q, "concurrency");
        c->queue_delay_warning = get_num(&r, q, "delay_warning");
        c->queue_connection_idle = get_num(&r, q, "connection_idle");
        c->queue_connection_messages = (int)get_num(&r, q, "connection_messages");
        if (field(&r, q, "retry", LUA_TTABLE)) {
            int n = (int)lua_rawlen(L, -1);
            c->queue_retry = xcalloc((size_t)(n ? n : 1), sizeof(double));
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                c->queue_retry[c->nqueue_retry++] = lua_tonumber(L, -1);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    if (field(&r, t, "on_error", LUA_TTABLE)) {
        int oe = lua_gettop(L);
        for (int h = 0; h < HOOK_COUNT; h++) {
            char *p = get_str(&r, oe, hook_names[h]);
            c->on_error[h] = !p ? ERR_TEMPFAIL
                           : !strcmp(p, "reject") ? ERR_REJECT
                           : !strcmp(p, "continue") ? ERR_CONTINUE : ERR_TEMPFAIL;
            free(p);
        }
    }
    lua_pop(L, 1);

    lua_getfield(L, t, "tls");   /* absent: no TLS */
    if (lua_istable(L, -1)) {
        int x = lua_gettop(L);
        c->tls_enabled = true;
        c->tls_cert = get_opt_str(L, x, "cert");
        c->tls_key = get_opt_str(L, x, "key");
        c->tls_chain = get_opt_str(L, x, "chain");
        c->tls_ca = get_opt_str(L, x, "ca");
        c->tls_self_signed = get_bool(L, x, "self_signed");
        c->tls_required = get_bool(L, x, "required");
        c->tls_client_cert = (int)get_num(&r, x, "client_cert");
    }
    lua_pop(L, 1);

    if (field(&r, t, "auth", LUA_TTABLE)) {
        int a = lua_gettop(L);
        c->auth_plaintext = get_bool(L, a, "plaintext");
        c->auth_required = get_bool(L, a, "required");
        c->auth_failure_delay = get_num(&r, a, "failure_delay");
        if (field(&r, a, "mechanisms", LUA_TTABLE)) {
            int m = (int)lua_rawlen(L, -1);
            for (int i = 1; i <= m; i++) {
                lua_rawgeti(L, -1, i);
                size_t len;
                const char *name = lua_tolstring(L, -1, &len);
                if (name) {
                    enum sasl_mech mech = sasl_mech_from_name(name, len);
                    if (mech != SASL_NONE && !(c->auth_mechs & (1u << mech)) && c->nauth_order < 4) {
                        c->auth_mechs |= 1u << mech;
                        c->auth_order[c->nauth_order++] = mech;
                    }
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return r.missing;
}

static void free_config(struct config *c)
{
    free(c->hostname);
    free(c->spool);
    free(c->user);
    free(c->group);
    for (int i = 0; i < c->nlisten; i++)
        free(c->listen[i].host);
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tls_chain);
    free(c->tls_ca);
    free(c->queue_dir);
    free(c->queue_retry);
    memset(c, 0, sizeof(*c));
}

/* ---- loading ------------------------------------------------------------ */

/* Message handler of load-time calls: the error as a string, without a
 * traceback (errors raised with a location already say file:line). */
static int message_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = luaL_tolstring(L, 1, NULL);
    lua_pushstring(L, msg);
    return 1;
}

static int pcall_msg(lua_State *L, int nargs, int nres, char **err)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, message_handler);
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nres, base);
    lua_remove(L, base);
    if (rc != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        *err = xstrdup(m ? m : "unknown error");
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static void set_package_path(lua_State *L, const char *dir, const char *script)
{
    lua_getglobal(L, "package");
    const char *slash = strrchr(script, '/');
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", dir, dir);
    if (slash)
        lua_pushlstring(L, script, (size_t)(slash - script));
    else
        lua_pushliteral(L, ".");
    lua_pushliteral(L, "/?.lua;");
    lua_getfield(L, -4, "path");
    lua_concat(L, 4);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

static int require_module(lua_State *L, const char *name, char **err)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    return pcall_msg(L, 1, 1, err);
}

/* A state with the standard libraries, package.path to the shipped
 * modules, and package.loaded["kurir.hooks"]: the hook names in the
 * engine's order (kurir.config validates on_error with them). */
static lua_State *new_state(const char *script)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return NULL;
    *(struct task **)lua_getextraspace(L) = NULL;   /* no task runs at load time */
    luaL_openlibs(L);
    char dir[PATH_MAX];
    data_dir(dir, sizeof(dir));
    set_package_path(L, dir, script);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_createtable(L, HOOK_COUNT, 0);
    for (int h = 0; h < HOOK_COUNT; h++) {
        lua_pushstring(L, hook_names[h]);
        lua_rawseti(L, -2, h + 1);
    }
    lua_setfield(L, -2, "kurir.hooks");
    lua_pop(L, 1);
    return L;
}

bool engine_listen_ok(const char *arg, char *why, size_t cap)
{
    lua_State *L = new_state(".");
    char *err = NULL;
    bool ok = false;
    if (!L) {
        snprintf(why, cap, "cannot create a Lua state");
        return false;
    }
    if (require_module(L, "kurir.config", &err) == 0) {
        lua_getfield(L, -1, "parse_listen");
        lua_pushstring(L, arg);
        if (pcall_msg(L, 1, 2, &err) == 0) {
            ok = !lua_isnil(L, -2);
            if (!ok)
                snprintf(why, cap, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "bad address");
        }
    }
    if (err)
        snprintf(why, cap, "%s", err);
    free(err);
    lua_close(L);
    return ok;
}

struct engine *engine_load(const char *script, int argc, char **argv, char **listen_override,
                           int nlisten_override, char **err)
{
    *err = NULL;
    struct engine *e = xcalloc(1, sizeof(*e));
    e->refs = 1;
    e->script = xstrdup(script);
    for (int h = 0; h < HOOK_COUNT; h++)
        e->hook_ref[h] = LUA_NOREF;
    e->default_data_ref = LUA_NOREF;
    e->check_route_ref = LUA_NOREF;
    lua_State *L = new_state(script);
    if (!L) {
        *err = xstrdup("cannot create a Lua state");
        free(e->script);
        free(e);
        return NULL;
    }
    e->L = L;
    lua_pushlightuserdata(L, e);
    lua_setfield(L, LUA_REGISTRYINDEX, "kurir.engine");

    lsession_register(L);
    lmessage_register(L);
    laddress_register(L);
    lcred_register(L);
    lkurir_open(L);
    /* the parts of `kurir` written in Lua; kurir.api.complete returns the
     * configuration state kurir.configure merges into */
    if (require_module(L, "kurir.api", err) < 0)
        goto fail;
    lua_getfield(L, -1, "complete");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "kurir");
    lua_remove(L, -2);
    if (pcall_msg(L, 1, 1, err) < 0)
        goto fail;
    lua_setfield(L, LUA_REGISTRYINDEX, "kurir.config_state");
    lua_settop(L, 0);

    /* arg, as the lua command sets it */
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");

    if (luaL_loadfile(L, script) != LUA_OK) {
        *err = xstrdup(lua_tostring(L, -1));
        goto fail;
    }
    for (int i = 1; i < argc; i++)
        lua_pushstring(L, argv[i]);
    if (pcall_msg(L, argc > 0 ? argc - 1 : 0, 0, err) < 0)
        goto fail;

    /* hooks */
    lua_getfield(L, LUA_REGISTRYINDEX, "kurir.hooks");
    for (int h = 0; h < HOOK_COUNT; h++) {
        lua_getfield(L, -1, hook_names[h]);
        if (lua_isfunction(L, -1))
            e->hook_ref[h] = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (require_module(L, "kurir.default", err) < 0)
        goto fail;
    lua_getfield(L, -1, "data");
    e->default_data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "check_route");
    e->check_route_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (e->hook_ref[HOOK_DATA] != LUA_NOREF) {
        /* a data hook that returns nothing lets the routes deliver (SPEC 4) */
        lua_getfield(L, -1, "wrap");
        lua_rawgeti(L, LUA_REGISTRYINDEX, e->hook_ref[HOOK_DATA]);
        lua_call(L, 1, 1);
        lua_rawseti(L, LUA_REGISTRYINDEX, e->hook_ref[HOOK_DATA]);
    }
    lua_pop(L, 1);

    /* configuration: kurir.config.finalize(state, overrides, hostname) */
    if (require_module(L, "kurir.config", err) < 0)
        goto fail;
    lua_getfield(L, -1, "finalize");
    lua_getfield(L, LUA_REGISTRYINDEX, "kurir.config_state");
    lua_newtable(L);
    if (nlisten_override > 0) {
        lua_createtable(L, nlisten_override, 0);
        for (int i = 0; i < nlisten_override; i++) {
            lua_pushstring(L, listen_override[i]);
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "listen");
    }
    char host[256] = "localhost";
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    lua_pushstring(L, host);
    if (pcall_msg(L, 3, 1, err) < 0) {
        /* make configuration errors name the script */
        char *m = *err;
        size_t need = strlen(script) + strlen(m) + 32;
        *err = xmalloc(need);
        if (strncmp(m, script, strlen(script)) == 0)
            snprintf(*err, need, "%s", m);
        else
            snprintf(*err, need, "%s: configuration: %s", script, m);
        free(m);
        goto fail;
    }
    const char *missing = read_config(L, -1, &e->cfg);
    if (missing) {
        size_t need = strlen(missing) + 64;
        *err = xmalloc(need);
        snprintf(*err, need, "kurir.config.finalize: no value for '%s'", missing);
        goto fail;
    }
    lua_getfield(L, -1, "dns");
    lua_setfield(L, LUA_REGISTRYINDEX, "kurir.dns_config");
    char *tls_where = get_opt_str(L, -1, "tls_where");
    lua_pop(L, 2);

    if (e->cfg.tls_enabled) {
        struct tls_config tc = {
            .cert_file = e->cfg.tls_cert, .key_file = e->cfg.tls_key,
            .chain_file = e->cfg.tls_chain, .ca_file = e->cfg.tls_ca,
            .self_signed = e->cfg.tls_self_signed, .hostname = e->cfg.hostname,
            .client_cert = e->cfg.tls_client_cert,
        };
        char terr[512];
        e->tls = tls_ctx_new(&tc, terr, sizeof(terr));
        if (!e->tls) {
            /* name the configure call that set tls: file:line */
            const char *where = tls_where ? tls_where : script;
            size_t need = strlen(where) + strlen(terr) + 32;
            *err = xmalloc(need);
            snprintf(*err, need, "%s: %s", where, terr);
            free(tls_where);
            goto fail;
        }
    }
    free(tls_where);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCGEN, 0, 0);
    return e;
fail:
    engine_stop_jobs(e);   /* tasks the script spawned before it failed */
    lua_close(L);
    e->L = NULL;
    free_config(&e->cfg);
    free(e->script);
    buf_free(&e->log);
    free(e);
    return NULL;
}

bool engine_has_hook(const struct engine *e, enum hook h)
{
    if (h == HOOK_DATA)
        return true;   /* the script's, or kurir.default.data */
    return h >= 0 && h < HOOK_COUNT && e->hook_ref[h] != LUA_NOREF;
}

bool engine_has_user_hook(const struct engine *e, enum hook h)
{
    return h >= 0 && h < HOOK_COUNT && e->hook_ref[h] != LUA_NOREF;
}

void engine_ref(struct engine *e)
{
    e->refs++;
}

void engine_unref(struct engine *e)
{
    if (--e->refs > 0)
        return;
    engine_stop_jobs(e);
    if (e->L)
        lua_close(e->L);
    if (e->tls)
        tls_ctx_free(e->tls);
    free_config(&e->cfg);
    free(e->script);
    buf_free(&e->log);
    free(e);
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

struct session *engine_task_session(struct task *t)
{
    return t->ops == &session_task_ops ? session_of(t) : NULL;
}

void engine_session_open(struct session *s)
{
    lua_State *L = s->eng->L;
    task_init(&s->task, s->eng, L, &session_task_ops, s->eng->cfg.t_hook);
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

struct ev_loop *engine_loop(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "kurir.engine");
    struct engine *e = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return (e && e->srv) ? e->srv->loop : NULL;
}

/* ---- kurir.spawn / kurir.every ------------------------------------------ */

/* A task detached from any session, owned by the engine. */
struct engine_job {
    struct task task;
    struct engine_job *prev, *next;
    unsigned id;
    double period;               /* kurir.every; 0: kurir.spawn */
    int fn_ref;                  /* kurir.every: the function of every run */
    ev_timer tick;               /* spawn: the start; every: each run */
};

static struct engine_job *job_of(struct task *t)
{
    return (struct engine_job *)(void *)((char *)t - offsetof(struct engine_job, task));
}

static void job_free(struct engine_job *j)
{
    struct engine *e = j->task.eng;
    if (j->prev)
        j->prev->next = j->next;
    else
        e->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    if (e->srv)
        ev_timer_stop(e->srv->loop, &j->tick);
    task_close(&j->task);   /* __close handlers of a waiting run run here */
    if (j->fn_ref != LUA_NOREF)
        luaL_unref(e->L, LUA_REGISTRYINDEX, j->fn_ref);
    free(j);
}

static void job_error(struct task *t, const char *msg, const char *tb)
{
    struct engine_job *j = job_of(t);
    struct server *srv = t->eng->srv;
    buf_reset(&srv->log);
    logfmt_begin(&srv->log, "error", NULL, "task_error");
    logfmt_int(&srv->log, "task", j->id);
    logfmt_str(&srv->log, "kind", j->period > 0 ? "every" : "spawn");
    logfmt_str(&srv->log, "error", msg ? msg : "?");
    if (tb)
        logfmt_str(&srv->log, "traceback", tb);
    server_log_end(srv);
}

static void job_done(struct task *t, bool ok, int nres)
{
    (void)ok;
    (void)nres;
    struct engine_job *j = job_of(t);
    lua_settop(t->co, 0);   /* what the function returned is dropped */
    if (j->period <= 0)
        job_free(j);
}

static const struct task_ops job_ops = {job_error, job_done};

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct engine_job *j = w->data;
    if (j->task.running)
        return;   /* kurir.every: the last run still waits; this one is skipped */
    lua_State *co = j->task.co;
    if (j->period > 0)
        lua_rawgeti(co, LUA_REGISTRYINDEX, j->fn_ref);
    /* kurir.spawn: the function and its arguments wait on the stack */
    task_run(&j->task, lua_gettop(co) - 1);   /* j may be gone */
}

int engine_spawn(struct engine *e, lua_State *L, int nargs, double period)
{
    if (e->stopped) {
        lua_pop(L, nargs + 1);
        return -1;
    }
    struct engine_job *j = xcalloc(1, sizeof(*j));
    task_init(&j->task, e, L, &job_ops, 0);
    j->id = ++e->job_counter;
    j->period = period;
    j->fn_ref = LUA_NOREF;
    if (period > 0)
        j->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_xmove(L, j->task.co, nargs + 1);
    ev_timer_init(&j->tick, tick_cb, period, period);
    j->tick.data = j;
    j->next = e->jobs;
    if (e->jobs)
        e->jobs->prev = j;
    e->jobs = j;
    if (e->started)
        ev_timer_start(e->srv->loop, &j->tick);
    return 0;
}

void engine_start(struct engine *e, struct server *srv)
{
    e->srv = srv;
    e->started = true;
    for (struct engine_job *j = e->jobs; j; j = j->next)
        ev_timer_start(srv->loop, &j->tick);
}

void engine_stop_jobs(struct engine *e)
{
    if (e->stopped)
        return;
    e->stopped = true;   /* a __close handler run below cannot spawn again */
    int n = 0;
    while (e->jobs) {
        job_free(e->jobs);
        n++;
    }
    if (n > 0 && e->srv) {
        struct server *srv = e->srv;
        buf_reset(&srv->log);
        logfmt_begin(&srv->log, "info", NULL, "tasks_stopped");
        logfmt_int(&srv->log, "tasks", n);
        logfmt_int(&srv->log, "generation", (long long)e->generation);
        server_log_end(srv);
    }
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
    laddress_push(L, env, idx);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

void engine_tx_set_from(struct session *s, int ref)
{
    engine_release_ref(s, &s->tx.from_ref);
    s->tx.from_ref = ref;
    lua_State *L = s->eng->L;
    lua_newtable(L);
    engine_release_ref(s, &s->tx.rcpts_ref);
    s->tx.rcpts_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* tx.rcpts_ref holds the views by envelope index + 1, so that a
 * recipient's own fields (the script's, its route object) stay with it */
void engine_tx_add_rcpt(struct session *s, int idx, int ref)
{
    lua_State *L = s->eng->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->tx.rcpts_ref);
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
    if (!e || s->tx.rcpts_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->tx.rcpts_ref);
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
    lua_getfield(L, -1, "route");   /* the view's __index: cannot raise */
    lua_remove(L, -2);
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
    engine_release_ref(s, &s->tx.from_ref);
    engine_release_ref(s, &s->tx.rcpts_ref);
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
