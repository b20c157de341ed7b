/* sasl.c - the server side of SMTP AUTH (RFC 4954) as a pure state
 * machine: PLAIN (RFC 4616), LOGIN and CRAM-MD5 (RFC 2195), strict base64,
 * and constant-time verification of a plaintext secret.
 *
 * Owns the strings in struct sasl (freed, passwords wiped, by sasl_reset).
 * Every decoded client buffer is wiped before it is freed, because it may
 * hold a password. Uses libcrypto for RAND_bytes, HMAC-MD5 (EVP_MAC) and
 * CRYPTO_memcmp / OPENSSL_cleanse; no sockets, no libev, no Lua.
 *
 * Choices where the RFCs leave room:
 * - "=" as the initial response is an empty response; for PLAIN that is a
 *   message without the two NULs (SASL_ERR_SYNTAX), for LOGIN an empty
 *   user name (SASL_ERR_SYNTAX), never a base64 error.
 * - CRAM-MD5 is server-first: an initial response is SASL_ERR_SYNTAX.
 * - Every identity and password is 1..SASL_FIELD_MAX bytes without NUL
 *   (RFC 4616 uses 1*SAFE for authcid and passwd; authzid may be empty).
 * - challenge_out is appended to, never reset: the caller owns it. */
#include "proto/sasl.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#define SASL_FIELD_MAX 1024
/* Largest PLAIN message: three fields and two NULs, then base64 of it. */
#define SASL_DECODED_MAX (3 * SASL_FIELD_MAX + 2)
#define SASL_ENCODED_MAX (4 * ((SASL_DECODED_MAX + 2) / 3))

/* LOGIN prompts, base64 of "Username:" and "Password:" (sent as-is). */
#define SASL_LOGIN_USER "VXNlcm5hbWU6"
#define SASL_LOGIN_PASS "UGFzc3dvcmQ6"

enum { SASL_STEP_FIRST = 0, SASL_STEP_LOGIN_PASS = 1, SASL_STEP_END = 99 };

static const char sasl_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const struct {
    enum sasl_mech mech;
    const char *name;
} sasl_mechs[] = {
    { SASL_PLAIN, "PLAIN" },
    { SASL_LOGIN, "LOGIN" },
    { SASL_CRAM_MD5, "CRAM-MD5" },
};

enum sasl_mech sasl_mech_from_name(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof sasl_mechs / sizeof sasl_mechs[0]; i++)
        if (ascii_caseeq(name, len, sasl_mechs[i].name))
            return sasl_mechs[i].mech;
    return SASL_NONE;
}

const char *sasl_mech_name(enum sasl_mech m)
{
    for (size_t i = 0; i < sizeof sasl_mechs / sizeof sasl_mechs[0]; i++)
        if (sasl_mechs[i].mech == m)
            return sasl_mechs[i].name;
    return "NONE";
}

/* ---- base64 ---- */

static int sasl_b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Strict: length a multiple of 4, alphabet only, '=' only as the last one
 * or two characters, and the unused bits before the padding zero (the
 * canonical encoding of RFC 4648 3.5). */
long sasl_b64_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        const unsigned char *q = (const unsigned char *)in + i;
        bool last = i + 4 == len;
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            if (q[k] == '=' && last && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad)                    /* data after '=' */
                return -1;
            v[k] = sasl_b64_value(q[k]);
            if (v[k] < 0)
                return -1;
        }
        uint32_t n = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if ((pad == 1 && (n & 0xff)) || (pad == 2 && (n & 0xffff)))
            return -1;                  /* non-canonical trailing bits */
        out[o++] = (unsigned char)(n >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(n >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)n;
    }
    return (long)o;
}

void sasl_b64_encode(struct buf *out, const unsigned char *in, size_t len)
{
    size_t groups = (len + 2) / 3;
    char *p = buf_reserve(out, size_mul(groups, 4));
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        size_t left = len - i;
        uint32_t n = (uint32_t)in[i] << 16;
        if (left > 1)
            n |= (uint32_t)in[i + 1] << 8;
        if (left > 2)
            n |= in[i + 2];
        p[o++] = sasl_b64_alphabet[n >> 18 & 63];
        p[o++] = sasl_b64_alphabet[n >> 12 & 63];
        p[o++] = left > 1 ? sasl_b64_alphabet[n >> 6 & 63] : '=';
        p[o++] = left > 2 ? sasl_b64_alphabet[n & 63] : '=';
    }
    buf_commit(out, o);
}

/* ---- helpers ---- */

