/* test_envelope.c - the transaction's envelope: sender parameters (SIZE,
 * BODY, RET upper-cased, ENVID, SMTPUTF8, AUTH), recipients added PENDING
 * then accepted or refused (refused ones never count),
 * routes replaced, parameters case-insensitive, the queue envelope made for
 * a subset (refused, out of range and route-less recipients rejected) and
 * formatted and parsed back by queue_file, the reference count, and many
 * recipients (the first ones in the envelope's own block). */
#include "proto/envelope.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void path(enum smtp_path_kind k, const char *arg, struct smtp_path *p)
{
    const char *why = NULL;
    CHECK(smtp_path_parse(k, arg, strlen(arg), p, &why) == SMTP_ADDR_OK);
}

static struct envelope *sample(void)
{
    struct envelope *e = envelope_new();
    struct smtp_path p;
    path(SMTP_PATH_MAIL, "FROM:<a@x.test> size=1234 BODY=8bitmime RET=hdrs ENVID=id+2B1 SMTPUTF8 AUTH=<>", &p);
    envelope_set_from(e, &p);
    path(SMTP_PATH_RCPT, "TO:<r1@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r1+40y.test", &p);
    CHECK(envelope_add_rcpt(e, &p) == 0);
    path(SMTP_PATH_RCPT, "TO:<no@y.test>", &p);
    CHECK(envelope_add_rcpt(e, &p) == 1);
    path(SMTP_PATH_RCPT, "TO:<r2@y.test> NOTIFY=NEVER", &p);
    CHECK(envelope_add_rcpt(e, &p) == 2);
    return e;
}

static void test_sender(void)
{
    struct envelope *e = sample();
    CHECK(e->has_from);
    CHECK_MEM(e->from.address, strlen(e->from.address), "a@x.test");
    CHECK_MEM(e->from.user, strlen(e->from.user), "a");
    CHECK_MEM(e->from.domain, strlen(e->from.domain), "x.test");
    CHECK(e->size == 1234);
    CHECK(e->body == ENV_BODY_8BITMIME);
    CHECK(e->ret && !strcmp(e->ret, "HDRS"));
    CHECK(e->envid && !strcmp(e->envid, "id+2B1"));
    CHECK(e->auth && !strcmp(e->auth, "<>"));
    CHECK(e->smtputf8);
    const char *v = "x";
    CHECK(envelope_param(&e->from, "size", &v) && v && !strcmp(v, "1234"));
    CHECK(e->from.nparams == 6 && !strcmp(e->from.params[0].key, "SIZE"));
    CHECK(envelope_param(&e->from, "SMTPUTF8", &v) && v == NULL);
    CHECK(!envelope_param(&e->from, "NOTIFY", &v) && v == NULL);
    envelope_unref(e);

    struct smtp_path p;
    e = envelope_new();
    path(SMTP_PATH_MAIL, "FROM:<>", &p);
    envelope_set_from(e, &p);
    CHECK(e->has_from && e->from.address[0] == '\0' && e->size == 0 && !e->smtputf8);
    CHECK(e->body == ENV_BODY_UNSET && !e->ret && !e->envid);
    envelope_unref(e);
}

static void test_recipients(void)
{
    struct envelope *e = sample();
    CHECK(e->nrcpts == 3 && e->accepted == 0);
    CHECK(e->rcpts[0].notify == (QN_SUCCESS | QN_FAILURE));
    CHECK(e->rcpts[0].orcpt && !strcmp(e->rcpts[0].orcpt, "rfc822;r1+40y.test"));
    CHECK(e->rcpts[2].notify == QN_NEVER && !e->rcpts[2].orcpt);
    CHECK(!envelope_rcpt_accepted(e, 0));   /* still pending */
    envelope_rcpt_accept(e, 0);
    envelope_rcpt_refuse(e, 1);
    envelope_rcpt_accept(e, 2);
    envelope_rcpt_accept(e, 1);   /* refused stays refused */
    envelope_rcpt_accept(e, 7);   /* out of range: nothing */
    CHECK(e->accepted == 2);
    CHECK(e->rcpts[1].state == ENV_RCPT_REFUSED);
    CHECK(envelope_rcpt_accepted(e, 0) && !envelope_rcpt_accepted(e, 1) && envelope_rcpt_accepted(e, 2));
    CHECK(!envelope_rcpt_accepted(e, -1) && !envelope_rcpt_accepted(e, 3));
    envelope_rcpt_set_route(e, 0, "mbox path=/m/x");
    envelope_rcpt_set_route(e, 0, "discard");
    CHECK(!strcmp(e->rcpts[0].route, "discard"));
    envelope_rcpt_set_route(e, 0, NULL);
    CHECK(e->rcpts[0].route == NULL);
    envelope_unref(e);
}

