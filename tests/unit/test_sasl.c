/* test_sasl.c - unit tests of core/sasl.c: strict base64, PLAIN, LOGIN,
 * CRAM-MD5 (with RFC 2195's own example), cancellation, malformed input,
 * verification. HMAC-MD5 is recomputed here with EVP_Q_mac, independently
 * of the code under test. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "proto/sasl.h"
#include "proto/util.h"

#include "testutil.h"

/* got must be a non-NULL C string equal to want */
static int check_str(const char *got, const char *want, const char *what, const char *file, int line)
{
    int ok = got && strcmp(got, want) == 0;
    if (!testutil_check(ok, what, file, line)) {
        if (got)
            testutil_dump("got", got, strlen(got));
        else
            fputs("    got NULL\n", stderr);
        testutil_dump("expected", want, strlen(want));
    }
    return ok;
}
#define CHECK_STR(got, want) check_str((got), (want), #got " == " #want, __FILE__, __LINE__)

/* base64 of a byte string into a NUL-terminated heap string */
static char *b64(const void *p, size_t n)
{
    struct buf b;
    buf_init(&b);
    sasl_b64_encode(&b, p, n);
    char *s = xmemdup(buf_peek(&b), buf_used(&b));
    buf_free(&b);
    return s;
}

static bool buf_is(const struct buf *b, const char *s)
{
    return buf_used(b) == strlen(s) && memcmp(buf_peek(b), s, buf_used(b)) == 0;
}

/* ---- base64 ---- */

static void test_b64_vectors(void)
{
    /* RFC 4648 section 10 */
    static const char *const vec[][2] = {
        { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
        { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
    };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        char *e = b64(vec[i][0], strlen(vec[i][0]));
        CHECK_STR(e, vec[i][1]);
        free(e);
        unsigned char out[16];
        long n = sasl_b64_decode(vec[i][1], strlen(vec[i][1]), out);
        CHECK(n == (long)strlen(vec[i][0]));
        CHECK(n >= 0 && memcmp(out, vec[i][0], (size_t)n) == 0);
    }
}

static void test_b64_roundtrip(void)
{
    unsigned char in[256], out[256];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(i * 37 + 11);
    for (size_t len = 0; len <= 64; len++) {
        char *e = b64(in, len);
        CHECK(strlen(e) == (len + 2) / 3 * 4);
        long n = sasl_b64_decode(e, strlen(e), out);
        CHECK(n == (long)len);
        CHECK(n >= 0 && memcmp(in, out, len) == 0);
        free(e);
    }
    /* every byte value survives */
    char *e = b64(in, 0);
    free(e);
    for (size_t i = 0; i < 256; i++)
        in[i] = (unsigned char)i;
    e = b64(in, 256);
    CHECK(sasl_b64_decode(e, strlen(e), out) == 256);
    CHECK(memcmp(in, out, 256) == 0);
    free(e);
}

static void test_b64_strict(void)
{
    static const char *const bad[] = {
        "Zg=",          /* length not a multiple of 4 */
        "Zg",           /* padding missing */
        "Zm9vYg",       /* padding missing */
        "Zg==Zg==",     /* padding in the middle */
        "Z===",         /* too much padding */
        "====",
        "=Zg=",
        "Zm=v",         /* data after padding */
        "Zh==",         /* non-canonical: trailing bits set */
        "Zm9=",         /* non-canonical */
        "Zm9 ",         /* whitespace */
        " Zm9",
        "Zm9v\r\n\r\n",
        "Zm9\tv",
        "Zm-v",         /* base64url alphabet */
        "Zm_v",
        "Zm9v====",
        "Zm\0v",
        "Zm9v.AAA",
    };
    unsigned char out[16];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = strlen(bad[i]);
        if (i == 17)
            len = 4;    /* the embedded NUL */
        long n = sasl_b64_decode(bad[i], len, out);
        if (n != -1)
            fprintf(stderr, "accepted bad base64 #%zu\n", i);
        CHECK(n == -1);
    }
}

