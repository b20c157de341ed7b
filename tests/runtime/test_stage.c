/* test_stage.c - the stage table and stage_apply(): for every stage and
 * every kind of hook result (nil, false, code with and without text, 421,
 * an error under each on_error policy) the reply that goes out, byte for
 * byte, and what follows it (ok, close, refuse, error and junk counts,
 * delay). No session, socket or Lua state: this is the pure half of the
 * result -> reply path; test_session.c drives the other half. */
#include "smtp/stage.h"
#include "testutil.h"

#include <string.h>

#define HOST "mx.test"

/* the result kinds; text NULL means none */
static struct hook_result dflt(void) { return (struct hook_result){HR_DEFAULT, 0, NULL, 0}; }
static struct hook_result reject(void) { return (struct hook_result){HR_REJECT, 0, NULL, 0}; }
static struct hook_result error(void) { return (struct hook_result){HR_ERROR, 0, NULL, 0}; }
static struct hook_result code(int c, const char *t)
{
    return (struct hook_result){HR_REPLY, c, t ? t : "", t ? strlen(t) : 0};
}

/* outcome flags compared at once: o = ok, c = close, r = refuse, e = error,
 * j = junk, d = delay, h = hook error, - = nothing sent */
static void flags_of(const struct stage_reply *r, char *out)
{
    char *p = out;
    if (!r->send)
        *p++ = '-';
    if (r->ok)
        *p++ = 'o';
    if (r->close)
        *p++ = 'c';
    if (r->refuse)
        *p++ = 'r';
    if (r->error)
        *p++ = 'e';
    if (r->junk)
        *p++ = 'j';
    if (r->delay)
        *p++ = 'd';
    if (r->hook_error)
        *p++ = 'h';
    *p = '\0';
}

static struct reply_cache replies;

static void expect(enum reply_stage st, struct hook_result hr, enum err_policy pol, bool enhanced,
                   const char *arg, const char *wire, const char *flags, const char *what)
{
    struct stage_reply r;
    stage_apply(st, &hr, pol, &r);
    struct buf out;
    buf_init(&out);
    stage_format(&out, st, &r, enhanced, NULL, HOST, arg);
    if (!testutil_check_bytes(buf_peek(&out), buf_used(&out), wire, strlen(wire), what, __FILE__, __LINE__))
        fprintf(stderr, "    stage %s\n", stage_get(st)->name);
    /* the same bytes from an engine's reply cache, filled and then reused */
    for (int round = 0; round < 2; round++) {
        buf_reset(&out);
        stage_format(&out, st, &r, enhanced, &replies, HOST, arg);
        if (!testutil_check_bytes(buf_peek(&out), buf_used(&out), wire, strlen(wire), what, __FILE__, __LINE__))
            fprintf(stderr, "    stage %s, from the reply cache (round %d)\n", stage_get(st)->name, round);
    }
    char f[16];
    flags_of(&r, f);
    if (!CHECK(!strcmp(f, flags)))
        fprintf(stderr, "    %s at %s: flags \"%s\", expected \"%s\"\n", what, stage_get(st)->name, f, flags);
    buf_free(&out);
}

#define T ERR_TEMPFAIL

static void test_table(void)
{
    /* every stage has a row; the hooks are the ones SPEC 2 names */
    for (int st = 0; st < STAGE_COUNT; st++)
        CHECK(stage_get((enum reply_stage)st)->name != NULL);
    CHECK(stage_get(STAGE_CONNECT)->hook == HOOK_CONNECT);
    CHECK(stage_get(STAGE_DATA)->hook == HOOK_DATA);
    CHECK(stage_get(STAGE_TX_END)->hook == HOOK_RESET);
    CHECK(stage_get(STAGE_RESET)->hook == HOOK_RESET);
    CHECK(stage_get(STAGE_OTHER)->hook == HOOK_NONE);
    CHECK(stage_get((enum reply_stage)99) == stage_get(STAGE_OTHER));
}