static void test_to_qenv(void)
{
    struct envelope *e = sample();
    envelope_rcpt_accept(e, 0);
    envelope_rcpt_refuse(e, 1);
    envelope_rcpt_accept(e, 2);
    envelope_rcpt_set_route(e, 0, "mbox path=/m/%25{user}");
    char err[128];
    struct qenv q;
    int two[] = {0, 2};
    CHECK(envelope_to_qenv(e, two, 2, &q, err, sizeof(err)) == -1);   /* r2 has no route */
    CHECK(strstr(err, "<r2@y.test>") != NULL);
    CHECK(q.nrcpts == 0 && q.rcpts == NULL);
    int refused[] = {1};
    envelope_rcpt_set_route(e, 1, "discard");
    CHECK(envelope_to_qenv(e, refused, 1, &q, err, sizeof(err)) == -1);
    int bad[] = {9};
    CHECK(envelope_to_qenv(e, bad, 1, &q, err, sizeof(err)) == -1);
    CHECK(envelope_to_qenv(e, two, 0, &q, err, sizeof(err)) == -1);
    envelope_rcpt_set_route(e, 2, "pipe argv.1=/bin/x timeout=60");
    CHECK(envelope_to_qenv(e, two, 2, &q, err, sizeof(err)) == 0);
    CHECK(q.nrcpts == 2 && !strcmp(q.from, "a@x.test") && !strcmp(q.ret, "HDRS"));
    snprintf(q.id, sizeof(q.id), "ID1");
    q.arrival = 5.25;

    /* through the queue file format and back */
    struct buf b;
    buf_init(&b);
    queue_file_format(&q, &b);
    struct qenv back;
    CHECK(queue_file_parse(buf_peek(&b), buf_used(&b), &back, err, sizeof(err)) == 0);
    CHECK(back.nrcpts == 2);
    CHECK(!strcmp(back.from, "a@x.test") && !strcmp(back.envid, "id+2B1"));
    CHECK(!strcmp(back.rcpts[0].address, "r1@y.test") && back.rcpts[0].notify == (QN_SUCCESS | QN_FAILURE));
    CHECK(!strcmp(back.rcpts[0].orcpt, "rfc822;r1+40y.test"));
    CHECK(!strcmp(back.rcpts[0].route, "mbox path=/m/%25{user}"));
    CHECK(!strcmp(back.rcpts[1].address, "r2@y.test") && back.rcpts[1].notify == QN_NEVER);
    CHECK(!strcmp(back.rcpts[1].route, "pipe argv.1=/bin/x timeout=60"));
    queue_file_free(&back);
    queue_file_free(&q);
    buf_free(&b);

    envelope_mark_queued(e, two, 2);
    CHECK(e->rcpts[0].state == ENV_RCPT_QUEUED && e->rcpts[2].state == ENV_RCPT_QUEUED);
    CHECK(envelope_rcpt_accepted(e, 0) && e->accepted == 2);
    envelope_unref(e);
}

static void test_refs(void)
{
    struct envelope *e = envelope_new();
    envelope_ref(e);
    envelope_unref(e);
    CHECK(e->refs == 1);   /* still alive: ASan would catch a use after free */
    envelope_unref(e);
    envelope_unref(NULL);
}

/* Many recipients: the first few live in the envelope's block, the rest
 * move to a growing array; every address, user and domain (one block per
 * address) stays intact, and the null sender is three empty strings. */
static void test_many_rcpts(void)
{
    struct envelope *e = envelope_new();
    struct smtp_path p;
    path(SMTP_PATH_MAIL, "FROM:<>", &p);
    envelope_set_from(e, &p);
    CHECK(!strcmp(e->from.address, "") && !strcmp(e->from.user, "") && !strcmp(e->from.domain, ""));
    char arg[64], want[64];
    for (int i = 0; i < 40; i++) {
        snprintf(arg, sizeof(arg), "TO:<user%d@d%d.test> NOTIFY=NEVER", i, i);
        path(SMTP_PATH_RCPT, arg, &p);
        CHECK(envelope_add_rcpt(e, &p) == i);
        envelope_rcpt_accept(e, i);
    }
    int bad = 0;
    for (int i = 0; i < 40; i++) {
        const struct env_addr *a = &e->rcpts[i].addr;
        snprintf(want, sizeof(want), "user%d@d%d.test", i, i);
        bad += strcmp(a->address, want) != 0;
        snprintf(want, sizeof(want), "user%d", i);
        bad += strcmp(a->user, want) != 0;
        snprintf(want, sizeof(want), "d%d.test", i);
        bad += strcmp(a->domain, want) != 0;
        const char *v = NULL;
        bad += !envelope_param(a, "notify", &v) || !v || strcmp(v, "NEVER") != 0;
    }
    CHECK(bad == 0);
    CHECK(e->nrcpts == 40 && e->accepted == 40 && e->cap >= 40);
    envelope_unref(e);
}

int main(void)
{
    test_sender();
    test_recipients();
    test_to_qenv();
    test_refs();
    test_many_rcpts();
    return testutil_summary();
}
