/* main.c - the command line (SPEC 1): options before SCRIPT are kurir's,
 * everything after it is the script's `arg`. Exit codes: 0 clean shutdown,
 * 1 bad script or configuration, 2 bad command line. */
#include <ev.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua/engine.h"
#include "proto/logfmt.h"
#include "sys/privdrop.h"
#include "app/master.h"
#include "queue/queue_cli.h"
#include "app/server.h"

static const char usage[] =
    "usage: kurir [-l [smtps://|http://]ADDR:PORT]... [-w N] [--check] [SCRIPT [SCRIPT-ARGS...]]\n"
    "       kurir queue [list [--json] | show ID | flush [ID] | delete ID | hold ID | release ID] [--spool DIR]\n"
    "       kurir --version | --help\n"
    "\n"
    "  -l, --listen [smtps://|http://]ADDR:PORT\n"
    "                                   listen here instead of the script's listeners\n"
    "                                   (repeatable; [::1]:PORT for IPv6; smtps:// = implicit TLS;\n"
    "                                   http:// = the HTTP API and web UI;\n"
    "                                   PORT 0 = any free port, named in the `listening` log line)\n"
    "  -w, --workers N                  run N worker processes (default: the script's workers,\n"
    "                                   else the number of cores; the mock: 1); 1 = one process\n"
    "      --check                      load and validate SCRIPT, print problems, exit 0 or 1\n"
    "      --version                    print the version\n"
    "  -h, --help                       this text\n"
    "\n"
    "With no SCRIPT, kurir runs the built-in mock server (scripts/mock.lua):\n"
    "SMTP on 127.0.0.1:1025, every message stored in the Maildir ./mail, the web UI\n"
    "and HTTP API on http://127.0.0.1:8025 (scripts/mock.lua --help for its options).\n"
    "\n"
    "Started as root, kurir drops to the script's `user` once the listeners are\n"
    "bound; without one it refuses a port below 1024 unless run_as_root = true.\n";

