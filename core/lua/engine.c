/* engine.c - the Lua side of a worker: one lua_State per loaded script.
 *
 * Owns: loading the script (package.path to the shipped modules, the `arg`
 * table, `require "kurir"`), reading the validated configuration back from
 * kurir.config, the registry references of the hooks and the detached
 * tasks of kurir.spawn and kurir.every, which live as long as the engine is
 * the running one. The layers above add their Lua classes through the
 * open function engine_load is given; a session's hooks run in
 * smtp/engine_session.c. */
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

#include "lua/lstate.h"
#include "proto/logfmt.h"
#include "proto/sasl.h"
#include "net/worker.h"
#include "lua/budget.h"

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
    lua_State *L = lstate_new();
    if (!L)
        return NULL;
    *(struct task **)lua_getextraspace(L) = NULL;   /* no task runs at load time */
    luaL_openlibs(L);
    budget_open(L);   /* coroutine.resume/wrap/close that the CPU budget follows */
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
    lstate_close(L);
    return ok;
}

struct engine *engine_load(const char *script, engine_open_fn *open_above, int argc, char **argv,
                           char **listen_override, int nlisten_override, char **err)
{
    *err = NULL;
    struct engine *e = xcalloc(1, sizeof(*e));
    e->refs = 1;
    e->script = xstrdup(script);
    for (int h = 0; h < HOOK_COUNT; h++)
        e->hook_ref[h] = LUA_NOREF;
    e->default_data_ref = LUA_NOREF;
    e->check_route_ref = LUA_NOREF;
    spool_probe_init(&e->spool_probe);
    buf_pool_init(&e->body_pool, SPOOL_SMALL);
    buf_pool_init(&e->input_pool, ENGINE_INPUT_BUFSZ);
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

    lkurir_open(L);
    if (open_above) {
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        lua_getfield(L, -1, "kurir");
        open_above(L);
        lua_settop(L, 0);
    }
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
    lstate_close(L);
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
        lstate_close(e->L);
    if (e->tls)
        tls_ctx_free(e->tls);
    free_config(&e->cfg);
    free(e->script);
    buf_free(&e->log);
    buf_pool_free(&e->body_pool);
    buf_pool_free(&e->input_pool);
    reply_cache_free(&e->replies);
    free(e);
}

struct ev_loop *engine_loop(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "kurir.engine");
    struct engine *e = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return (e && e->w) ? e->w->loop : NULL;
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
    if (e->w)
        ev_timer_stop(e->w->loop, &j->tick);
    task_close(&j->task);   /* __close handlers of a waiting run run here */
    if (j->fn_ref != LUA_NOREF)
        luaL_unref(e->L, LUA_REGISTRYINDEX, j->fn_ref);
    free(j);
}

static void job_error(struct task *t, const char *msg, const char *tb)
{
    struct engine_job *j = job_of(t);
    struct worker *w = t->eng->w;
    buf_reset(&w->log);
    logfmt_begin(&w->log, "error", NULL, "task_error");
    logfmt_int(&w->log, "task", j->id);
    logfmt_str(&w->log, "kind", j->period > 0 ? "every" : "spawn");
    logfmt_str(&w->log, "error", msg ? msg : "?");
    if (tb)
        logfmt_str(&w->log, "traceback", tb);
    worker_log_end(w);
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
        ev_timer_start(e->w->loop, &j->tick);
    return 0;
}

int engine_start(struct engine *e, struct worker *w)
{
    e->w = w;
    e->started = true;
    char err[160];
    int rc = budget_start(e->cfg.cpu_budget, err, sizeof(err));
    if (rc < 0) {
        buf_reset(&w->log);
        logfmt_begin(&w->log, "error", NULL, "cpu_budget_unavailable");
        logfmt_str(&w->log, "error", err);
        worker_log_end(w);
    }
    for (struct engine_job *j = e->jobs; j; j = j->next)
        ev_timer_start(w->loop, &j->tick);
    return rc;
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
    if (n > 0 && e->w) {
        struct worker *w = e->w;
        buf_reset(&w->log);
        logfmt_begin(&w->log, "info", NULL, "tasks_stopped");
        logfmt_int(&w->log, "tasks", n);
        logfmt_int(&w->log, "generation", (long long)e->generation);
        worker_log_end(w);
    }
}
