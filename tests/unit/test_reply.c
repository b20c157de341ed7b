/* test_reply.c - the reply table, default enhanced codes and texts, and the
 * exact bytes reply_format() puts on the wire (multi-line, wrapping at the
 * 512-byte line limit, enhanced codes, control bytes, "%h"). */
#include "proto/reply.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* Format into a fresh buffer and compare with the expected wire bytes. */
#define CHECK_FMT(expected, code, esc, text, enhanced, stage, host)                 \
    do {                                                                              \
        struct buf out_;                                                              \
        buf_init(&out_);                                                              \
        const char *t_ = (text);                                                      \
        reply_format(&out_, (code), (esc), t_, t_ ? strlen(t_) : 0, (enhanced), (stage), \
                     (host));                                                         \
        CHECK_MEM(buf_peek(&out_), buf_used(&out_), (expected));                      \
        buf_free(&out_);                                                              \
    } while (0)

static void test_canned_rows(void)
{
    /* Every row, as sent to an EHLO client (enhanced) with host "mx.test":
     * pins code, enhanced code and text of the whole table. */
    static const struct {
        enum reply_id id;
        const char *wire;
    } rows[] = {
        { R_GREETING, "220 mx.test ESMTP kurir\r\n" },
        { R_CLOSING, "221 2.0.0 Bye\r\n" },
        { R_ACCEPT, "250 2.0.0 OK\r\n" },
        { R_MAIL_OK, "250 2.1.0 Sender OK\r\n" },
        { R_RCPT_OK, "250 2.1.5 Recipient OK\r\n" },
        { R_DATA_GO, "354 End data with <CR><LF>.<CR><LF>\r\n" },
        { R_VRFY_DEFAULT, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n" },
        { R_EXPN_DEFAULT, "502 5.5.1 EXPN not supported\r\n" },
        { R_HELP, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP STARTTLS AUTH\r\n" },
        { R_STARTTLS_GO, "220 2.0.0 Ready to start TLS\r\n" },
        { R_AUTH_OK, "235 2.7.0 Authentication successful\r\n" },
        { R_UNKNOWN_CMD, "500 5.5.1 Command unrecognized\r\n" },
        { R_LINE_TOO_LONG, "500 5.5.6 Line too long\r\n" },
        { R_SYNTAX, "501 5.5.4 Syntax error in parameters or arguments\r\n" },
        { R_HELO_SYNTAX, "501 5.5.4 Syntax: HELO/EHLO hostname\r\n" },
        { R_NOT_IMPLEMENTED, "502 5.5.1 Command not implemented\r\n" },
        { R_BAD_SEQUENCE, "503 5.5.1 Bad sequence of commands\r\n" },
        { R_NEED_HELO, "503 5.5.1 Send HELO/EHLO first\r\n" },
        { R_NEED_MAIL, "503 5.5.1 Need MAIL command\r\n" },
        { R_NEED_RCPT, "503 5.5.1 Need RCPT command\r\n" },
        { R_NESTED_MAIL, "503 5.5.1 Sender already specified\r\n" },
        { R_REFUSED_SESSION, "503 5.7.0 Session refused; only QUIT is allowed\r\n" },
        { R_PARAM_UNKNOWN, "555 5.5.4 Unsupported parameter\r\n" },
        { R_MECH_UNKNOWN, "504 5.5.4 Unrecognized authentication mechanism\r\n" },
        { R_AUTH_CANCELLED, "501 5.0.0 Authentication cancelled\r\n" },
        { R_AUTH_B64, "501 5.5.2 Cannot decode response\r\n" },
        { R_AUTH_FAILED, "535 5.7.8 Authentication credentials invalid\r\n" },
        { R_AUTH_REQUIRED, "530 5.7.0 Authentication required\r\n" },
        { R_AUTH_NEEDS_TLS, "538 5.7.11 Encryption required for requested authentication mechanism\r\n" },
        { R_TLS_REQUIRED, "530 5.7.0 Must issue a STARTTLS command first\r\n" },
        { R_ALREADY_TLS, "503 5.5.1 TLS already active\r\n" },
        { R_ALREADY_AUTH, "503 5.5.1 Already authenticated\r\n" },
        { R_MAIL_REJECT, "550 5.1.0 Sender rejected\r\n" },
        { R_RCPT_REJECT, "550 5.1.1 Recipient rejected\r\n" },
        { R_DATA_REJECT, "554 5.6.0 Message rejected\r\n" },
        { R_HELO_REJECT, "550 5.7.1 Hello rejected\r\n" },
        { R_CONNECT_REJECT, "554 5.7.1 Connection refused\r\n" },
        { R_GENERIC_REJECT, "550 5.7.1 Rejected\r\n" },
        { R_TOO_MANY_RCPTS, "452 4.5.3 Too many recipients\r\n" },
        { R_SIZE_EXCEEDED, "552 5.3.4 Message size exceeds fixed maximum message size\r\n" },
        { R_HEADER_TOO_BIG, "552 5.3.4 Message header section exceeds the limit\r\n" },
        { R_BARE_LF, "554 5.6.0 Message contains bare LF line endings (not CRLF); fix the client\r\n" },
        { R_DATA_LINE_TOO_LONG, "554 5.6.0 Message contains a line longer than the limit\r\n" },
        { R_HOOK_ERROR, "451 4.3.0 Temporary server error, try again later\r\n" },
        { R_NO_DELIVERY, "451 4.3.5 No delivery configured for \r\n" },
        { R_LOCAL_ERROR, "451 4.3.0 Local error in processing\r\n" },
        { R_TOO_MANY_CONNS, "421 4.7.0 mx.test Too many connections, try again later\r\n" },
        { R_TOO_MANY_ERRORS, "421 4.7.0 mx.test Too many errors, closing connection\r\n" },
        { R_TIMEOUT, "421 4.4.2 mx.test Timeout, closing connection\r\n" },
        { R_SHUTDOWN, "421 4.3.2 mx.test Service shutting down, closing connection\r\n" },
        { R_BDAT_SYNTAX, "501 5.5.4 Syntax: BDAT size [LAST]\r\n" },
        { R_BDAT_MIXED, "503 5.5.1 DATA not allowed after BDAT\r\n" },
        { R_BARE_CR, "554 5.6.0 Message contains bare CR (not part of CRLF); fix the client\r\n" },
        { R_TOO_SLOW, "421 4.4.2 mx.test Data received too slowly, closing connection\r\n" },
        { R_TOO_MANY_JUNK, "421 4.7.0 mx.test Too many commands without mail, closing connection\r\n" },
        { R_SPOOL_FULL, "452 4.3.1 Insufficient system storage, try again later\r\n" },
        { R_HOOK_ERROR_CLOSE, "421 4.3.0 mx.test Temporary server error, closing connection\r\n" },
        { R_QUEUED, "250 2.0.0 Message accepted: queued as \r\n" },
        { R_BDAT_CHUNK, "250 2.0.0  octets received\r\n" },
        { R_MAIL_ADDR_SYNTAX, "501 5.1.7 Syntax error\r\n" },
        { R_RCPT_ADDR_SYNTAX, "501 5.1.3 Syntax error\r\n" },
        { R_PATH_SYNTAX, "501 5.5.4 Syntax error\r\n" },
        { R_SIZE_SYNTAX, "501 5.5.4 Syntax: SIZE=<number>\r\n" },
        { R_BODY_SYNTAX, "501 5.5.4 Syntax: BODY=7BIT|8BITMIME\r\n" },
        { R_SMTPUTF8_VALUE, "501 5.5.4 SMTPUTF8 takes no value\r\n" },
        { R_AUTH_PARAM_SYNTAX, "501 5.5.4 Syntax: AUTH=<xtext>\r\n" },
        { R_RET_SYNTAX, "501 5.5.4 Syntax: RET=FULL|HDRS\r\n" },
        { R_ENVID_SYNTAX, "501 5.5.4 Syntax: ENVID=<xtext of at most 100 characters>\r\n" },
        { R_NOTIFY_SYNTAX, "501 5.5.4 Syntax: NOTIFY=NEVER or NOTIFY=SUCCESS,FAILURE,DELAY\r\n" },
        { R_ORCPT_SYNTAX, "501 5.5.4 Syntax: ORCPT=addr-type;xtext\r\n" },
        { R_UTF8_ADDRESS, "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter\r\n" },
        { R_DELIVERY_FAILED, "451 4.3.0 Delivery failed, try again later\r\n" },
        { R_QUEUE_FAILED, "451 4.3.0 Could not queue the message, try again later\r\n" },
        { R_STORE_FAILED, "451 4.3.0 Could not store the message, try again later\r\n" },
    };
    size_t nrows = sizeof(rows) / sizeof(rows[0]);
    CHECK(nrows == R_COUNT);
    for (size_t i = 0; i < nrows; i++) {
        struct buf out;
        buf_init(&out);
        reply_canned(&out, rows[i].id, true, "mx.test");
        CHECK_MEM(buf_peek(&out), buf_used(&out), rows[i].wire);
        buf_free(&out);
    }

    /* Every row is well formed: a 2xx-5xx code, text, an esc of its class. */
    for (int id = 0; id < R_COUNT; id++) {
        const struct reply_def *d = reply_get((enum reply_id)id);
        CHECK(d->code >= 200 && d->code <= 599);
        CHECK(d->text && d->text[0]);
        size_t el = 0;
        if (d->esc) {
            CHECK(reply_has_esc(d->esc, strlen(d->esc), &el) && el == strlen(d->esc));
            CHECK(d->esc[0] - '0' == d->code / 100);
        }
    }
}

static void test_canned_plain(void)
{
    /* Without ENHANCEDSTATUSCODES (HELO client, greeting) no code is added. */
    struct buf out;
    buf_init(&out);
    reply_canned(&out, R_ACCEPT, false, "mx.test");
    reply_canned(&out, R_RCPT_REJECT, false, NULL);
    reply_canned(&out, R_TIMEOUT, false, "h");
    CHECK_MEM(buf_peek(&out), buf_used(&out),
              "250 OK\r\n550 Recipient rejected\r\n421 h Timeout, closing connection\r\n");
    buf_free(&out);

    /* No host: "%h" stays as written rather than vanishing. */
    buf_init(&out);
    reply_canned(&out, R_GREETING, true, NULL);
    CHECK_MEM(buf_peek(&out), buf_used(&out), "220 %h ESMTP kurir\r\n");
    buf_free(&out);
}

/* "%a" rows (reply_canned_arg), the hook-style text Lua gets
 * (reply_row_text, kurir.reply) and the names Lua may use. */
static void test_canned_arg(void)
{
    struct buf out;
    buf_init(&out);
    reply_canned_arg(&out, R_QUEUED, 0, true, "mx.test", "ABC123");
    reply_canned_arg(&out, R_QUEUED, 251, false, "mx.test", "ABC123");
    reply_canned_arg(&out, R_QUEUED, 550, true, NULL, "X");   /* another class: the row's code */
    reply_canned_arg(&out, R_BDAT_CHUNK, 0, true, NULL, "1024");
    CHECK_MEM(buf_peek(&out), buf_used(&out),
              "250 2.0.0 Message accepted: queued as ABC123\r\n"
              "251 Message accepted: queued as ABC123\r\n"
              "250 2.0.0 Message accepted: queued as X\r\n"
              "250 2.0.0 1024 octets received\r\n");
    buf_free(&out);

    /* a hook's text is never expanded with an argument */
    buf_init(&out);
    reply_format(&out, 550, NULL, "100%a sure", 10, false, STAGE_RCPT, "h");
    CHECK_MEM(buf_peek(&out), buf_used(&out), "550 100%a sure\r\n");
    buf_free(&out);

    buf_init(&out);
    reply_row_text(&out, R_NO_DELIVERY, "<a@b.test>");
    CHECK_MEM(buf_peek(&out), buf_used(&out), "4.3.5 No delivery configured for <a@b.test>");
    buf_free(&out);
    buf_init(&out);
    reply_row_text(&out, R_GREETING, NULL);   /* no esc; "%h" left for the formatter */
    CHECK_MEM(buf_peek(&out), buf_used(&out), "%h ESMTP kurir");
    buf_free(&out);

    CHECK(reply_by_name("no_delivery") == R_NO_DELIVERY);
    CHECK(reply_by_name("delivery_failed") == R_DELIVERY_FAILED);
    CHECK(reply_by_name("queue_failed") == R_QUEUE_FAILED);
    CHECK(reply_by_name("store_failed") == R_STORE_FAILED);
    CHECK(reply_by_name("greeting") == R_COUNT);
    int n = 0;
    while (reply_name_at(n))
        CHECK(reply_by_name(reply_name_at(n++)) != R_COUNT);
    CHECK(n == 6);
}

/* The reply cache gives reply_canned_arg's bytes for every row, both with
 * and without enhanced codes, for codes of the row's class and others,
 * arguments the cache copies (short, printable) and ones it must not
 * (control bytes, a line that wraps), before and after a row is kept. */
static void test_cache_same_bytes(void)
{
    char longarg[700];
    memset(longarg, 'x', sizeof(longarg) - 1);
    longarg[sizeof(longarg) - 1] = '\0';
    char edge[520];   /* around the 510-byte line limit for "Message accepted: queued as " */
    const char *args[] = {NULL, "", "ABC123", "<a@b.test>", "two words", "tab\there", "nl\nhere",
                          "del\x7f", "100%h", "%a", "2.0.0", "caf\xc3\xa9", longarg, edge};
    const int codes[] = {0, -1, 250, 251, 354, 421, 451, 550, 554, 999};
    const char *hosts[] = {"mx.test", NULL, "2.0.0"};
    struct reply_cache c;
    memset(&c, 0, sizeof(c));
    int mismatches = 0;
    for (size_t h = 0; h < sizeof(hosts) / sizeof(hosts[0]); h++) {
        for (int round = 0; round < 2; round++) {
            for (int id = 0; id <= R_COUNT; id++) {
                for (int enh = 0; enh < 2; enh++) {
                    for (size_t a = 0; a < sizeof(args) / sizeof(args[0]); a++) {
                        for (size_t k = 0; k < sizeof(codes) / sizeof(codes[0]); k++) {
                            if (args[a] == edge) {   /* a different length each time */
                                size_t n = 470 + (size_t)(id + 3 * (int)k + 7 * enh) % 45;
                                memset(edge, 'y', n);
                                edge[n] = '\0';
                            }
                            struct buf want, got;
                            buf_init(&want);
                            buf_init(&got);
                            buf_append(&got, "pre", 3);   /* appends, never replaces */
                            buf_append(&want, "pre", 3);
                            reply_canned_arg(&want, (enum reply_id)id, codes[k], enh, hosts[h], args[a]);
                            reply_cache_put(&c, &got, (enum reply_id)id, codes[k], enh, hosts[h], args[a]);
                            if (buf_used(&want) != buf_used(&got) ||
                                memcmp(buf_peek(&want), buf_peek(&got), buf_used(&got)) != 0) {
                                if (mismatches++ < 5)
                                    fprintf(stderr, "  cache: row %d enhanced %d code %d arg %zu host %zu:\n  %.*s  vs\n  %.*s",
                                            id, enh, codes[k], a, h, (int)buf_used(&got), buf_peek(&got),
                                            (int)buf_used(&want), buf_peek(&want));
                            }
                            buf_free(&want);
                            buf_free(&got);
                        }
                    }
                }
            }
        }
    }
    CHECK(mismatches == 0);
    /* rows are kept: the queued row's bytes before the argument, once */
    CHECK(c.host == hosts[2]);
    CHECK(c.row[R_QUEUED][1].wire && c.row[R_QUEUED][1].arg_at_end);
    CHECK_MEM(c.row[R_QUEUED][1].wire, c.row[R_QUEUED][1].len, "250 2.0.0 Message accepted: queued as ");
    CHECK(c.row[R_MAIL_OK][1].wire && !c.row[R_MAIL_OK][1].arg_at_end);
    CHECK(!c.row[R_BDAT_CHUNK][1].arg_at_end && c.row[R_BDAT_CHUNK][1].each_time);   /* "%a" first */
    reply_cache_free(&c);
    CHECK(c.host == NULL && c.row[R_MAIL_OK][1].wire == NULL);

    /* no cache: formatted every time */
    struct buf out;
    buf_init(&out);
    reply_cache_put(NULL, &out, R_RCPT_OK, 0, true, "mx.test", NULL);
    CHECK_MEM(buf_peek(&out), buf_used(&out), "250 2.1.5 Recipient OK\r\n");
    buf_free(&out);
}

static void test_default_esc(void)
{
    static const struct {
        int code;
        enum reply_stage stage;
        const char *esc;
    } rows[] = {
        { 250, STAGE_MAIL, "2.1.0" },    { 250, STAGE_RCPT, "2.1.5" },
        { 250, STAGE_DATA, "2.0.0" },    { 235, STAGE_AUTH, "2.7.0" },
        { 250, STAGE_HELO, "2.0.0" },    { 221, STAGE_OTHER, "2.0.0" },
        { 220, STAGE_STARTTLS, "2.0.0" },
        { 421, STAGE_CONNECT, "4.7.0" }, { 421, STAGE_DATA, "4.3.0" },
        { 421, STAGE_COMMAND, "4.3.0" }, { 451, STAGE_DATA, "4.3.0" },
        { 451, STAGE_RCPT, "4.3.0" },    { 452, STAGE_DATA, "4.3.1" },
        { 452, STAGE_RCPT, "4.5.3" },    { 450, STAGE_MAIL, "4.1.0" },
        { 450, STAGE_RCPT, "4.1.1" },    { 450, STAGE_DATA, "4.7.1" },
        { 450, STAGE_CONNECT, "4.7.1" }, { 454, STAGE_STARTTLS, "4.7.0" },
        { 454, STAGE_AUTH, "4.7.0" },    { 432, STAGE_AUTH, "4.0.0" },
        { 499, STAGE_OTHER, "4.0.0" },   { 500, STAGE_COMMAND, "5.5.1" },
        { 501, STAGE_MAIL, "5.5.4" },    { 502, STAGE_EXPN, "5.5.1" },
        { 503, STAGE_DATA, "5.5.1" },    { 504, STAGE_AUTH, "5.5.4" },
        { 530, STAGE_MAIL, "5.7.0" },    { 535, STAGE_AUTH, "5.7.8" },
        { 538, STAGE_AUTH, "5.7.11" },   { 550, STAGE_MAIL, "5.1.0" },
        { 550, STAGE_RCPT, "5.1.1" },    { 550, STAGE_DATA, "5.7.1" },
        { 550, STAGE_HELO, "5.7.1" },    { 550, STAGE_CONNECT, "5.7.1" },
        { 551, STAGE_RCPT, "5.1.6" },    { 552, STAGE_DATA, "5.3.4" },
        { 552, STAGE_MAIL, "5.3.4" },    { 553, STAGE_MAIL, "5.1.7" },
        { 553, STAGE_RCPT, "5.1.3" },    { 554, STAGE_CONNECT, "5.7.1" },
        { 554, STAGE_DATA, "5.6.0" },    { 554, STAGE_RCPT, "5.7.1" },
        { 555, STAGE_MAIL, "5.5.4" },    { 521, STAGE_CONNECT, "5.0.0" },
        { 599, STAGE_OTHER, "5.0.0" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *got = reply_default_esc(rows[i].code, rows[i].stage);
        if (!CHECK(got && strcmp(got, rows[i].esc) == 0))
            fprintf(stderr, "    code %d stage %d: got %s, want %s\n", rows[i].code,
                    (int)rows[i].stage, got ? got : "NULL", rows[i].esc);
    }
    /* 1xx and 3xx have no enhanced code. */
    CHECK(reply_default_esc(354, STAGE_DATA) == NULL);
    CHECK(reply_default_esc(334, STAGE_AUTH) == NULL);
    /* Never NULL for 2xx/4xx/5xx at any stage. */
    for (int code = 200; code <= 599; code++) {
        if (code / 100 == 3)
            continue;
        for (int st = STAGE_CONNECT; st <= STAGE_OTHER; st++)
            CHECK(reply_default_esc(code, (enum reply_stage)st) != NULL);
    }
}

static void test_default_text(void)
{
    static const struct {
        int code;
        enum reply_stage stage;
        const char *text;
    } rows[] = {
        { 250, STAGE_HELO, "OK" },
        { 250, STAGE_MAIL, "Sender OK" },
        { 250, STAGE_RCPT, "Recipient OK" },
        { 250, STAGE_DATA, "Message accepted" },
        { 550, STAGE_RCPT, "Recipient rejected" },
        { 550, STAGE_MAIL, "Sender rejected" },
        { 550, STAGE_OTHER, "Rejected" },
        { 451, STAGE_DATA, "Requested action aborted: local error in processing" },
        { 421, STAGE_CONNECT, "Service not available, closing transmission channel" },
        { 452, STAGE_RCPT, "Too many recipients" },
        { 552, STAGE_DATA, "Message size exceeds fixed maximum message size" },
        { 554, STAGE_DATA, "Message rejected" },
        { 354, STAGE_DATA, "End data with <CR><LF>.<CR><LF>" },
        { 334, STAGE_AUTH, "" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *got = reply_default_text(rows[i].code, rows[i].stage);
        if (!CHECK(got && strcmp(got, rows[i].text) == 0))
            fprintf(stderr, "    code %d stage %d: got \"%s\"\n", rows[i].code,
                    (int)rows[i].stage, got ? got : "NULL");
    }
    for (int code = 200; code <= 599; code++)
        for (int st = STAGE_CONNECT; st <= STAGE_OTHER; st++)
            CHECK(reply_default_text(code, (enum reply_stage)st) != NULL);
}

static void test_has_esc(void)
{
    size_t n = 0;
    CHECK(reply_has_esc("5.1.1 x", 7, &n) && n == 5);
    CHECK(reply_has_esc("5.1.1", 5, &n) && n == 5);
    CHECK(reply_has_esc("2.0.0 OK", 8, &n) && n == 5);
    CHECK(reply_has_esc("4.7.11 x", 8, &n) && n == 6);
    CHECK(reply_has_esc("5.123.456 x", 11, &n) && n == 9);
    /* Length is honoured: the code ends at n even without a space. */
    CHECK(reply_has_esc("5.1.1x", 5, &n) && n == 5);
    CHECK(!reply_has_esc("5.1.1x", 6, &n));
    CHECK(!reply_has_esc("5.1234.1 x", 10, &n));
    CHECK(!reply_has_esc("5.1.1234 x", 10, &n));
    CHECK(!reply_has_esc("3.1.1 x", 7, &n));
    CHECK(!reply_has_esc("1.1.1", 5, &n));
    CHECK(!reply_has_esc("5.1", 3, &n));
    CHECK(!reply_has_esc("5.1.", 4, &n));
    CHECK(!reply_has_esc("5..1 x", 6, &n));
    CHECK(!reply_has_esc(".1.1 x", 6, &n));
    CHECK(!reply_has_esc("55.1.1", 6, &n));
    CHECK(!reply_has_esc("", 0, &n));
    CHECK(!reply_has_esc("OK", 2, &n));
}

static void test_format_basic(void)
{
    CHECK_FMT("250 2.1.5 Recipient OK\r\n", 250, NULL, "Recipient OK", true, STAGE_RCPT, NULL);
    CHECK_FMT("250 Recipient OK\r\n", 250, NULL, "Recipient OK", false, STAGE_RCPT, NULL);
    /* Explicit esc wins over the stage default. */
    CHECK_FMT("550 5.7.1 Spam\r\n", 550, "5.7.1", "Spam", true, STAGE_RCPT, NULL);
    /* An esc of the wrong class is not used; the stage default is. */
    CHECK_FMT("550 5.1.1 No\r\n", 550, "2.0.0", "No", true, STAGE_RCPT, NULL);
    /* With enhanced = false the caller's esc is not shown. */
    CHECK_FMT("250 OK\r\n", 250, "2.1.0", "OK", false, STAGE_MAIL, NULL);
    /* The text's own code is kept, never doubled. */
    CHECK_FMT("550 5.7.1 Go away\r\n", 550, NULL, "5.7.1 Go away", true, STAGE_RCPT, NULL);
    CHECK_FMT("550 5.7.1 Go away\r\n", 550, "5.1.1", "5.7.1 Go away", true, STAGE_RCPT, NULL);
    /* enhanced = false: the script chose a code; keep the text as given. */
    CHECK_FMT("550 5.7.1 Go away\r\n", 550, NULL, "5.7.1 Go away", false, STAGE_RCPT, NULL);
    CHECK_FMT("550 5.7.1\r\n", 550, NULL, "5.7.1", true, STAGE_RCPT, NULL);
    /* A code of another class in the text is just text. */
    CHECK_FMT("550 5.1.1 4.7.1 later\r\n", 550, NULL, "4.7.1 later", true, STAGE_RCPT, NULL);
    CHECK_FMT("550 5.1.1 5.1.1x\r\n", 550, NULL, "5.1.1x", true, STAGE_RCPT, NULL);
    /* 3xx has no enhanced code even when asked. */
    CHECK_FMT("354 Go ahead\r\n", 354, NULL, "Go ahead", true, STAGE_DATA, NULL);
    CHECK_FMT("354 Go ahead\r\n", 354, "2.0.0", "Go ahead", true, STAGE_DATA, NULL);
    /* An empty AUTH challenge is "334 " (RFC 4954). */
    CHECK_FMT("334 \r\n", 334, NULL, "", true, STAGE_AUTH, NULL);
    CHECK_FMT("334 VXNlcm5hbWU6\r\n", 334, NULL, "VXNlcm5hbWU6", true, STAGE_AUTH, NULL);
    /* Several replies append to the same buffer. */
    struct buf out;
    buf_init(&out);
    reply_format(&out, 250, NULL, "a", 1, false, STAGE_OTHER, NULL);
    reply_format(&out, 251, NULL, "b", 1, false, STAGE_OTHER, NULL);
    CHECK_MEM(buf_peek(&out), buf_used(&out), "250 a\r\n251 b\r\n");
    buf_free(&out);
}

static void test_format_default_text(void)
{
    CHECK_FMT("550 5.1.1 Recipient rejected\r\n", 550, NULL, "", true, STAGE_RCPT, NULL);
    CHECK_FMT("550 5.1.1 Recipient rejected\r\n", 550, NULL, NULL, true, STAGE_RCPT, NULL);
    CHECK_FMT("550 Sender rejected\r\n", 550, NULL, "", false, STAGE_MAIL, NULL);
    CHECK_FMT("451 4.3.0 Requested action aborted: local error in processing\r\n", 451, NULL, "",
              true, STAGE_DATA, NULL);
    CHECK_FMT("421 4.7.0 Service not available, closing transmission channel\r\n", 421, NULL, "",
              true, STAGE_CONNECT, NULL);
    CHECK_FMT("250 2.0.0 Message accepted\r\n", 250, NULL, "", true, STAGE_DATA, NULL);
    /* A lone newline is an empty text, too. */
    CHECK_FMT("250 2.1.0 Sender OK\r\n", 250, NULL, "\n", true, STAGE_MAIL, NULL);
    CHECK_FMT("250 2.1.0 Sender OK\r\n", 250, NULL, "\r\n", true, STAGE_MAIL, NULL);
}

static void test_format_multiline(void)
{
    CHECK_FMT("250-2.0.0 a\r\n250-2.0.0 b\r\n250 2.0.0 c\r\n", 250, NULL, "a\nb\nc", true,
              STAGE_HELO, NULL);
    CHECK_FMT("250-a\r\n250-b\r\n250 c\r\n", 250, NULL, "a\nb\nc", false, STAGE_HELO, NULL);
    /* CRLF in the text is one line break; a trailing newline is no line. */
    CHECK_FMT("250-a\r\n250 b\r\n", 250, NULL, "a\r\nb\r\n", false, STAGE_HELO, NULL);
    CHECK_FMT("250-a\r\n250 b\r\n", 250, NULL, "a\nb\n", false, STAGE_HELO, NULL);
    /* Only one trailing newline is dropped; an empty line in the middle stays. */
    CHECK_FMT("250-a\r\n250 \r\n", 250, NULL, "a\n\n", false, STAGE_HELO, NULL);
    CHECK_FMT("250-2.0.0 a\r\n250-2.0.0\r\n250 2.0.0 b\r\n", 250, NULL, "a\n\nb", true,
              STAGE_HELO, NULL);
    /* Lines that carry a code keep it; the first line's code is carried to
     * the lines without one, so the reply has a single code. */
    CHECK_FMT("550-5.7.1 first\r\n550 5.7.1 second\r\n", 550, NULL, "5.7.1 first\nsecond", true,
              STAGE_RCPT, NULL);
    CHECK_FMT("550-5.1.1 first\r\n550 5.7.1 second\r\n", 550, NULL, "first\n5.7.1 second", true,
              STAGE_RCPT, NULL);
    CHECK_FMT("550-5.7.1 first\r\n550 second\r\n", 550, NULL, "5.7.1 first\nsecond", false,
              STAGE_RCPT, NULL);
    /* A lone CR is not a line break: it is a control byte. */
    CHECK_FMT("250 a?b\r\n", 250, NULL, "a\rb", false, STAGE_HELO, NULL);
}

static void test_format_control_bytes(void)
{
    CHECK_FMT("250 a?b?c\td?e\r\n", 250, NULL, "a\x01" "b\x7f" "c\td\x1b" "e", false, STAGE_OTHER,
              NULL);
    /* An embedded NUL cannot shorten the line. */
    struct buf out;
    buf_init(&out);
    reply_format(&out, 550, NULL, "x\0y", 3, true, STAGE_RCPT, NULL);
    CHECK_MEM(buf_peek(&out), buf_used(&out), "550 5.1.1 x?y\r\n");
    buf_free(&out);
    /* 8-bit bytes are not control characters. */
    CHECK_FMT("250 caf\xc3\xa9\r\n", 250, NULL, "caf\xc3\xa9", false, STAGE_OTHER, NULL);
}

static void test_format_host(void)
{
    CHECK_FMT("220 mx.test ESMTP\r\n", 220, NULL, "%h ESMTP", false, STAGE_CONNECT, "mx.test");
    CHECK_FMT("250 2.0.0 mx.test greets mx.test\r\n", 250, NULL, "%h greets %h", true, STAGE_HELO,
              "mx.test");
    CHECK_FMT("250 %h here\r\n", 250, NULL, "%h here", false, STAGE_HELO, NULL);
    CHECK_FMT("250 100% mx\r\n", 250, NULL, "100% %h", false, STAGE_HELO, "mx");
    CHECK_FMT("250 end%\r\n", 250, NULL, "end%", false, STAGE_HELO, "mx");
    /* A host with a control byte cannot inject a line. */
    CHECK_FMT("250 a?b\r\n", 250, NULL, "%h", false, STAGE_HELO, "a\rb");
}

/* Build a string from runs: rep(c, n) appended. */
static void put(struct buf *b, char c, size_t n)
{
    memset(buf_reserve(b, n), c, n);
    buf_commit(b, n);
}

static void check_fmt_buf(const struct buf *exp, int code, const char *text, size_t tlen,
                          bool enhanced, int line)
{
    struct buf out;
    buf_init(&out);
    reply_format(&out, code, NULL, text, tlen, enhanced, STAGE_OTHER, NULL);
    if (!CHECK_BYTES(buf_peek(&out), buf_used(&out), buf_peek(exp), buf_used(exp)))
        fprintf(stderr, "    (wrap case at line %d)\n", line);
    buf_free(&out);
}

static void test_format_wrap(void)
{
    struct buf text, exp;

    /* 600 bytes without a space: cut at 506 (plain) so "250-" + 506 + CRLF
     * is exactly 512 bytes. */
    buf_init(&text);
    put(&text, 'x', 600);
    buf_init(&exp);
    buf_appends(&exp, "250-");
    put(&exp, 'x', 506);
    buf_appends(&exp, "\r\n250 ");
    put(&exp, 'x', 94);
    buf_appends(&exp, "\r\n");
    check_fmt_buf(&exp, 250, buf_peek(&text), buf_used(&text), false, __LINE__);
    buf_free(&exp);

    /* Enhanced: "250-2.0.0 " leaves 500 bytes; every piece gets the code. */
    buf_init(&exp);
    buf_appends(&exp, "250-2.0.0 ");
    put(&exp, 'x', 500);
    buf_appends(&exp, "\r\n250 2.0.0 ");
    put(&exp, 'x', 100);
    buf_appends(&exp, "\r\n");
    check_fmt_buf(&exp, 250, buf_peek(&text), buf_used(&text), true, __LINE__);
    buf_free(&exp);
    buf_free(&text);

    /* Words: wrap at the last space that fits; the space is dropped. */
    buf_init(&text);
    put(&text, 'a', 300);
    put(&text, ' ', 1);
    put(&text, 'b', 300);
    buf_init(&exp);
    buf_appends(&exp, "550-5.7.1 ");
    put(&exp, 'a', 300);
    buf_appends(&exp, "\r\n550 5.7.1 ");
    put(&exp, 'b', 300);
    buf_appends(&exp, "\r\n");
    check_fmt_buf(&exp, 550, buf_peek(&text), buf_used(&text), true, __LINE__);
    buf_free(&exp);
    buf_free(&text);

    /* A space right at the limit: the first line is exactly 510 + CRLF. */
    buf_init(&text);
    put(&text, 'a', 506);
    put(&text, ' ', 1);
    put(&text, 'b', 10);
    buf_init(&exp);
    buf_appends(&exp, "250-");
    put(&exp, 'a', 506);
    buf_appends(&exp, "\r\n250 ");
    put(&exp, 'b', 10);
    buf_appends(&exp, "\r\n");
    check_fmt_buf(&exp, 250, buf_peek(&text), buf_used(&text), false, __LINE__);
    buf_free(&exp);
    buf_free(&text);

    /* The space one byte past the limit does not fit: hard cut. */
    buf_init(&text);
    put(&text, 'a', 507);
    put(&text, ' ', 1);
    put(&text, 'b', 1);
    buf_init(&exp);
    buf_appends(&exp, "250-");
    put(&exp, 'a', 506);
    buf_appends(&exp, "\r\n250 a b\r\n");
    check_fmt_buf(&exp, 250, buf_peek(&text), buf_used(&text), false, __LINE__);
    buf_free(&exp);
    buf_free(&text);

    /* A hard cut does not split a UTF-8 sequence: 505 'a' + U+00E9. */
    buf_init(&text);
    put(&text, 'a', 505);
    buf_appends(&text, "\xc3\xa9zz");
    buf_init(&exp);
    buf_appends(&exp, "250-");
    put(&exp, 'a', 505);
    buf_appends(&exp, "\r\n250 \xc3\xa9zz\r\n");
    check_fmt_buf(&exp, 250, buf_peek(&text), buf_used(&text), false, __LINE__);
    buf_free(&exp);
    buf_free(&text);

    /* The text's own (longer) code is repeated on each piece and counted. */
    buf_init(&text);
    buf_appends(&text, "5.7.11 ");
    put(&text, 'z', 520);
    buf_init(&exp);
    buf_appends(&exp, "538-5.7.11 ");
    put(&exp, 'z', 499);
    buf_appends(&exp, "\r\n538 5.7.11 ");
    put(&exp, 'z', 21);
    buf_appends(&exp, "\r\n");
    check_fmt_buf(&exp, 538, buf_peek(&text), buf_used(&text), false, __LINE__);
    buf_free(&exp);
    buf_free(&text);
}

/* Property: for many text shapes, no line exceeds 512 bytes with CRLF,
 * every line starts "ddd-" or "ddd " with only the last one "ddd ", and no
 * byte of the text is lost except spaces at wrap points. */
static void test_format_wrap_property(void)
{
    unsigned seed = 12345;
    for (int round = 0; round < 200; round++) {
        struct buf text;
        buf_init(&text);
        seed = seed * 1103515245u + 12345u;
        size_t len = 1 + (seed >> 8) % 3000;
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = (seed >> 16) % 100;
            char c = r < 8 ? ' ' : r < 9 ? '\n' : (char)('a' + r % 26);
            buf_append(&text, &c, 1);
        }
        bool enhanced = round % 2;
        struct buf out;
        buf_init(&out);
        reply_format(&out, 250, NULL, buf_peek(&text), buf_used(&text), enhanced, STAGE_OTHER,
                     NULL);
        const char *p = buf_peek(&out);
        size_t left = buf_used(&out), nonspace_out = 0, nonspace_in = 0;
        bool saw_last = false, ok = true;
        while (left > 0 && ok) {
            const char *crlf = memmem(p, left, "\r\n", 2);
            ok = crlf != NULL && !saw_last;
            if (!ok)
                break;
            size_t ll = (size_t)(crlf - p);
            ok = ll + 2 <= 512 && ll >= 4 && memcmp(p, "250", 3) == 0 &&
                 (p[3] == '-' || p[3] == ' ');
            saw_last = p[3] == ' ';
            size_t skip = 4 + (enhanced && ll > 4 ? (ll > 9 ? 6 : 5) : 0);
            for (size_t i = skip; i < ll; i++)
                nonspace_out += p[i] != ' ';
            p = crlf + 2;
            left -= ll + 2;
        }
        for (size_t i = 0; i < buf_used(&text); i++)
            nonspace_in += buf_peek(&text)[i] != ' ' && buf_peek(&text)[i] != '\n';
        if (!CHECK(ok && saw_last && nonspace_in == nonspace_out))
            fprintf(stderr, "    round %d len %zu: in %zu out %zu\n", round, len, nonspace_in,
                    nonspace_out);
        buf_free(&out);
        buf_free(&text);
    }
}

int main(void)
{
    test_canned_rows();
    test_canned_plain();
    test_canned_arg();
    test_cache_same_bytes();
    test_default_esc();
    test_default_text();
    test_has_esc();
    test_format_basic();
    test_format_default_text();
    test_format_multiline();
    test_format_control_bytes();
    test_format_host();
    test_format_wrap();
    test_format_wrap_property();
    return testutil_summary();
}
