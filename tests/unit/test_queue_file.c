/* test_queue_file.c - the queue file format: token encoding round trips
 * (every byte value, "-", empty), an envelope formatted and parsed back,
 * parse errors (no magic, cut off, no id), the status log (last line
 * wins, a torn last line ignored, hold/release, mbox-begin), route
 * strings, and the DSN built from an envelope. */
#include "proto/dsn.h"
#include "proto/queue_file.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static void test_tokens(void)
{
    char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (char)(i == 0 ? 1 : i);
    struct buf b;
    buf_init(&b);
    queue_file_token(&b, all, sizeof(all));
    for (size_t i = 0; i < buf_used(&b); i++) {
        unsigned char c = (unsigned char)buf_peek(&b)[i];
        CHECK(c > 0x20 && c < 0x7f && c != '=');
    }
    char *back = queue_file_untoken(buf_peek(&b), buf_used(&b));
    CHECK_BYTES(back, strlen(back), all, sizeof(all));
    free(back);
    buf_reset(&b);
    queue_file_token(&b, "-", 1);
    CHECK_MEM(buf_peek(&b), buf_used(&b), "%2D");
    back = queue_file_untoken(buf_peek(&b), buf_used(&b));
    CHECK(back && !strcmp(back, "-"));
    free(back);
    buf_reset(&b);
    queue_file_token(&b, "", 0);
    CHECK_MEM(buf_peek(&b), buf_used(&b), "-");
    CHECK(queue_file_untoken("-", 1) == NULL);
    buf_free(&b);
}

static void fill(struct qenv *e)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "ABC123");
    e->arrival = 1700000000.5;
    e->from = strdup("a b@x.test");
    e->ret = strdup("FULL");
    e->envid = strdup("id+2B1");
    e->client = strdup("192.0.2.1");
    e->nrcpts = 2;
    e->rcpts = calloc(2, sizeof(*e->rcpts));
    e->rcpts[0].address = strdup("r1@y.test");
    e->rcpts[0].notify = QN_SUCCESS | QN_FAILURE;
    e->rcpts[0].orcpt = strdup("rfc822;r1+40y.test");
    e->rcpts[0].route = strdup("mbox path=/m/%25{user}");
    e->rcpts[1].address = strdup("r2@y.test");
    e->rcpts[1].route = strdup("pipe argv.1=/bin/x argv.2=a%20b timeout=60");
}