int main(int argc, char **argv)
{
    char **listen = xcalloc((size_t)argc + 1, sizeof(char *));
    int nlisten = 0;
    bool check = false;
    int workers = 0;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (a[0] != '-' || a[1] == '\0')
            break;
        if (!strcmp(a, "-l") || !strcmp(a, "--listen")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kurir: %s needs an address\n%s", a, usage);
                free(listen);
                return 2;
            }
            a = argv[++i];
            /* a bad -l is a bad command line (exit 2), not a bad script */
            char why[256];
            if (!engine_listen_ok(a, why, sizeof(why))) {
                fprintf(stderr, "kurir: -l %s: %s\n", a, why);
                free(listen);
                return 2;
            }
            listen[nlisten++] = argv[i];
        } else if (!strcmp(a, "-w") || !strcmp(a, "--workers")) {
            char *end = NULL;
            long n = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (i + 1 >= argc || !*argv[i + 1] || *end || n < 1 || n > 64) {
                fprintf(stderr, "kurir: %s needs a number of workers from 1 to 64\n%s", a, usage);
                free(listen);
                return 2;
            }
            workers = (int)n;
            i++;
        } else if (!strcmp(a, "--check")) {
            check = true;
        } else if (!strcmp(a, "--version")) {
            printf("kurir %s\n", KURIR_VERSION);
            free(listen);
            return 0;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            free(listen);
            return 0;
        } else {
            fprintf(stderr, "kurir: unknown option '%s'\n%s", a, usage);
            free(listen);
            return 2;
        }
    }
    if (i == 1 && i < argc && !strcmp(argv[i], "queue")) {
        free(listen);
        return queue_cli_main(argc - 2, argv + 2);
    }

    char mock[PATH_MAX];
    const char *script;
    int sargc;
    char **sargv;
    char *mock_argv[2];
    if (i < argc) {
        script = argv[i];
        sargc = argc - i;
        sargv = argv + i;
    } else {
        engine_default_script(mock, sizeof(mock));
        script = mock;
        mock_argv[0] = mock;
        mock_argv[1] = NULL;
        sargc = 1;
        sargv = mock_argv;
    }
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "kurir: cannot open script %s\n", script);
        free(listen);
        return 1;
    }

    char *err = NULL;
    if (!check && tls_share_ticket_keys() < 0)
        fprintf(stderr, "kurir: no random bytes for TLS ticket keys; each context makes its own\n");
    if (workers > 1 && !check)
        lkurir_set_worker(-1, workers);
    struct engine *e = engine_load(script, server_open_lua, sargc, sargv, listen, nlisten, &err);
    if (!e) {
        fprintf(stderr, "kurir: %s\n", err ? err : "cannot load script");
        free(err);
        free(listen);
        return 1;
    }
    if (check) {
        if (!engine_has_user_hook(e, HOOK_DATA))
            printf("%s: note: no data hook; at the end of DATA each recipient must have a route "
                   "(rcpt.route), otherwise the message is refused with 451 4.3.5\n", script);
        printf("%s: OK\n", script);
        engine_unref(e);
        free(listen);
        return 0;
    }
    int n = master_workers(e, workers);
    if (n > 1) {
        /* the master checks the script as no worker: load it again so that
         * kurir.worker() says so (only when -w did not tell in advance) */
        if (workers == 0) {
            engine_unref(e);
            lkurir_set_worker(-1, n);
            e = engine_load(script, server_open_lua, sargc, sargv, listen, nlisten, &err);
            if (!e) {
                fprintf(stderr, "kurir: %s\n", err ? err : "cannot load script");
                free(err);
                free(listen);
                return 1;
            }
        }
        struct master_opts mo = {.script = script, .argc = sargc, .argv = sargv,
                                 .listen = listen, .nlisten = nlisten, .workers = n};
        bool is_worker;
        int rc = master_run(e, &mo, &is_worker);
        free(listen);
        return rc;
    }
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    struct server srv;
    if (server_init(&srv, loop, e) < 0) {
        server_free(&srv);
        free(listen);
        return 1;
    }
    /* listeners bound, TLS keys read: root is no longer needed */
    struct privdrop_want want;
    server_privdrop_want(&e->cfg, &want);
    struct privdrop_info who;
    char perr[512];
    enum privdrop_result pr = privdrop_apply(&want, &who, perr, sizeof(perr));
    if (pr == PRIVDROP_FAILED) {
        fprintf(stderr, "kurir: %s: %s\n", script, perr);
        server_free(&srv);
        free(listen);
        return 1;
    }
    if (pr == PRIVDROP_DROPPED || pr == PRIVDROP_ROOT_ALLOWED || pr == PRIVDROP_ROOT_WARN) {
        logfmt_begin(&srv.w.log, pr == PRIVDROP_ROOT_WARN ? "warn" : "info", NULL,
                     pr == PRIVDROP_DROPPED ? "privileges_dropped" : "running_as_root");
        if (pr == PRIVDROP_DROPPED) {
            logfmt_str(&srv.w.log, "user", e->cfg.user);
            logfmt_int(&srv.w.log, "uid", (long long)who.uid);
            logfmt_int(&srv.w.log, "gid", (long long)who.gid);
        } else {
            logfmt_str(&srv.w.log, "why", pr == PRIVDROP_ROOT_ALLOWED ? "run_as_root = true"
                                        : "no user configured (set user = \"...\" to drop root)");
        }
        worker_log_end(&srv.w);
        worker_log_flush(&srv.w);
    }
    srv.script = script;
    srv.argc = sargc;
    srv.argv = sargv;
    srv.listen_override = listen;
    srv.nlisten_override = nlisten;
    int rc = server_run(&srv);
    server_free(&srv);
    ev_loop_destroy(loop);
    free(listen);
    return rc;
}