static void sasl_free_secret(char **p)
{
    if (*p) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

void sasl_reset(struct sasl *s)
{
    sasl_free_secret(&s->password);
    free(s->authzid);
    free(s->user);
    free(s->challenge);
    OPENSSL_cleanse(s->digest, sizeof s->digest);
    memset(s, 0, sizeof *s);
    s->mech = SASL_NONE;
}

/* Decode one client response into a fresh NUL-terminated buffer (*out,
 * *outlen). "*" cancels. The buffer may hold secrets: free it with
 * sasl_free_decoded. */
static enum sasl_result sasl_decode(const char *line, size_t len, unsigned char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (len == 1 && line[0] == '*')
        return SASL_ERR_CANCEL;
    if (len > SASL_ENCODED_MAX)
        return SASL_ERR_SYNTAX;
    unsigned char *d = xmalloc(len / 4 * 3 + 1);
    long n = sasl_b64_decode(line, len, d);
    if (n < 0) {
        free(d);
        return SASL_ERR_BASE64;
    }
    d[n] = '\0';
    *out = d;
    *outlen = (size_t)n;
    return SASL_CONTINUE;
}

static void sasl_free_decoded(unsigned char *d, size_t n)
{
    if (d) {
        OPENSSL_cleanse(d, n + 1);
        free(d);
    }
}

/* A field of a decoded message: no NUL inside, length within bounds. */
static bool sasl_field_ok(const unsigned char *p, size_t n, bool may_be_empty)
{
    if (n > SASL_FIELD_MAX || (n == 0 && !may_be_empty))
        return false;
    return memchr(p, '\0', n) == NULL;
}

static enum sasl_result sasl_fail(struct sasl *s, enum sasl_result r)
{
    s->step = SASL_STEP_END;
    return r;
}

/* ---- PLAIN: [authzid] NUL authcid NUL passwd ---- */

static enum sasl_result sasl_plain(struct sasl *s, const unsigned char *m, size_t n)
{
    const unsigned char *nul1 = memchr(m, '\0', n);
    if (!nul1)
        return SASL_ERR_SYNTAX;
    const unsigned char *user = nul1 + 1;
    const unsigned char *nul2 = memchr(user, '\0', n - (size_t)(user - m));
    if (!nul2)
        return SASL_ERR_SYNTAX;
    const unsigned char *pass = nul2 + 1;
    size_t zlen = (size_t)(nul1 - m);
    size_t ulen = (size_t)(nul2 - user);
    size_t plen = n - (size_t)(pass - m);
    /* a third NUL inside the password is caught by sasl_field_ok */
    if (!sasl_field_ok(m, zlen, true) || !sasl_field_ok(user, ulen, false) ||
        !sasl_field_ok(pass, plen, false))
        return SASL_ERR_SYNTAX;
    s->authzid = xmemdup(m, zlen);
    s->user = xmemdup(user, ulen);
    s->password = xmemdup(pass, plen);
    s->step = SASL_STEP_END;
    return SASL_DONE;
}

/* ---- LOGIN: "Username:" then "Password:" ---- */

static enum sasl_result sasl_login_user(struct sasl *s, const unsigned char *m, size_t n,
                                        struct buf *challenge_out)
{
    if (!sasl_field_ok(m, n, false))
        return SASL_ERR_SYNTAX;
    s->user = xmemdup(m, n);
    s->step = SASL_STEP_LOGIN_PASS;
    if (challenge_out)
        buf_appends(challenge_out, SASL_LOGIN_PASS);
    return SASL_CONTINUE;
}

static enum sasl_result sasl_login_pass(struct sasl *s, const unsigned char *m, size_t n)
{
    if (!sasl_field_ok(m, n, false))
        return SASL_ERR_SYNTAX;
    s->password = xmemdup(m, n);
    s->step = SASL_STEP_END;
    return SASL_DONE;
}

/* ---- CRAM-MD5: "<random.time@host>", answer "user SP hexdigest" ---- */

static int sasl_cram_challenge(struct sasl *s, const char *hostname, struct buf *challenge_out)
{
    uint64_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        return -1;
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "<%" PRIu64 ".%lld@%s>", r, (long long)time(NULL),
               hostname && *hostname ? hostname : "localhost");
    s->challenge = xmemdup(buf_peek(&b), buf_used(&b));
    if (challenge_out)
        sasl_b64_encode(challenge_out, (const unsigned char *)buf_peek(&b), buf_used(&b));
    buf_free(&b);
    return 0;
}

static enum sasl_result sasl_cram_response(struct sasl *s, const unsigned char *m, size_t n)
{
    /* The user name may contain spaces; the digest follows the last one. */
    if (n < 34)
        return SASL_ERR_SYNTAX;
    size_t ulen = n - 33;
    if (m[ulen] != ' ' || !sasl_field_ok(m, ulen, false))
        return SASL_ERR_SYNTAX;
    const unsigned char *d = m + ulen + 1;
    char hex[33];
    for (size_t i = 0; i < 32; i++) {
        unsigned char ch = d[i];
        if (ch >= 'A' && ch <= 'F')
            ch = (unsigned char)(ch - 'A' + 'a');
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return SASL_ERR_SYNTAX;
        hex[i] = (char)ch;
    }
    hex[32] = '\0';
    memcpy(s->digest, hex, sizeof hex);
    s->user = xmemdup(m, ulen);
    s->step = SASL_STEP_END;
    return SASL_DONE;
}