static void test_connect(void)
{
    /* SPEC 2.1: only 220, 421 (close) and 554 (then only QUIT) */
    expect(STAGE_CONNECT, dflt(), T, false, NULL, "220 mx.test ESMTP kurir\r\n", "o", "nil");
    expect(STAGE_CONNECT, code(250, NULL), T, false, NULL, "220 mx.test ESMTP kurir\r\n", "o", "bare 2xx");
    expect(STAGE_CONNECT, code(250, "welcome"), T, false, NULL, "220 welcome\r\n", "o", "2xx text");
    expect(STAGE_CONNECT, code(450, "busy"), T, false, NULL, "421 busy\r\n", "c", "4xx");
    expect(STAGE_CONNECT, code(421, NULL), T, false, NULL,
           "421 Service not available, closing transmission channel\r\n", "c", "bare 421");
    expect(STAGE_CONNECT, code(550, "go away"), T, false, NULL, "554 go away\r\n", "r", "5xx");
    expect(STAGE_CONNECT, code(554, NULL), T, false, NULL, "554 Connection refused\r\n", "r", "bare 554");
    expect(STAGE_CONNECT, reject(), T, false, NULL, "554 Connection refused\r\n", "r", "false");
    /* an error: 421 4.3.0 with the enhanced code although no EHLO came */
    expect(STAGE_CONNECT, error(), T, false, NULL,
           "421 4.3.0 mx.test Temporary server error, closing connection\r\n", "ch", "error");
    expect(STAGE_CONNECT, error(), ERR_REJECT, false, NULL, "554 Connection refused\r\n", "r", "error/reject");
    expect(STAGE_CONNECT, error(), ERR_CONTINUE, false, NULL, "220 mx.test ESMTP kurir\r\n", "o",
           "error/continue");
}

static void test_commands(void)
{
    expect(STAGE_HELO, dflt(), T, true, NULL, "250 2.0.0 OK\r\n", "o", "helo nil");
    expect(STAGE_HELO, reject(), T, true, NULL, "550 5.7.1 Hello rejected\r\n", "", "helo false");
    expect(STAGE_HELO, reject(), T, false, NULL, "550 Hello rejected\r\n", "", "helo false, HELO client");
    expect(STAGE_HELO, code(250, "hi there"), T, true, NULL, "250 2.0.0 hi there\r\n", "o", "helo text");

    expect(STAGE_MAIL, dflt(), T, true, NULL, "250 2.1.0 Sender OK\r\n", "o", "mail nil");
    expect(STAGE_MAIL, reject(), T, true, NULL, "550 5.1.0 Sender rejected\r\n", "", "mail false");
    expect(STAGE_MAIL, code(550, NULL), T, true, NULL, "550 5.1.0 Sender rejected\r\n", "", "mail 550");
    expect(STAGE_MAIL, code(450, NULL), T, true, NULL, "450 4.1.0 Sender temporarily rejected\r\n", "",
           "mail 450");
    expect(STAGE_MAIL, code(553, "5.7.1 not you\nreally"), T, true, NULL,
           "553-5.7.1 not you\r\n553 5.7.1 really\r\n", "", "mail multi-line");
    expect(STAGE_MAIL, code(421, "bye"), T, true, NULL, "421 4.3.0 bye\r\n", "c", "mail 421");
    /* a hook error: 451 4.3.0, the enhanced code shown even to a HELO client */
    expect(STAGE_MAIL, error(), T, false, NULL, "451 4.3.0 Temporary server error, try again later\r\n", "h",
           "mail error");
    expect(STAGE_MAIL, error(), ERR_REJECT, true, NULL, "550 5.1.0 Sender rejected\r\n", "", "mail error/reject");
    expect(STAGE_MAIL, error(), ERR_CONTINUE, true, NULL, "250 2.1.0 Sender OK\r\n", "o", "mail error/continue");

    /* a refused recipient counts as junk (a directory harvest); 421 closes instead */
    expect(STAGE_RCPT, dflt(), T, true, NULL, "250 2.1.5 Recipient OK\r\n", "o", "rcpt nil");
    expect(STAGE_RCPT, reject(), T, true, NULL, "550 5.1.1 Recipient rejected\r\n", "j", "rcpt false");
    expect(STAGE_RCPT, code(452, NULL), T, true, NULL, "452 4.5.3 Too many recipients\r\n", "j", "rcpt 452");
    expect(STAGE_RCPT, code(251, "forwarded"), T, true, NULL, "251 2.1.5 forwarded\r\n", "o", "rcpt 251");
    expect(STAGE_RCPT, error(), T, true, NULL, "451 4.3.0 Temporary server error, try again later\r\n", "jh",
           "rcpt error");
    expect(STAGE_RCPT, code(421, NULL), T, true, NULL,
           "421 4.3.0 Service not available, closing transmission channel\r\n", "c", "rcpt 421");

    expect(STAGE_VRFY, dflt(), T, true, NULL,
           "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n", "o", "vrfy nil");
    expect(STAGE_VRFY, reject(), T, true, NULL, "550 5.7.1 Rejected\r\n", "", "vrfy false");
    expect(STAGE_EXPN, dflt(), T, true, NULL, "502 5.5.1 EXPN not supported\r\n", "o", "expn nil");
    expect(STAGE_EXPN, reject(), T, true, NULL, "502 5.5.1 EXPN not supported\r\n", "", "expn false");
    expect(STAGE_RESET, dflt(), T, true, NULL, "250 2.0.0 OK\r\n", "o", "rset nil");
    expect(STAGE_RESET, reject(), T, true, NULL, "550 5.7.1 Rejected\r\n", "", "rset false");
}

