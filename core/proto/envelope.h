/* envelope.h - the envelope of one transaction as a C object: the sender
 * with its ESMTP parameters (SIZE, BODY, RET, ENVID, SMTPUTF8, AUTH) and
 * the recipients, each with its parameters (NOTIFY, ORCPT), its route (the
 * route string of docs/queue.md) and its state. The session's transaction
 * owns one; the Lua `from`/`rcpts` objects are views on it and hold a
 * reference, so a view kept by a script never points at freed memory. The
 * queue file's envelope (proto/queue_file.h) is made from it. Pure. */
#ifndef KURIR_ENVELOPE_H
#define KURIR_ENVELOPE_H

#include <stdbool.h>
#include <stdint.h>
#include "proto/queue_file.h"
#include "proto/smtp_addr.h"

/* One ESMTP parameter: keyword upper-cased; value NULL when it had none. */
struct env_param {
    char *key;
    char *value;
};

struct env_addr {
    char *address;                   /* "" for the null sender <>; one block with user and domain */
    char *user;                      /* local part as sent (in address's block) */
    char *domain;                    /* (in address's block) */
    struct env_param *params;
    int nparams;
};

enum env_rcpt_state {
    ENV_RCPT_PENDING,                /* the rcpt hook decides */
    ENV_RCPT_ACCEPTED,               /* part of the message */
    ENV_RCPT_REFUSED,                /* the hook (or a check) refused it */
    ENV_RCPT_QUEUED,                 /* committed to the queue */
};

enum env_body { ENV_BODY_UNSET, ENV_BODY_7BIT, ENV_BODY_8BITMIME };

struct env_rcpt {
    struct env_addr addr;
    unsigned notify;                 /* QN_* bits; 0 = NOTIFY absent */
    char *orcpt;                     /* ORCPT as received (addr-type;xtext) or NULL */
    char *route;                     /* route string, or NULL (no route, or not storable) */
    enum env_rcpt_state state;
};

struct envelope {
    int refs;
    bool has_from;
    struct env_addr from;
    uint64_t size;                   /* SIZE=, 0 when absent */
    enum env_body body;
    char *ret;                       /* "FULL", "HDRS" or NULL */
    char *envid;                     /* xtext as received, or NULL */
    char *auth;                      /* AUTH= xtext as received, or NULL */
    bool smtputf8;
    struct env_rcpt *rcpts;          /* every RCPT that passed the syntax checks, in order
                                      * (the first few in the envelope's own block) */
    int nrcpts;
    int cap;
    int accepted;                    /* how many are ACCEPTED or QUEUED */
};

/* A new empty envelope with one reference. */
struct envelope *envelope_new(void);
void envelope_ref(struct envelope *e);
/* Drop a reference; the last one frees it. NULL is ignored. */
void envelope_unref(struct envelope *e);

/* Set the sender from a parsed MAIL path (its parameters were checked by
 * the caller: only their values are taken here). */
void envelope_set_from(struct envelope *e, const struct smtp_path *p);
/* Add a recipient from a parsed RCPT path, PENDING; returns its index. */
int envelope_add_rcpt(struct envelope *e, const struct smtp_path *p);
/* PENDING -> ACCEPTED or REFUSED (other states stay). */
void envelope_rcpt_accept(struct envelope *e, int i);
void envelope_rcpt_refuse(struct envelope *e, int i);
/* Replace the route string of recipient i (NULL clears it). */
void envelope_rcpt_set_route(struct envelope *e, int i, const char *route);
/* Is recipient i part of the message (ACCEPTED or QUEUED)? */
bool envelope_rcpt_accepted(const struct envelope *e, int i);
/* Parameter key (case-insensitive) of a: true when present; *value is its
 * value or NULL for a keyword without one. */
bool envelope_param(const struct env_addr *a, const char *key, const char **value);

/* The queue envelope for the recipients idx[0..n) (accepted, each with a
 * route): sender, RET, ENVID and the recipients with NOTIFY, ORCPT and
 * route, all copied. id, arrival, client and helo are the caller's. 0, or
 * -1 with the reason in err (out is then empty). */
int envelope_to_qenv(const struct envelope *e, const int *idx, int n, struct qenv *out, char *err,
                     size_t cap);
/* Mark those recipients QUEUED. */
void envelope_mark_queued(struct envelope *e, const int *idx, int n);

#endif
