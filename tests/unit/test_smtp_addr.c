/* test_smtp_addr.c - tests for core/smtp_addr.c: command split, MAIL/RCPT
 * path table, ESMTP parameters, xtext, numbers, HELO arguments. */
#include "proto/smtp_addr.h"
#include "testutil.h"

#include <limits.h>
#include <string.h>

#define M SMTP_PATH_MAIL
#define R SMTP_PATH_RCPT
#define OK SMTP_ADDR_OK
#define SYN SMTP_ADDR_SYNTAX
#define BAD SMTP_ADDR_BAD_ADDRESS
#define PRM SMTP_ADDR_BAD_PARAM
#define MANY SMTP_ADDR_TOO_MANY_PARAMS

static void test_cmd_split(void)
{
    static const struct {
        const char *line, *verb, *arg;
    } t[] = {
        { "MAIL FROM:<a@b> SIZE=10", "MAIL", "FROM:<a@b> SIZE=10" },
        { "NOOP", "NOOP", "" },
        { "NOOP ", "NOOP", "" },
        { "EHLO   host.test   ", "EHLO", "host.test" },
        { "", "", "" },
        { " x", "", "x" },
        { "VRFY a  b", "VRFY", "a  b" },
        { "DATA\t", "DATA\t", "" },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct smtp_span v, a;
        smtp_cmd_split(t[i].line, strlen(t[i].line), &v, &a);
        CHECK_MEM(v.ptr, v.len, t[i].verb);
        CHECK_MEM(a.ptr, a.len, t[i].arg);
        CHECK(a.ptr >= t[i].line && a.ptr + a.len <= t[i].line + strlen(t[i].line));
    }
}

struct path_case {
    enum smtp_path_kind kind;
    const char *arg;
    enum smtp_addr_error err;
    const char *address;    /* expected on OK */
    const char *local;
    const char *domain;
    int flags;              /* 1 null_path, 2 postmaster, 4 utf8 */
    int nparams;
};