static void test_data(void)
{
    /* the acceptance names the queue id, also for a bare 2xx of the hook's choice */
    expect(STAGE_DATA, dflt(), T, true, "Q1", "250 2.0.0 Message accepted: queued as Q1\r\n", "o", "data nil");
    expect(STAGE_DATA, dflt(), T, false, "Q1", "250 Message accepted: queued as Q1\r\n", "o", "data nil HELO");
    expect(STAGE_DATA, code(251, NULL), T, true, "Q1", "251 2.0.0 Message accepted: queued as Q1\r\n", "o",
           "data bare 251");
    expect(STAGE_DATA, code(250, "2.0.0 kept"), T, true, "Q1", "250 2.0.0 kept\r\n", "o", "data text");
    expect(STAGE_DATA, reject(), T, true, "Q1", "554 5.6.0 Message rejected\r\n", "", "data false");
    expect(STAGE_DATA, code(552, NULL), T, true, "Q1",
           "552 5.3.4 Message size exceeds fixed maximum message size\r\n", "", "data 552");
    expect(STAGE_DATA, error(), T, true, "Q1", "451 4.3.0 Temporary server error, try again later\r\n", "h",
           "data error");
}

static void test_auth_starttls_command(void)
{
    /* auth: a refusal waits auth.failure_delay and counts as an error; 421 does neither */
    expect(STAGE_AUTH, dflt(), T, true, NULL, "235 2.7.0 Authentication successful\r\n", "o", "auth nil");
    expect(STAGE_AUTH, reject(), T, true, NULL, "535 5.7.8 Authentication credentials invalid\r\n", "ed",
           "auth false");
    expect(STAGE_AUTH, code(454, NULL), T, true, NULL, "454 4.7.0 Temporary authentication failure\r\n", "ed",
           "auth 454");
    expect(STAGE_AUTH, code(421, "later"), T, true, NULL, "421 4.3.0 later\r\n", "c", "auth 421");

    /* starttls: after the handshake no command is outstanding: 421 or 554, then close */
    expect(STAGE_STARTTLS, dflt(), T, false, NULL, "", "-o", "starttls nil (nothing to send)");
    expect(STAGE_STARTTLS, code(250, "fine"), T, false, NULL, "", "-o", "starttls 2xx (nothing to send)");
    expect(STAGE_STARTTLS, code(450, "not now"), T, false, NULL, "421 not now\r\n", "c", "starttls 4xx");
    expect(STAGE_STARTTLS, code(550, "no"), T, false, NULL, "554 no\r\n", "c", "starttls 5xx");
    expect(STAGE_STARTTLS, reject(), T, false, NULL, "554 Connection refused\r\n", "c", "starttls false");
    expect(STAGE_STARTTLS, error(), T, false, NULL, "421 4.3.0 Temporary server error, try again later\r\n",
           "ch", "starttls error");

    /* command: nil/false leave the verb unknown (an error); a 5xx counts too */
    expect(STAGE_COMMAND, dflt(), T, true, NULL, "500 5.5.1 Command unrecognized\r\n", "e", "command nil");
    expect(STAGE_COMMAND, reject(), T, true, NULL, "500 5.5.1 Command unrecognized\r\n", "e", "command false");
    expect(STAGE_COMMAND, code(250, "done"), T, true, NULL, "250 2.0.0 done\r\n", "o", "command 250");
    expect(STAGE_COMMAND, code(502, NULL), T, true, NULL, "502 5.5.1 Command not implemented\r\n", "e",
           "command 502");
    expect(STAGE_COMMAND, error(), T, true, NULL, "451 4.3.0 Temporary server error, try again later\r\n", "h",
           "command error");

    /* ignored results: nothing is sent, whatever came back */
    expect(STAGE_TX_END, code(550, "x"), T, true, NULL, "", "-o", "tx end");
    expect(STAGE_DISCONNECT, error(), T, true, NULL, "", "-o", "disconnect");
}

int main(void)
{
    test_table();
    test_connect();
    test_commands();
    test_data();
    test_auth_starttls_command();
    reply_cache_free(&replies);
    return testutil_summary();
}