static void test_envelope(void)
{
    struct qenv e, p;
    fill(&e);
    struct buf b;
    buf_init(&b);
    queue_file_format(&e, &b);
    size_t hlen = buf_used(&b);
    buf_appends(&b, "Subject: x\r\n\r\nbody\r\n");
    char err[128];
    CHECK(queue_file_parse(buf_peek(&b), buf_used(&b), &p, err, sizeof(err)) == 0);
    CHECK(p.body_off == hlen);
    CHECK(!strcmp(p.id, "ABC123"));
    CHECK(!strcmp(p.from, "a b@x.test"));
    CHECK(!strcmp(p.ret, "FULL") && !strcmp(p.envid, "id+2B1"));
    CHECK(p.helo == NULL);
    CHECK(p.nrcpts == 2);
    CHECK(p.rcpts[0].notify == (QN_SUCCESS | QN_FAILURE) && p.rcpts[1].notify == 0);
    CHECK(!strcmp(p.rcpts[0].orcpt, "rfc822;r1+40y.test") && p.rcpts[1].orcpt == NULL);
    CHECK(!strcmp(p.rcpts[1].route, e.rcpts[1].route));
    char *v = queue_file_route_get(p.rcpts[1].route, "argv.2");
    CHECK(v && !strcmp(v, "a b"));
    free(v);
    CHECK(queue_file_route_get(p.rcpts[1].route, "argv.3") == NULL);
    char agent[32];
    queue_file_route_agent(p.rcpts[0].route, agent, sizeof(agent));
    CHECK(!strcmp(agent, "mbox"));

    /* every cut of the header is refused, never half-parsed */
    for (size_t n = 0; n < hlen; n++) {
        struct qenv c;
        CHECK(queue_file_parse(buf_peek(&b), n, &c, err, sizeof(err)) < 0);
    }
    struct qenv c;
    CHECK(queue_file_parse("NOT-KURIR 1\nid x\n\n", 18, &c, err, sizeof(err)) < 0);
    CHECK(queue_file_parse(QUEUE_FILE_MAGIC "\nfrom a\n\n", strlen(QUEUE_FILE_MAGIC) + 9, &c, err,
                           sizeof(err)) < 0);

    /* status log */
    struct buf st;
    buf_init(&st);
    queue_file_status_line(&st, 1, "deferred", 1, 1700000100, "try later", "4.3.0");
    queue_file_status_line(&st, 0, "delivered", 1, 1700000001, NULL, "2.0.0");
    queue_file_status_line(&st, -1, "hold", 0, 1700000002, NULL, NULL);
    buf_appends(&st, "1 mbox-begin 4096 512\n");
    buf_appends(&st, "1 failed 2 17");   /* torn: no newline */
    queue_file_apply_status(&p, buf_peek(&st), buf_used(&st));
    CHECK(p.rcpts[0].status == QS_DELIVERED);
    CHECK(p.rcpts[1].status == QS_DEFERRED && p.rcpts[1].attempts == 1);
    CHECK(p.rcpts[1].diag && !strcmp(p.rcpts[1].diag, "try later"));
    CHECK(p.rcpts[1].mbox_begun && p.rcpts[1].mbox_off == 4096 && p.rcpts[1].mbox_len == 512);
    CHECK(p.held);
    CHECK(!strcmp(queue_file_status_name(p.rcpts[1].status, p.held), "held"));

    /* the DSN for a failed recipient */
    p.rcpts[1].status = QS_FAILED;
    struct buf d;
    buf_init(&d);
    dsn_build(&p, -1, 0, "mx.test", "DSN1", false, 0, &d);
    buf_append(&d, "", 1);
    CHECK(strstr(buf_peek(&d), "Content-Type: multipart/report; report-type=delivery-status;") != NULL);
    CHECK(strstr(buf_peek(&d), "Final-Recipient: rfc822; r2@y.test\r\nAction: failed\r\nStatus: 4.3.0\r\n") != NULL);
    CHECK(strstr(buf_peek(&d), "Final-Recipient: rfc822; r1@y.test\r\nAction: delivered") != NULL);
    CHECK(strstr(buf_peek(&d), "Original-Recipient: rfc822;r1@y.test") != NULL);
    CHECK(strstr(buf_peek(&d), "Original-Envelope-Id: id+1") != NULL);
    buf_free(&d);
    buf_free(&st);
    buf_free(&b);
    queue_file_free(&p);
    queue_file_free(&e);
}

/* A linked spool file: the envelope names where the message starts (a
 * `body` line) and zeros fill the room up to it. */
static void test_body_line(void)
{
    struct qenv e, p;
    fill(&e);
    e.body_off = 4096;
    struct buf b;
    buf_init(&b);
    queue_file_format(&e, &b);
    CHECK(strstr(buf_peek(&b), "\nbody 4096\n\n") != NULL);
    size_t hlen = buf_used(&b);
    CHECK(hlen < 4096);
    memset(buf_reserve(&b, 4096 - hlen), 0, 4096 - hlen);
    buf_commit(&b, 4096 - hlen);
    buf_appends(&b, "Subject: x\r\n\r\nbody\r\n");
    char err[128];
    CHECK(queue_file_parse(buf_peek(&b), buf_used(&b), &p, err, sizeof(err)) == 0);
    CHECK(p.body_off == 4096 && p.nrcpts == 2);
    queue_file_free(&p);
    static const char inside[] = QUEUE_FILE_MAGIC "\nid x\nbody 3\n\n";
    CHECK(queue_file_parse(inside, sizeof(inside) - 1, &p, err, sizeof(err)) < 0);
    static const char junk[] = QUEUE_FILE_MAGIC "\nid x\nbody 12x\n\n";
    CHECK(queue_file_parse(junk, sizeof(junk) - 1, &p, err, sizeof(err)) < 0);
    static const char neg[] = QUEUE_FILE_MAGIC "\nid x\nbody -1\n\n";
    CHECK(queue_file_parse(neg, sizeof(neg) - 1, &p, err, sizeof(err)) < 0);
    buf_free(&b);
    queue_file_free(&e);
}

int main(void)
{
    test_tokens();
    test_envelope();
    test_body_line();
    return testutil_summary();
}