static const struct path_case paths[] = {
    /* valid */
    { M, "FROM:<user@example.test>", OK, "user@example.test", "user", "example.test", 0, 0 },
    { M, "from:<user@example.test>", OK, "user@example.test", "user", "example.test", 0, 0 },
    { M, "FROM: <user@example.test>", OK, "user@example.test", "user", "example.test", 0, 0 },
    { M, "FROM:<>", OK, "", "", "", 1, 0 },
    { M, "FROM:<> SIZE=100", OK, "", "", "", 1, 1 },
    { R, "TO:<a@b.c>", OK, "a@b.c", "a", "b.c", 0, 0 },
    { R, "To:<rcpt@example.test> NOTIFY=NEVER", OK, "rcpt@example.test", "rcpt", "example.test", 0, 1 },
    { R, "TO:<postmaster>", OK, "postmaster", "postmaster", "", 2, 0 },
    { R, "TO:<PostMaster>", OK, "PostMaster", "PostMaster", "", 2, 0 },
    { R, "TO:<postmaster@example.test>", OK, "postmaster@example.test", "postmaster", "example.test", 0, 0 },
    { M, "FROM:<\"a b\"@example.test>", OK, "\"a b\"@example.test", "\"a b\"", "example.test", 0, 0 },
    { M, "FROM:<\"a\\\"b\"@x.test>", OK, "\"a\\\"b\"@x.test", "\"a\\\"b\"", "x.test", 0, 0 },
    { M, "FROM:<\"a@b>c\"@x.test> SIZE=1", OK, "\"a@b>c\"@x.test", "\"a@b>c\"", "x.test", 0, 1 },
    { M, "FROM:<\"\"@x.test>", OK, "\"\"@x.test", "\"\"", "x.test", 0, 0 },
    { M, "FROM:<user@[192.0.2.1]>", OK, "user@[192.0.2.1]", "user", "[192.0.2.1]", 0, 0 },
    { M, "FROM:<user@[IPv6:2001:db8::1]>", OK, "user@[IPv6:2001:db8::1]", "user", "[IPv6:2001:db8::1]", 0, 0 },
    { M, "FROM:<user@[ipv6:::1]>", OK, "user@[ipv6:::1]", "user", "[ipv6:::1]", 0, 0 },
    { M, "FROM:<user@[IPv6:::ffff:192.0.2.1]>", OK, "user@[IPv6:::ffff:192.0.2.1]", "user",
      "[IPv6:::ffff:192.0.2.1]", 0, 0 },
    { M, "FROM:<user@[x-tag:some.thing]>", OK, "user@[x-tag:some.thing]", "user", "[x-tag:some.thing]", 0, 0 },
    { M, "FROM:<@a.test,@b.test:user@c.test>", OK, "user@c.test", "user", "c.test", 0, 0 },
    { R, "TO:<@relay.test:user@c.test>", OK, "user@c.test", "user", "c.test", 0, 0 },
    { M, "FROM:<j\xc3\xb6rg@b\xc3\xbc\x63her.test> SMTPUTF8", OK, "j\xc3\xb6rg@b\xc3\xbc\x63her.test",
      "j\xc3\xb6rg", "b\xc3\xbc\x63her.test", 4, 1 },
    { M, "FROM:<\"\xe2\x82\xac\"@x.test>", OK, "\"\xe2\x82\xac\"@x.test", "\"\xe2\x82\xac\"", "x.test", 4, 0 },
    { M, "FROM:<a.b+tag!#$%&'*/=?^_`{|}~-@sub_1.ex-ample.test>", OK,
      "a.b+tag!#$%&'*/=?^_`{|}~-@sub_1.ex-ample.test", "a.b+tag!#$%&'*/=?^_`{|}~-",
      "sub_1.ex-ample.test", 0, 0 },
    { M, "FROM:<a@b>   SIZE=1   BODY=8BITMIME  ", OK, "a@b", "a", "b", 0, 2 },
    { M, "FROM:<a@b> X-FOO", OK, "a@b", "a", "b", 0, 1 },
    { M, "FROM:<a@b> SIZE=1 SIZE=2", OK, "a@b", "a", "b", 0, 2 },
    { M, "FROM:<a@b> AUTH=<>", OK, "a@b", "a", "b", 0, 1 },
    { M, "FROM:<a@b> ENVID=\xc3\xa9", OK, "a@b", "a", "b", 0, 1 },
    { M, "FROM:<a@b> K1=1 K2=2 K3=3 K4=4 K5=5 K6=6 K7=7 K8=8 K9=9 K10=10 K11=11 K12=12 K13=13 "
         "K14=14 K15=15 K16=16", OK, "a@b", "a", "b", 0, 16 },
    { M, "FROM:<a@123.45.67.89>", OK, "a@123.45.67.89", "a", "123.45.67.89", 0, 0 },

    /* syntax: keyword and brackets */
    { M, "FROM:user@example.test", SYN, 0, 0, 0, 0, 0 },
    { M, "FROM:<user@example.test", SYN, 0, 0, 0, 0, 0 },
    { M, "FROM:  <user@example.test>", SYN, 0, 0, 0, 0, 0 },
    { M, "FROM <user@example.test>", SYN, 0, 0, 0, 0, 0 },
    { M, "TO:<user@example.test>", SYN, 0, 0, 0, 0, 0 },
    { R, "FROM:<user@example.test>", SYN, 0, 0, 0, 0, 0 },
    { M, "", SYN, 0, 0, 0, 0, 0 },
    { M, "FROM:", SYN, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b>SIZE=1", SYN, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b>>", SYN, 0, 0, 0, 0, 0 },
    { M, "FROM:<\"a@b>", SYN, 0, 0, 0, 0, 0 },
    { M, "FROM:\t<a@b>", SYN, 0, 0, 0, 0, 0 },

    /* bad addresses */
    { R, "TO:<>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<postmaster>", BAD, 0, 0, 0, 0, 0 },
    { R, "TO:<user>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<user@>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a b@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<.a@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a.@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a..b@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@example..test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@.example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@example.test.>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@exa mple.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a(b)@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<\"a\"b@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<\"a\x01\"@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a\x7f@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@[192.0.2.256]>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@[192.0.2]>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@[1.2.3.4.5]>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@[IPv6:2001:db8::g]>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@[IPv6:1.2.3.4]>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@[]>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@[x-:y]>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@[192.0.2.1>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<\xff@example.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@\xc3\x28.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@\xed\xa0\x80.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@\xc0\xaf.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<@a.test:>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<@a.test,:u@b.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<@:u@b.test>", BAD, 0, 0, 0, 0, 0 },
    { M, "FROM:<@a.test u@b.test>", BAD, 0, 0, 0, 0, 0 },

    /* parameters */
    { M, "FROM:<a@b> SIZE=", PRM, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b> =1", PRM, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b> -X=1", PRM, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b> X_Y=1", PRM, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b> X=a=b", PRM, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b> X=a\x01", PRM, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b> X=\xff", PRM, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b> X=a\tY=b", PRM, 0, 0, 0, 0, 0 },
    { M, "FROM:<a@b> K1=1 K2=2 K3=3 K4=4 K5=5 K6=6 K7=7 K8=8 K9=9 K10=10 K11=11 K12=12 K13=13 "
         "K14=14 K15=15 K16=16 K17=17", MANY, 0, 0, 0, 0, 0 },
};

static void test_paths(void)
{
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        const struct path_case *c = &paths[i];
        struct smtp_path out;
        const char *why = NULL;
        size_t len = strlen(c->arg);
        enum smtp_addr_error err = smtp_path_parse(c->kind, c->arg, len, &out, &why);
        if (!CHECK(err == c->err)) {
            fprintf(stderr, "  row %zu \"%s\": got %d expected %d (%s)\n", i, c->arg, err, c->err,
                    why ? why : "");
            continue;
        }
        CHECK(why != NULL && why[0] != '\0');
        if (err != OK)
            continue;
        CHECK_MEM(out.address.ptr, out.address.len, c->address);
        CHECK_MEM(out.local.ptr, out.local.len, c->local);
        CHECK_MEM(out.domain.ptr, out.domain.len, c->domain);
        CHECK(out.null_path == !!(c->flags & 1));
        CHECK(out.postmaster == !!(c->flags & 2));
        CHECK(out.utf8 == !!(c->flags & 4));
        if (!CHECK(out.nparams == c->nparams))
            fprintf(stderr, "  row %zu: %d params\n", i, out.nparams);
        CHECK(out.address.ptr >= c->arg && out.address.ptr + out.address.len <= c->arg + len);
    }
    CHECK(sizeof(paths) / sizeof(paths[0]) >= 40);
}

