/* session.h - one SMTP session (lives as long as the connection) and its
 * transaction (MAIL to end of DATA/BDAT or RSET). The command table lives
 * in the cmd_*.c files; session.c runs it: take parser events, check ->
 * hook -> proceed, timeouts, error counting, pipelining. */
#ifndef KURIR_SESSION_H
#define KURIR_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>
#include "net/conn.h"
#include "lua/engine.h"
#include "proto/logfmt.h"
#include "proto/msg_scan.h"
#include "proto/client_key.h"
#include "proto/envelope.h"
#include "proto/reply.h"
#include "proto/sasl.h"
#include "proto/smtp_addr.h"
#include "proto/smtp_parser.h"
#include "sys/spool.h"
#include "lua/task.h"
#include "smtp/stage.h"

struct worker;
struct session;

/* The sessions of a worker (app/server.c keeps one): each session links
 * itself in at session_new and out when freed, then calls gone(). */
struct session_set {
    struct session *head;
    int n;
    void (*gone)(struct session_set *set, struct session *s);
};
struct session;

enum sstate {
    SS_GREETING,     /* connect hook running, no greeting sent yet */
    SS_INIT,         /* greeted, waiting for HELO/EHLO */
    SS_READY,        /* HELO/EHLO done, no transaction */
    SS_MAIL,         /* MAIL accepted, no recipient yet */
    SS_RCPT,         /* at least one recipient */
    SS_DATA,         /* receiving DATA */
    SS_BDAT,         /* receiving a BDAT chunk */
    SS_AUTH,         /* inside an AUTH exchange (334 sent) */
    SS_REFUSED,      /* connect hook said 554: only QUIT */
    SS_TLS,          /* TLS handshake running */
    SS_CLOSED,
};

#define ST(x) (1u << (x))

typedef void (*session_proceed_fn)(struct session *s, const struct stage_reply *r);

/* What a check computed for its proceed step (the hook runs in between):
 * a check changes nothing else, so a refused command leaves no trace. */
struct cmd_args {
    int ref;                         /* Lua object for the hook (MAIL/RCPT address); LUA_NOREF */
    struct envelope *env;            /* MAIL: the new envelope (one reference) */
    int rcpt;                        /* RCPT: its (pending) index in the transaction's envelope */
    bool esmtp;                      /* EHLO, not HELO */
    uint64_t size;                   /* BDAT chunk size */
    bool last;                       /* BDAT ... LAST */
    enum sasl_mech mech;             /* AUTH mechanism */
    struct smtp_span initial;        /* AUTH initial response (in session->line) */
    bool has_initial;
};

enum cmd_check {
    CHECK_OK,                        /* go on to the hook */
    CHECK_REFUSED,                   /* replied; counts toward limits.errors */
    CHECK_REPLIED,                   /* replied (a limit, not a client error) */
};

struct cmd {
    const char *verb;
    unsigned states;                 /* ST() mask where the command is valid */
    unsigned flags;                  /* CMD_* */
    enum cmd_check (*check)(struct session *s, struct smtp_span arg, struct cmd_args *a);
    enum reply_stage stage;          /* whose hook decides (stage.c); STAGE_OTHER: no hook */
    /* push hook arguments after the session object; returns how many */
    int (*push)(struct session *s, lua_State *co);
    session_proceed_fn proceed;
};

#define CMD_NEEDS_AUTH  0x01   /* refused with 530 until AUTH when auth.required */
#define CMD_BEFORE_TLS  0x02   /* allowed before STARTTLS when tls.required */
#define CMD_ENDS_GROUP  0x04   /* last of a pipelined group (RFC 2920 3.1): replies written now if nothing follows */
#define CMD_JUNK        0x08   /* changes nothing: counts toward limits.junk_commands */
#define CMD_ESMTP       0x10   /* EHLO: enhanced status codes from now on, its own error replies too */

struct tx {
    bool active;
    char id[24];                     /* queue id */
    struct envelope *env;            /* sender and recipients (one reference) */
    int from_ref;                    /* the sender's view (lua_address.c) */
    struct spool spool;
    struct msg_scan scan;
    bool body_started;
    bool too_big;
    bool bdat;                       /* BDAT used: DATA now refused */
    bool bdat_bad;                   /* current chunk is consumed then refused */
    enum reply_id bdat_err;
    bool bdat_last;
    uint64_t bdat_size;
    struct buf added;                /* headers prepended by add_header + Received */
    int msg_ref;                     /* kurir.message userdata while the data hook runs */
    bool handed;                     /* stored, read whole (raw) or discarded on purpose */
    double data_deadline;            /* loop time the message must be in by; 0 = not started */
    bool queued;                     /* msg:enqueue committed (or is committing) it */
};

