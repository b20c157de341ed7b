/* engine.h - one Lua state running one site script: configuration read
 * back from the script, hook references, the sessions' hooks and the
 * detached tasks of kurir.spawn / kurir.every. A reload (SIGHUP) makes a new engine; the old one lives
 * on, reference-counted, until its last session ends. */
#ifndef KURIR_ENGINE_H
#define KURIR_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ev.h>
#include <lua.h>
#include "proto/reply.h"
#include "lua/task.h"
#include "net/tls.h"
#include "net/worker.h"
#include "sys/spool.h"

enum hook {
    HOOK_CONNECT, HOOK_HELO, HOOK_STARTTLS, HOOK_AUTH, HOOK_MAIL, HOOK_RCPT, HOOK_DATA,
    HOOK_VRFY, HOOK_EXPN, HOOK_COMMAND, HOOK_RESET, HOOK_DISCONNECT,
    HOOK_COUNT,
    HOOK_NONE = -1,
};

enum err_policy { ERR_TEMPFAIL, ERR_REJECT, ERR_CONTINUE };

struct listen_cfg {
    char *host;
    int port;
    bool tls;     /* implicit TLS (smtps://) */
    bool http;    /* the HTTP API and web UI (http://), see http.c */
};

struct config {
    char *hostname;
    char *spool;
    char *user, *group;           /* privilege drop after binding (privdrop.c) */
    bool run_as_root;
    struct listen_cfg *listen;
    int nlisten;
    size_t line_length;
    size_t text_line_length;      /* 0 = unlimited */
    uint64_t message_size;
    uint64_t header_size;      /* limits.header_size: most bytes of header section */
    int recipients;
    int connections;
    int connections_per_ip;
    int errors;
    bool bare_lf_reject;
    bool bare_cr_reject;
    int min_data_rate;            /* bytes/s that extend the DATA deadline; 0 = off */
    int junk_commands;            /* 0 = unlimited */
    int ipv6_prefix;              /* IPv6 clients in one /N count as one */
    uint64_t spool_reserve;       /* free bytes the spool keeps; 0 = no check */
    double t_command, t_data, t_handshake, t_hook, t_shutdown;
    double cpu_budget;
    int workers;                  /* 0: not set (the number of cores) */
    enum err_policy on_error[HOOK_COUNT];
    bool tls_enabled;
    char *tls_cert, *tls_key, *tls_chain, *tls_ca;
    bool tls_self_signed;
    bool tls_required;            /* tls.required: only CMD_BEFORE_TLS commands before STARTTLS */
    int tls_client_cert;
    bool auth_plaintext;
    bool auth_required;
    double auth_failure_delay;
    unsigned auth_mechs;          /* bit (1 << enum sasl_mech) */
    int auth_order[4];            /* enum sasl_mech, in the configured order */
    int nauth_order;
    char *queue_dir;              /* queue.dir */
    double *queue_retry;          /* queue.retry: seconds between attempts, the last repeats */
    int nqueue_retry;
    double queue_lifetime;        /* queue.lifetime: seconds, then the message bounces */
    int queue_concurrency;        /* queue.concurrency: deliveries at once per destination */
    double queue_delay_warning;   /* queue.delay_warning: seconds before a delay DSN; 0 = none */
    double queue_connection_idle; /* queue.connection_idle: seconds an SMTP/LMTP connection waits for reuse */
    int queue_connection_messages;   /* queue.connection_messages: transactions per connection */
};

struct engine_job;

/* Capacity of the sessions' input buffers kept in engine.input_pool (the
 * size of one ordinary read). */
#define ENGINE_INPUT_BUFSZ 16384

struct engine {
    lua_State *L;
    int refs;
    int hook_ref[HOOK_COUNT];     /* LUA_NOREF when the script has none */
    int default_data_ref;         /* kurir.default.data */
    int check_route_ref;          /* kurir.default.check_route */
    struct config cfg;
    struct tls_ctx *tls;
    char *script;                 /* path as given */
    struct worker *w;             /* the worker it runs in (engine_start); NULL while loading */
    struct buf log;               /* kurir.log lines while the script loads */
    uint64_t generation;
    struct engine_job *jobs;      /* the tasks of kurir.spawn / kurir.every */
    unsigned job_counter;         /* task ids in log lines */
    bool started;                 /* engine_start ran: jobs run */
    bool stopped;                 /* engine_stop_jobs ran: no new jobs */
    struct spool_probe spool_probe;   /* cfg.spool: writable, free space (per loop iteration) */
    struct buf_pool body_pool;    /* small bodies' buffers (SPOOL_SMALL) for the next transactions */
    struct buf_pool input_pool;   /* sessions' input buffers, kept while they wait for more */
    struct reply_cache replies;   /* canned replies formatted once for cfg.hostname */
};

const char *engine_hook_name(enum hook h);

/* What the layers above lua/ add to a new Lua state before the script
 * runs (their classes, fields of the kurir table): called with
 * package.loaded.kurir on top of L's stack. */
typedef void engine_open_fn(lua_State *L);

/* Load script with args (argv[0] = script) into a new engine. On failure
 * returns NULL and a message "file:line: reason" in err (malloc'ed).
 * open_above: see engine_open_fn (NULL: the kurir module only).
 * listen_override: -l options (may be NULL/0). */
struct engine *engine_load(const char *script, engine_open_fn *open_above, int argc, char **argv,
                           char **listen_override, int nlisten_override, char **err);
void engine_ref(struct engine *e);
void engine_unref(struct engine *e);
bool engine_has_hook(const struct engine *e, enum hook h);
/* the script itself defines h (HOOK_DATA may fall back to kurir.default) */
bool engine_has_user_hook(const struct engine *e, enum hook h);
/* The event loop runs e (main start, or e replaced the script on SIGHUP):
 * the CPU budget's timer starts (or takes e's tick) in this process, the
 * tasks the script spawned while it loaded start now. -1 (logged) if the
 * timer cannot be made: then no hook could be stopped. */
int engine_start(struct engine *e, struct worker *w);
/* Stop every kurir.spawn / kurir.every task of e (SIGHUP once the new
 * script runs, SIGTERM); later spawns are refused. */
void engine_stop_jobs(struct engine *e);
/* kurir.spawn (period 0: fn and nargs arguments on top of L's stack) and
 * kurir.every (period > 0: fn on top). Pops them; -1 once e is stopped. */
int engine_spawn(struct engine *e, lua_State *L, int nargs, double period);
/* A -l argument in the listener grammar of kurir.config (parse_listen,
 * the one grammar): true, or false with the reason in why. */
bool engine_listen_ok(const char *arg, char *why, size_t cap);
/* path of scripts/mock.lua (build tree or installed) */
void engine_default_script(char *out, size_t cap);
/* the event loop of the engine that owns L (NULL while the script loads) */
struct ev_loop *engine_loop(lua_State *L);

/* bindings of the kurir module in lua/ (their prefix is l + the class,
 * never Lua's own lua_/luaL_) */
void lkurir_open(lua_State *L);   /* package.loaded.kurir, its C part */
/* kurir.worker(): id from 0 and count; id -1 while the master checks the
 * script (it serves nothing). A single process is worker 0 of 1. */
void lkurir_set_worker(int id, int count);
void lshared_register(lua_State *L);                        /* lua_shared.c */
int lshared_open(lua_State *L);                             /* kurir.shared(name, size) */
/* Log fields of kurir.log / s:log from stack index first on: (event,
 * table) gives sorted key=value pairs, anything else one msg="..." */
void lkurir_log_fields(lua_State *L, int first, struct buf *b);


#endif