static void test_params(void)
{
    struct smtp_path out;
    const char *why;
    const char *arg = "FROM:<a@b.test> SIZE=12345 BODY=8BITMIME  SMTPUTF8 AUTH=<> ret=HDRS";
    CHECK(smtp_path_parse(M, arg, strlen(arg), &out, &why) == OK);
    CHECK(out.nparams == 5);
    const struct smtp_param *p = smtp_path_param(&out, "size");
    CHECK(p != NULL);
    if (p) {
        CHECK_MEM(p->key.ptr, p->key.len, "SIZE");
        CHECK_MEM(p->value.ptr, p->value.len, "12345");
    }
    p = smtp_path_param(&out, "SMTPUTF8");
    CHECK(p != NULL && p->value.ptr == NULL && p->value.len == 0);
    p = smtp_path_param(&out, "AUTH");
    CHECK(p != NULL && p->value.len == 2 && memcmp(p->value.ptr, "<>", 2) == 0);
    p = smtp_path_param(&out, "RET");
    CHECK(p != NULL && p->value.len == 4 && memcmp(p->value.ptr, "HDRS", 4) == 0);
    CHECK(smtp_path_param(&out, "SIZ") == NULL);
    CHECK(smtp_path_param(&out, "SIZE=") == NULL);
    CHECK(smtp_path_param(&out, "ENVID") == NULL);

    /* duplicates are parsed; the first is found */
    arg = "TO:<x@y> NOTIFY=NEVER NOTIFY=SUCCESS";
    CHECK(smtp_path_parse(R, arg, strlen(arg), &out, &why) == OK);
    CHECK(out.nparams == 2);
    p = smtp_path_param(&out, "notify");
    CHECK(p == &out.params[0]);

    /* the argument is not NUL-terminated: only len bytes count */
    const char buf[] = "FROM:<a@b.test> SIZE=1XXXX";
    CHECK(smtp_path_parse(M, buf, strlen(buf) - 4, &out, &why) == OK);
    p = smtp_path_param(&out, "SIZE");
    CHECK(p != NULL && p->value.len == 1);

    /* a NUL inside the address is a bad address, not an early end */
    const char nul[] = "FROM:<a\0b@example.test>";
    CHECK(smtp_path_parse(M, nul, sizeof(nul) - 1, &out, &why) == BAD);

    /* why is optional */
    CHECK(smtp_path_parse(M, "FROM:x", 6, &out, NULL) == SYN);
}

static void test_xtext(void)
{
    static const struct {
        const char *in;
        long ret;
        const char *out;
    } t[] = {
        { "", 0, "" },
        { "abc", 3, "abc" },
        { "a+2Bb", 3, "a+b" },
        { "+3D", 1, "=" },
        { "x+20y", 3, "x y" },
        { "+41", 1, "A" },
        { "~!", 2, "~!" },
        { "a+2b", -1, NULL },      /* lowercase hex */
        { "a+2", -1, NULL },
        { "a+", -1, NULL },
        { "a+G0", -1, NULL },
        { "a=b", -1, NULL },
        { "a b", -1, NULL },
        { "a\x7f", -1, NULL },
        { "\xc3\xa9", -1, NULL },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char out[16];
        long r = smtp_xtext_decode(t[i].in, strlen(t[i].in), out, sizeof(out));
        if (!CHECK(r == t[i].ret))
            fprintf(stderr, "  xtext \"%s\" -> %ld\n", t[i].in, r);
        if (r >= 0 && t[i].out)
            CHECK_MEM(out, (size_t)r, t[i].out);
    }
    char out[4];
    CHECK(smtp_xtext_decode("+00", 3, out, sizeof(out)) == 1 && out[0] == '\0');
    CHECK(smtp_xtext_decode("abcd", 4, out, 4) == 4);
    CHECK(smtp_xtext_decode("abcde", 5, out, 4) == -1);   /* no overflow of out */
    CHECK(smtp_xtext_decode("", 0, NULL, 0) == 0);
}