struct session {
    struct conn conn;
    struct worker *w;
    struct session_set *set;
    int refs;                        /* session_ref/unref: the conn's, each running hook's */
    struct engine *eng;
    struct session *prev, *next;
    char id[24];
    char client_key[CLIENT_KEY_MAX]; /* what accept counted this connection under (app/server.c) */
    enum sstate state;
    enum sstate state_before_auth;
    enum sstate state_before_bdat;
    bool esmtp;
    bool esmtp_before;               /* restored when HELO/EHLO is rejected */
    bool enhanced;                   /* the client used EHLO: enhanced status codes */
    char *helo;
    bool tls;                        /* TLS active */
    bool tls_required;               /* implicit-TLS listener: handshake first */
    char *user;                      /* authenticated identity */
    int errors;
    int junk;                        /* commands that changed nothing (session_junk) */
    bool greeted;
    bool shutdown;                   /* server stopping: close after this transaction */
    struct smtp_parser parser;
    struct tx tx;
    struct sasl sasl;
    ev_timer timer;                  /* command / data timeout */
    struct buf line;                 /* copy of the command being processed */
    struct buf reply;                /* a reply being built; session_flush queues it */
    struct buf hook_text;            /* text of the last hook reply */
    struct buf scratch;
    const struct cmd *cur_cmd;       /* the row whose hook runs (its proceed follows) */
    struct cmd_args args;            /* what its check computed */
    /* Lua */
    struct task task;                /* runs the hooks (coroutine, budget, waits) */
    int ud_ref;                      /* kurir.session userdata */
    int arg_ref;                     /* argument object built by a check (address, cred) */
    int rcpts_ref;                   /* the transaction's recipients' views by envelope index + 1:
                                      * one table for the session, emptied when a transaction ends */
    bool in_hook;                    /* a hook runs or waits */
    enum hook cur_hook;
    enum reply_stage cur_stage;      /* the stage the running hook decides */
    session_proceed_fn pending;      /* what to do with the running hook's result */
    bool disconnect_done;
    bool processing;
    ev_timer pause_timer;            /* session_pause: no command is read meanwhile */
    bool pausing;
    void (*pause_then)(struct session *s);
    bool drop_now;                   /* s:drop(): close without a reply when the hook ends */
    bool drop_data;                  /* s:drop(n): close once n body bytes of DATA/BDAT came */
    uint64_t drop_data_at;
};

/* The smtp/smtps protocol's constructor (app/server.c's protocol table):
 * a session on an accepted socket, run by w with w->eng, linked into set;
 * local as for conn_init (NULL: asked from fd). */
struct session *session_new(struct worker *w, struct session_set *set, int fd, bool implicit_tls,
                            const struct sockaddr_storage *peer, const struct sockaddr_storage *local);
/* A reference keeps s from being freed; the last session_unref frees it. */
void session_ref(struct session *s);
void session_unref(struct session *s);
/* server shutdown: finish the current transaction, then 421 and close */
void session_shutdown(struct session *s);
void session_force_close(struct session *s);

/* Reply helpers used by the cmd_*.c rows. */
void session_reply(struct session *s, enum reply_id id);
/* a row whose "%a" is arg (NULL: empty) */
void session_reply_arg(struct session *s, enum reply_id id, const char *arg);
/* a row with its enhanced code even before EHLO (the parameter and path
 * errors always showed it), its text replaced by text unless NULL (a
 * parser's reason) */
void session_reply_esc(struct session *s, enum reply_id id, const char *text);
/* what stage_apply decided at stage st: the reply, then close (421), the
 * error and junk counts; arg fills "%a" of a row's text */
void session_reply_stage(struct session *s, enum reply_stage st, const struct stage_reply *r,
                         const char *arg);
/* bytes were put on s->reply directly: queue them, written this loop iteration */
void session_flush(struct session *s);
void session_error(struct session *s);            /* count an error; 421 past the limit */
void session_close(struct session *s);            /* flush and close */
/* count a command that changed nothing (NOOP, RSET, HELP, VRFY, EXPN, a
 * refused RCPT); 421 past limits.junk_commands. Call after its reply. */
void session_junk(struct session *s);
/* a message was accepted: the client is doing real work */
void session_junk_clear(struct session *s);
/* read no further command for secs seconds (other sessions go on), then
 * call then(s); nothing is called if the connection closes meanwhile */
void session_pause(struct session *s, double secs, void (*then)(struct session *s));

/* Run the hook of stage st (if the script has it), apply its result
 * (stage_apply) and call proceed with the decision. push may be NULL (no
 * extra arguments). */
void session_run_hook(struct session *s, enum reply_stage st, int (*push)(struct session *, lua_State *),
                      session_proceed_fn proceed);
/* engine.c calls this when a waiting hook finished */
void session_hook_finished(struct session *s, const struct hook_result *r);

void session_greet(struct session *s);
/* back to the command timeout after a TLS handshake */
void session_timeouts_reset(struct session *s);
/* the argument of the command being processed (from the session's copy) */
struct smtp_span session_arg(struct session *s);
void session_tx_reset(struct session *s);
void session_tx_begin(struct session *s);
void session_new_queue_id(struct session *s, char *out);
/* One log line about s: session_log_begin starts it (time, level, session
 * id, event) and returns the buffer for typed logfmt_str/_int/_mem fields;
 * session_log_end queues it. Nothing else may log in between. */
struct buf *session_log_begin(struct session *s, const char *level, const char *event);
void session_log_end(struct session *s);

/* command tables of the cmd_*.c files */
extern const struct cmd cmd_basic_table[];
extern const struct cmd cmd_mail_table[];
extern const struct cmd cmd_data_table[];
extern const struct cmd cmd_auth_table[];
extern const struct cmd cmd_starttls_table[];

/* data path (cmd_data.c) */
void data_bytes(struct session *s, const char *p, size_t n);
void data_end(struct session *s);
void bdat_chunk_end(struct session *s);

/* starttls (cmd_starttls.c) */
void starttls_begin(struct session *s);
void starttls_done(struct session *s, bool ok);
/* auth (cmd_auth.c) */
void auth_line(struct session *s, const char *line, size_t len);

#endif