/* ---- PLAIN ---- */

static enum sasl_result plain_initial(struct sasl *s, const void *msg, size_t n)
{
    char *e = b64(msg, n);
    struct buf ch;
    buf_init(&ch);
    enum sasl_result r = sasl_start(s, SASL_PLAIN, e, strlen(e), true, "mx.test", &ch);
    CHECK(buf_used(&ch) == 0);
    buf_free(&ch);
    free(e);
    return r;
}

static void test_plain(void)
{
    struct sasl s = { 0 };
    struct buf ch;
    buf_init(&ch);

    /* initial response, empty authzid */
    CHECK(plain_initial(&s, "\0tim\0tanstaaftanstaaf", 21) == SASL_DONE);
    CHECK(s.mech == SASL_PLAIN);
    CHECK_STR(s.authzid, "");
    CHECK_STR(s.user, "tim");
    CHECK_STR(s.password, "tanstaaftanstaaf");
    CHECK(sasl_verify(&s, "tanstaaftanstaaf", 16));
    CHECK(!sasl_verify(&s, "tanstaaftanstaaF", 16));
    CHECK(!sasl_verify(&s, "tanstaaf", 8));                     /* prefix */
    CHECK(!sasl_verify(&s, "tanstaaftanstaaftanstaaf", 24));    /* longer */
    CHECK(!sasl_verify(&s, "", 0));
    CHECK(!sasl_verify(&s, NULL, 0));
    /* a further response after DONE is refused */
    CHECK(sasl_step(&s, "AHRpbQB4", 8, &ch) == SASL_ERR_SYNTAX);

    /* with authzid */
    CHECK(plain_initial(&s, "admin\0tim\0secret", 16) == SASL_DONE);
    CHECK_STR(s.authzid, "admin");
    CHECK_STR(s.user, "tim");
    CHECK_STR(s.password, "secret");

    /* RFC 4616's example, base64 as the client sends it */
    CHECK(sasl_start(&s, SASL_PLAIN, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", 28, true, NULL, &ch) == SASL_DONE);
    CHECK_STR(s.user, "tim");
    CHECK(sasl_verify(&s, "tanstaaftanstaaf", 16));

    /* without initial response: empty 334, then the message */
    buf_reset(&ch);
    CHECK(sasl_start(&s, SASL_PLAIN, NULL, 0, false, "mx.test", &ch) == SASL_CONTINUE);
    CHECK(buf_used(&ch) == 0);
    CHECK(s.user == NULL && s.password == NULL);
    CHECK(sasl_step(&s, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", 28, &ch) == SASL_DONE);
    CHECK(buf_used(&ch) == 0);
    CHECK_STR(s.user, "tim");
    CHECK_STR(s.password, "tanstaaftanstaaf");

    /* empty initial response "=" is not a base64 error; an empty PLAIN
     * message lacks the two NULs */
    CHECK(sasl_start(&s, SASL_PLAIN, "=", 1, true, NULL, &ch) == SASL_ERR_SYNTAX);
    /* an empty line as the response to 334 likewise */
    CHECK(sasl_start(&s, SASL_PLAIN, NULL, 0, false, NULL, &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "", 0, &ch) == SASL_ERR_SYNTAX);

    /* malformed messages */
    CHECK(plain_initial(&s, "timsecret", 9) == SASL_ERR_SYNTAX);          /* no NUL */
    CHECK(plain_initial(&s, "tim\0secret", 10) == SASL_ERR_SYNTAX);       /* one NUL */
    CHECK(plain_initial(&s, "\0\0secret", 8) == SASL_ERR_SYNTAX);         /* empty user */
    CHECK(plain_initial(&s, "\0tim\0", 5) == SASL_ERR_SYNTAX);            /* empty password */
    CHECK(plain_initial(&s, "\0tim\0se\0cret", 12) == SASL_ERR_SYNTAX);   /* NUL in password */
    CHECK(plain_initial(&s, "\0\0\0", 3) == SASL_ERR_SYNTAX);
    CHECK(s.user == NULL && s.password == NULL);

    /* field length limit: 1024 fits, 1025 does not */
    char big[1 + 1025 + 1 + 1025];
    for (size_t ulen = 1023; ulen <= 1025; ulen++) {
        size_t n = 0;
        big[n++] = '\0';
        memset(big + n, 'u', ulen);
        n += ulen;
        big[n++] = '\0';
        memcpy(big + n, "pw", 2);
        n += 2;
        CHECK(plain_initial(&s, big, n) == (ulen <= 1024 ? SASL_DONE : SASL_ERR_SYNTAX));
        n = 0;
        big[n++] = '\0';
        big[n++] = 'u';
        big[n++] = '\0';
        memset(big + n, 'p', ulen);
        n += ulen;
        CHECK(plain_initial(&s, big, n) == (ulen <= 1024 ? SASL_DONE : SASL_ERR_SYNTAX));
        if (ulen == 1024)
            CHECK(s.password && strlen(s.password) == 1024);
    }
    /* a huge line is refused without decoding */
    size_t hlen = 400000;
    char *huge = xmalloc(hlen);
    memset(huge, 'A', hlen);
    CHECK(sasl_start(&s, SASL_PLAIN, huge, hlen, true, NULL, &ch) == SASL_ERR_SYNTAX);
    free(huge);

    /* bad base64, initial and as a response */
    CHECK(sasl_start(&s, SASL_PLAIN, "AHRpbQB0YW5zdGFhZnRhbnN0YWF", 27, true, NULL, &ch) == SASL_ERR_BASE64);
    CHECK(sasl_start(&s, SASL_PLAIN, "AHRpbQB0 W5zdGFhZnRhbnN0YWFm", 28, true, NULL, &ch) == SASL_ERR_BASE64);
    CHECK(sasl_start(&s, SASL_PLAIN, NULL, 0, false, NULL, &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "!!!!", 4, &ch) == SASL_ERR_BASE64);
    CHECK(s.password == NULL);

    /* cancel, initial and as a response */
    CHECK(sasl_start(&s, SASL_PLAIN, "*", 1, true, NULL, &ch) == SASL_ERR_CANCEL);
    CHECK(sasl_start(&s, SASL_PLAIN, NULL, 0, false, NULL, &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "*", 1, &ch) == SASL_ERR_CANCEL);
    CHECK(!sasl_verify(&s, "", 0));
    /* after a failure, no more steps */
    CHECK(sasl_step(&s, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", 28, &ch) == SASL_ERR_SYNTAX);

    sasl_reset(&s);
    CHECK(s.mech == SASL_NONE && s.user == NULL && s.password == NULL && s.authzid == NULL);
    buf_free(&ch);
}

/* ---- LOGIN ---- */

static void test_login(void)
{
    struct sasl s = { 0 };
    struct buf ch;
    buf_init(&ch);

    CHECK(sasl_start(&s, SASL_LOGIN, NULL, 0, false, "mx.test", &ch) == SASL_CONTINUE);
    CHECK(buf_is(&ch, "VXNlcm5hbWU6"));
    buf_reset(&ch);
    char *u = b64("alice", 5), *p = b64("s3cret pass", 11);
    CHECK(sasl_step(&s, u, strlen(u), &ch) == SASL_CONTINUE);
    CHECK(buf_is(&ch, "UGFzc3dvcmQ6"));
    CHECK_STR(s.user, "alice");
    CHECK(s.password == NULL);
    CHECK(!sasl_verify(&s, "s3cret pass", 11));   /* not complete yet */
    buf_reset(&ch);
    CHECK(sasl_step(&s, p, strlen(p), &ch) == SASL_DONE);
    CHECK(buf_used(&ch) == 0);
    CHECK_STR(s.password, "s3cret pass");
    CHECK(sasl_verify(&s, "s3cret pass", 11));
    CHECK(!sasl_verify(&s, "s3cret pasS", 11));
    CHECK(!sasl_verify(&s, "s3cret pass ", 12));

    /* initial response is the user name */
    buf_reset(&ch);
    CHECK(sasl_start(&s, SASL_LOGIN, u, strlen(u), true, NULL, &ch) == SASL_CONTINUE);
    CHECK(buf_is(&ch, "UGFzc3dvcmQ6"));
    CHECK_STR(s.user, "alice");
    CHECK(sasl_step(&s, p, strlen(p), &ch) == SASL_DONE);
    CHECK(sasl_verify(&s, "s3cret pass", 11));

    /* cancel at each step */
    CHECK(sasl_start(&s, SASL_LOGIN, NULL, 0, false, NULL, &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "*", 1, &ch) == SASL_ERR_CANCEL);
    CHECK(sasl_start(&s, SASL_LOGIN, u, strlen(u), true, NULL, &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "*", 1, &ch) == SASL_ERR_CANCEL);
    CHECK(s.password == NULL);
    CHECK(sasl_start(&s, SASL_LOGIN, "*", 1, true, NULL, &ch) == SASL_ERR_CANCEL);

    /* empty user ("=" or an empty line), empty password, NUL inside, bad base64 */
    CHECK(sasl_start(&s, SASL_LOGIN, "=", 1, true, NULL, &ch) == SASL_ERR_SYNTAX);
    CHECK(sasl_start(&s, SASL_LOGIN, NULL, 0, false, NULL, &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "", 0, &ch) == SASL_ERR_SYNTAX);
    CHECK(sasl_start(&s, SASL_LOGIN, u, strlen(u), true, NULL, &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "", 0, &ch) == SASL_ERR_SYNTAX);
    char *nul = b64("al\0ce", 5);
    CHECK(sasl_start(&s, SASL_LOGIN, nul, strlen(nul), true, NULL, &ch) == SASL_ERR_SYNTAX);
    CHECK(sasl_start(&s, SASL_LOGIN, u, strlen(u), true, NULL, &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, nul, strlen(nul), &ch) == SASL_ERR_SYNTAX);
    CHECK(sasl_start(&s, SASL_LOGIN, "YWxpY2U", 7, true, NULL, &ch) == SASL_ERR_BASE64);
    CHECK(sasl_start(&s, SASL_LOGIN, u, strlen(u), true, NULL, &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "czNjcmV0=", 9, &ch) == SASL_ERR_BASE64);

    free(nul);
    free(u);
    free(p);
    sasl_reset(&s);
    buf_free(&ch);
}

/* ---- CRAM-MD5 ---- */

static void hmac_md5_hex(const char *key, const char *msg, char hex[33])
{
    unsigned char mac[16];
    size_t n = 0;
    CHECK(EVP_Q_mac(NULL, "HMAC", NULL, "MD5", NULL, key, strlen(key), (const unsigned char *)msg,
                    strlen(msg), mac, sizeof mac, &n) != NULL);
    for (size_t i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

/* "<digits.digits@host>" */
static bool challenge_shape(const char *c, const char *host)
{
    size_t n = strlen(c), hl = strlen(host);
    if (n < hl + 6 || c[0] != '<' || c[n - 1] != '>' || c[n - hl - 2] != '@' ||
        memcmp(c + n - hl - 1, host, hl) != 0)
        return false;
    const char *p = c + 1;
    size_t digits = 0;
    while (isdigit((unsigned char)*p))
        p++, digits++;
    if (!digits || *p++ != '.')
        return false;
    digits = 0;
    while (isdigit((unsigned char)*p))
        p++, digits++;
    return digits > 0 && *p == '@';
}

static void test_cram_md5(void)
{
    struct sasl s = { 0 };
    struct buf ch;
    buf_init(&ch);
    unsigned char dec[512];

    /* the challenge */
    CHECK(sasl_start(&s, SASL_CRAM_MD5, NULL, 0, false, "mx.example.test", &ch) == SASL_CONTINUE);
    long n = sasl_b64_decode(buf_peek(&ch), buf_used(&ch), dec);
    CHECK(n > 0);
    if (n > 0) {
        dec[n] = '\0';
        CHECK_STR((char *)dec, s.challenge);
        CHECK(challenge_shape((char *)dec, "mx.example.test"));
    }
    /* a second challenge differs (random part) */
    struct sasl s2 = { 0 };
    struct buf ch2;
    buf_init(&ch2);
    CHECK(sasl_start(&s2, SASL_CRAM_MD5, NULL, 0, false, "mx.example.test", &ch2) == SASL_CONTINUE);
    CHECK(s.challenge && s2.challenge && strcmp(s.challenge, s2.challenge) != 0);
    sasl_reset(&s2);
    buf_free(&ch2);
    /* no hostname: localhost */
    CHECK(sasl_start(&s2, SASL_CRAM_MD5, NULL, 0, false, NULL, NULL) == SASL_CONTINUE);
    CHECK(s2.challenge && challenge_shape(s2.challenge, "localhost"));
    sasl_reset(&s2);

    /* a client computes the answer for the live challenge */
    char hex[33], resp[128];
    hmac_md5_hex("hunter2", s.challenge, hex);
    snprintf(resp, sizeof resp, "bob smith %s", hex);     /* user with a space */
    char *e = b64(resp, strlen(resp));
    CHECK(sasl_step(&s, e, strlen(e), &ch) == SASL_DONE);
    CHECK_STR(s.user, "bob smith");
    CHECK(s.password == NULL);
    CHECK(sasl_verify(&s, "hunter2", 7));
    CHECK(!sasl_verify(&s, "hunter3", 7));
    CHECK(!sasl_verify(&s, "hunter", 6));
    CHECK(!sasl_verify(&s, "", 0));
    free(e);

    /* RFC 2195's example */
    const char *rfc_chal = "<1896.697170952@postoffice.reston.mci.net>";
    buf_reset(&ch);
    CHECK(sasl_start(&s, SASL_CRAM_MD5, NULL, 0, false, "postoffice.reston.mci.net", &ch) == SASL_CONTINUE);
    free(s.challenge);
    s.challenge = xstrdup(rfc_chal);
    /* the base64 response exactly as printed in the RFC */
    const char *rfc_resp = "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw";
    CHECK(sasl_step(&s, rfc_resp, strlen(rfc_resp), &ch) == SASL_DONE);
    CHECK_STR(s.user, "tim");
    CHECK_STR(s.digest, "b913a602c7eda7a495b4e6e7334d3890");
    CHECK(sasl_verify(&s, "tanstaaftanstaaf", 16));
    CHECK(!sasl_verify(&s, "tanstaaftanstaaF", 16));
    /* the RFC's challenge encodes to the RFC's base64 text */
    char *ce = b64(rfc_chal, strlen(rfc_chal));
    CHECK_STR(ce, "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+");
    free(ce);

    /* upper-case hex digest is accepted and lowercased */
    CHECK(sasl_start(&s, SASL_CRAM_MD5, NULL, 0, false, "x", &ch) == SASL_CONTINUE);
    free(s.challenge);
    s.challenge = xstrdup(rfc_chal);
    e = b64("tim B913A602C7EDA7A495B4E6E7334D3890", 36);
    CHECK(sasl_step(&s, e, strlen(e), &ch) == SASL_DONE);
    CHECK(sasl_verify(&s, "tanstaaftanstaaf", 16));
    free(e);

    /* malformed answers */
    static const char *const bad[] = {
        "tim b913a602c7eda7a495b4e6e7334d389",      /* 31 hex */
        "tim b913a602c7eda7a495b4e6e7334d38900",    /* 33 hex */
        "tim b913a602c7eda7a495b4e6e7334d389g",     /* not hex */
        "timb913a602c7eda7a495b4e6e7334d3890",      /* no space */
        " b913a602c7eda7a495b4e6e7334d3890",        /* empty user */
        "b913a602c7eda7a495b4e6e7334d3890",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(sasl_start(&s, SASL_CRAM_MD5, NULL, 0, false, "x", &ch) == SASL_CONTINUE);
        e = b64(bad[i], strlen(bad[i]));
        CHECK(sasl_step(&s, e, strlen(e), &ch) == SASL_ERR_SYNTAX);
        CHECK(!sasl_verify(&s, "tanstaaftanstaaf", 16));
        free(e);
    }
    /* bad base64, cancel, and an initial response (server-first mechanism) */
    CHECK(sasl_start(&s, SASL_CRAM_MD5, NULL, 0, false, "x", &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODk", 47, &ch) == SASL_ERR_BASE64);
    CHECK(sasl_start(&s, SASL_CRAM_MD5, NULL, 0, false, "x", &ch) == SASL_CONTINUE);
    CHECK(sasl_step(&s, "*", 1, &ch) == SASL_ERR_CANCEL);
    CHECK(!sasl_verify(&s, "", 0));
    CHECK(sasl_start(&s, SASL_CRAM_MD5, rfc_resp, strlen(rfc_resp), true, "x", &ch) == SASL_ERR_SYNTAX);
    CHECK(sasl_start(&s, SASL_CRAM_MD5, "*", 1, true, "x", &ch) == SASL_ERR_CANCEL);

    sasl_reset(&s);
    CHECK(s.challenge == NULL && s.user == NULL && s.digest[0] == '\0');
    buf_free(&ch);
}

static void test_mech_names(void)
{
    CHECK(sasl_mech_from_name("PLAIN", 5) == SASL_PLAIN);
    CHECK(sasl_mech_from_name("plain", 5) == SASL_PLAIN);
    CHECK(sasl_mech_from_name("Login", 5) == SASL_LOGIN);
    CHECK(sasl_mech_from_name("cram-md5", 8) == SASL_CRAM_MD5);
    CHECK(sasl_mech_from_name("CRAM-MD5X", 9) == SASL_NONE);
    CHECK(sasl_mech_from_name("PLAINX", 5) == SASL_PLAIN);   /* length counts, not NUL */
    CHECK(sasl_mech_from_name("PLAI", 4) == SASL_NONE);
    CHECK(sasl_mech_from_name("DIGEST-MD5", 10) == SASL_NONE);
    CHECK(sasl_mech_from_name("", 0) == SASL_NONE);
    CHECK_STR(sasl_mech_name(SASL_PLAIN), "PLAIN");
    CHECK_STR(sasl_mech_name(SASL_LOGIN), "LOGIN");
    CHECK_STR(sasl_mech_name(SASL_CRAM_MD5), "CRAM-MD5");

    struct sasl s = { 0 };
    CHECK(sasl_start(&s, SASL_NONE, NULL, 0, false, NULL, NULL) == SASL_ERR_MECH);
    CHECK(sasl_start(&s, (enum sasl_mech)42, NULL, 0, false, NULL, NULL) == SASL_ERR_MECH);
    CHECK(sasl_step(&s, "", 0, NULL) == SASL_ERR_SYNTAX);
    CHECK(!sasl_verify(&s, "x", 1));
    sasl_reset(&s);
}

int main(void)
{
    test_b64_vectors();
    test_b64_roundtrip();
    test_b64_strict();
    test_mech_names();
    test_plain();
    test_login();
    test_cram_md5();
    return testutil_summary();
}