static void test_u64(void)
{
    unsigned long long v = 7;
    CHECK(smtp_parse_u64("0", 1, ULLONG_MAX, &v) && v == 0);
    CHECK(smtp_parse_u64("12345", 5, ULLONG_MAX, &v) && v == 12345);
    CHECK(smtp_parse_u64("007", 3, ULLONG_MAX, &v) && v == 7);
    CHECK(smtp_parse_u64("18446744073709551615", 20, ULLONG_MAX, &v) && v == ULLONG_MAX);
    v = 1;
    CHECK(!smtp_parse_u64("18446744073709551616", 20, ULLONG_MAX, &v) && v == 1);
    CHECK(!smtp_parse_u64("99999999999999999999", 20, ULLONG_MAX, &v));
    CHECK(!smtp_parse_u64("000000000000000000001", 21, ULLONG_MAX, &v));
    CHECK(!smtp_parse_u64("", 0, ULLONG_MAX, &v));
    CHECK(!smtp_parse_u64("-1", 2, ULLONG_MAX, &v));
    CHECK(!smtp_parse_u64("+1", 2, ULLONG_MAX, &v));
    CHECK(!smtp_parse_u64(" 1", 2, ULLONG_MAX, &v));
    CHECK(!smtp_parse_u64("1 ", 2, ULLONG_MAX, &v));
    CHECK(!smtp_parse_u64("0x10", 4, ULLONG_MAX, &v));
    CHECK(!smtp_parse_u64("1e3", 3, ULLONG_MAX, &v));
    CHECK(smtp_parse_u64("1000", 4, 1000, &v) && v == 1000);
    CHECK(!smtp_parse_u64("1001", 4, 1000, &v));
    CHECK(smtp_parse_u64("123XYZ", 3, ULLONG_MAX, &v) && v == 123);   /* only len bytes */
}

static void test_helo(void)
{
    static const struct {
        const char *s;
        bool ok;
    } t[] = {
        { "example.test", true },
        { "localhost", true },
        { "mail-1.example.test", true },
        { "my_host.local", true },
        { "example.test.", true },
        { "192.0.2.1", true },
        { "[192.0.2.1]", true },
        { "[IPv6:::1]", true },
        { "[IPv6:2001:db8::25]", true },
        { "b\xc3\xbc\x63her.test", true },
        { "", false },
        { ".", false },
        { ".example.test", false },
        { "a..b", false },
        { "a b", false },
        { "a\tb", false },
        { "host\r", false },
        { "<host>", false },
        { "user@host", false },
        { "host>", false },
        { "[192.0.2.1", false },
        { "[300.0.0.1]", false },
        { "[IPv6:zz::1]", false },
        { "[]", false },
        { "\xff\xfe", false },
        { "a\x01", false },
        { "exa!mple", false },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (!CHECK(smtp_valid_helo(t[i].s, strlen(t[i].s)) == t[i].ok))
            fprintf(stderr, "  helo \"%s\"\n", t[i].s);
    }
    CHECK(!smtp_valid_helo("ab\0cd", 5));
    CHECK(smtp_valid_helo("ab.cdXX", 5));
}

/* Regression (found by tests/fuzz/fuzz_addr.c): inet_pton stops at a NUL,
 * so an IPv6 literal must be checked byte by byte before it is handed over. */
static void test_literal_with_nul(void)
{
    static const char mail[] = "FROM:<a@[IPv6:::1\0\nX-Injected: yes]>";
    static const char rcpt[] = "TO:<a@[IPv6:::1\0/../../etc]>";
    struct smtp_path p;
    const char *why;
    CHECK(smtp_path_parse(SMTP_PATH_MAIL, mail, sizeof(mail) - 1, &p, &why) == SMTP_ADDR_BAD_ADDRESS);
    CHECK(smtp_path_parse(SMTP_PATH_RCPT, rcpt, sizeof(rcpt) - 1, &p, &why) == SMTP_ADDR_BAD_ADDRESS);
}

int main(void)
{
    test_literal_with_nul();
    test_cmd_split();
    test_paths();
    test_params();
    test_xtext();
    test_u64();
    test_helo();
    return testutil_summary();
}