/* ---- the state machine ---- */

enum sasl_result sasl_start(struct sasl *s, enum sasl_mech mech, const char *initial, size_t ilen,
                            bool has_initial, const char *hostname, struct buf *challenge_out)
{
    sasl_reset(s);
    if (mech != SASL_PLAIN && mech != SASL_LOGIN && mech != SASL_CRAM_MD5)
        return SASL_ERR_MECH;
    s->mech = mech;
    s->step = SASL_STEP_FIRST;

    if (!has_initial) {
        switch (mech) {
        case SASL_PLAIN:
            return SASL_CONTINUE;       /* empty challenge: "334 " */
        case SASL_LOGIN:
            if (challenge_out)
                buf_appends(challenge_out, SASL_LOGIN_USER);
            return SASL_CONTINUE;
        case SASL_CRAM_MD5:
            if (sasl_cram_challenge(s, hostname, challenge_out) < 0)
                return sasl_fail(s, SASL_ERR_MECH);
            return SASL_CONTINUE;
        default:
            return SASL_ERR_MECH;
        }
    }
    if (ilen == 1 && initial[0] == '*')
        return sasl_fail(s, SASL_ERR_CANCEL);
    if (mech == SASL_CRAM_MD5)
        return sasl_fail(s, SASL_ERR_SYNTAX);
    if (ilen == 1 && initial[0] == '=')
        ilen = 0;                       /* RFC 4954: zero-length initial response */
    return sasl_step(s, initial, ilen, challenge_out);
}

enum sasl_result sasl_step(struct sasl *s, const char *line, size_t len, struct buf *challenge_out)
{
    if (s->mech == SASL_NONE || s->step == SASL_STEP_END)
        return SASL_ERR_SYNTAX;
    if (s->mech == SASL_CRAM_MD5 && !s->challenge)
        return SASL_ERR_SYNTAX;

    unsigned char *m;
    size_t n;
    enum sasl_result r = sasl_decode(line, len, &m, &n);
    if (r != SASL_CONTINUE)
        return sasl_fail(s, r);

    switch (s->mech) {
    case SASL_PLAIN:
        r = sasl_plain(s, m, n);
        break;
    case SASL_LOGIN:
        r = s->step == SASL_STEP_FIRST ? sasl_login_user(s, m, n, challenge_out)
                                       : sasl_login_pass(s, m, n);
        break;
    case SASL_CRAM_MD5:
        r = sasl_cram_response(s, m, n);
        break;
    default:
        r = SASL_ERR_MECH;
        break;
    }
    sasl_free_decoded(m, n);
    if (r != SASL_CONTINUE && r != SASL_DONE)
        return sasl_fail(s, r);
    return r;
}

/* ---- verification ---- */

static int sasl_hmac_md5_hex(const char *key, size_t klen, const char *msg, size_t mlen, char hex[33])
{
    int rc = -1;
    unsigned char mac[16];
    size_t maclen = 0;
    EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = alg ? EVP_MAC_CTX_new(alg) : NULL;
    char digest[] = "MD5";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (!ctx)
        goto out;
    /* An empty secret is a valid HMAC key; give OpenSSL a non-NULL pointer. */
    if (EVP_MAC_init(ctx, (const unsigned char *)(klen ? key : ""), klen, params) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)msg, mlen) != 1 ||
        EVP_MAC_final(ctx, mac, &maclen, sizeof mac) != 1 || maclen != sizeof mac)
        goto out;
    for (size_t i = 0; i < sizeof mac; i++) {
        hex[2 * i] = "0123456789abcdef"[mac[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[mac[i] & 15];
    }
    hex[32] = '\0';
    rc = 0;
out:
    OPENSSL_cleanse(mac, sizeof mac);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(alg);
    return rc;
}

bool sasl_verify(const struct sasl *s, const char *secret, size_t slen)
{
    if (!secret)
        return false;
    switch (s->mech) {
    case SASL_PLAIN:
    case SASL_LOGIN: {
        if (!s->password)
            return false;
        size_t plen = strlen(s->password);
        return plen == slen && CRYPTO_memcmp(s->password, secret, slen) == 0;
    }
    case SASL_CRAM_MD5: {
        if (!s->challenge || strlen(s->digest) != 32)
            return false;
        char hex[33];
        if (sasl_hmac_md5_hex(secret, slen, s->challenge, strlen(s->challenge), hex) < 0)
            return false;
        bool ok = CRYPTO_memcmp(hex, s->digest, 32) == 0;
        OPENSSL_cleanse(hex, sizeof hex);
        return ok;
    }
    default:
        return false;
    }
}
