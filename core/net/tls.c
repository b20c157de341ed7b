/* tls.c - OpenSSL 3 server contexts and the TLS transport of conn.
 *
 * tls_ctx_new() builds one SSL_CTX per configuration: TLS 1.2-1.3, no
 * compression, no renegotiation, server cipher preference, OpenSSL's default
 * cipher list, a server-side session cache; certificate, key and chain from
 * PEM files, or an EC P-256 certificate made in memory (self_signed).
 * Errors name the option and the file, plus OpenSSL's reason.
 *
 * Per connection, tls_conn_new() returns a struct tls_conn (the SSL and the
 * cached peer subject); conn keeps it in c->tls and calls the tls_transport
 * functions, which never block and translate SSL_ERROR_WANT_* into
 * CONN_AGAIN + c->want_read / c->want_write. tls_transport.shutdown frees
 * it. The OpenSSL error queue is cleared before and after every SSL call so
 * that one connection's errors never show up in another's. Does not depend
 * on conn.c: only on struct conn and the CONN_* codes in conn.h. */
#include "net/tls.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct tls_ctx {
    SSL_CTX *ssl;
};

struct tls_conn {
    SSL *ssl;
    char *peer_subject;     /* RFC 2253, computed on first tls_conn_info */
    bool subject_done;
    bool fatal;             /* a fatal error happened: no SSL_shutdown */
};

#define TLS_SESSION_ID_CONTEXT "kurir"
#define TLS_SELF_SIGNED_DAYS 365

/* ---- error messages ---- */

/* The earliest queued OpenSSL error, as its reason text; clears the queue. */
static void tls_reason(char *out, size_t outlen)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(out, outlen, "%s", r);
    else if (e)
        ERR_error_string_n(e, out, outlen);
    else
        snprintf(out, outlen, "unknown error");
    ERR_clear_error();
}

/* "<option> <file>: <what>: <OpenSSL reason>" */
static void tls_file_error(char *err, size_t errlen, const char *opt, const char *file, const char *what)
{
    char reason[256];
    tls_reason(reason, sizeof reason);
    snprintf(err, errlen, "%s %s: %s: %s", opt, file, what, reason);
}

/* Check readability ourselves first so that a missing file or a permission
 * problem reads like one ("cannot read: No such file or directory"). */
static int tls_check_readable(char *err, size_t errlen, const char *opt, const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "%s %s: cannot read: %s", opt, file, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/* ---- self-signed certificate ---- */

static int tls_add_dns(GENERAL_NAMES *names, const char *dns)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (!gn || !s || !ASN1_STRING_set(s, dns, (int)strlen(dns)))
        goto fail;
    GENERAL_NAME_set0_value(gn, GEN_DNS, s);
    s = NULL;
    if (!sk_GENERAL_NAME_push(names, gn))
        goto fail;
    return 0;
fail:
    ASN1_IA5STRING_free(s);
    GENERAL_NAME_free(gn);
    return -1;
}

static int tls_add_ip(GENERAL_NAMES *names, const char *ip)
{
    ASN1_OCTET_STRING *a = a2i_IPADDRESS(ip);
    GENERAL_NAME *gn = a ? GENERAL_NAME_new() : NULL;
    if (!gn)
        goto fail;
    GENERAL_NAME_set0_value(gn, GEN_IPADD, a);
    a = NULL;
    if (!sk_GENERAL_NAME_push(names, gn))
        goto fail;
    return 0;
fail:
    ASN1_OCTET_STRING_free(a);
    GENERAL_NAME_free(gn);
    return -1;
}

static int tls_add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* EC P-256 key and a v3 certificate, CN and SAN from hostname plus
 * localhost / 127.0.0.1 / ::1, valid for a year, SHA-256. */
static int tls_self_signed(SSL_CTX *ctx, const char *hostname, char *err, size_t errlen)
{
    int rc = -1;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    GENERAL_NAMES *names = NULL;
    BIGNUM *serial = NULL;
    const char *host = hostname && *hostname ? hostname : "localhost";

    key = EVP_EC_gen("P-256");
    x = X509_new();
    names = GENERAL_NAMES_new();
    serial = BN_new();
    if (!key || !x || !names || !serial)
        goto fail;
    if (!X509_set_version(x, X509_VERSION_3) || !BN_rand(serial, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)))
        goto fail;
    /* a little slack for clients whose clock is behind */
    if (!X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), TLS_SELF_SIGNED_DAYS, 0, NULL))
        goto fail;
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)host, -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || !X509_set_pubkey(x, key))
        goto fail;
    if (tls_add_dns(names, host) < 0 ||
        (strcmp(host, "localhost") != 0 && tls_add_dns(names, "localhost") < 0) ||
        tls_add_ip(names, "127.0.0.1") < 0 || tls_add_ip(names, "::1") < 0)
        goto fail;
    if (!X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) ||
        tls_add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        tls_add_ext(x, NID_key_usage, "critical,digitalSignature") < 0 ||
        tls_add_ext(x, NID_ext_key_usage, "serverAuth") < 0 ||
        tls_add_ext(x, NID_subject_key_identifier, "hash") < 0)
        goto fail;
    if (!X509_sign(x, key, EVP_sha256()))
        goto fail;
    if (SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)
        goto fail;
    rc = 0;
    goto out;
fail:
    {
        char reason[256];
        tls_reason(reason, sizeof reason);
        snprintf(err, errlen, "tls.self_signed %s: cannot make a certificate: %s", host, reason);
    }
out:
    BN_free(serial);
    GENERAL_NAMES_free(names);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

/* ---- certificates from files ---- */

/* Every certificate of a PEM file goes to the chain of the current
 * certificate (SSL_CTX_add0_chain_cert rather than add_extra_chain_cert, so
 * that it also works when cert_file already carries part of the chain). */
static int tls_load_chain(SSL_CTX *ctx, const char *file, char *err, size_t errlen)
{
    if (tls_check_readable(err, errlen, "tls.chain", file) < 0)
        return -1;
    int rc = -1, count = 0;
    BIO *bio = BIO_new_file(file, "r");
    if (!bio) {
        tls_file_error(err, errlen, "tls.chain", file, "cannot read");
        return -1;
    }
    for (;;) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (!x)
            break;
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
            X509_free(x);
            tls_file_error(err, errlen, "tls.chain", file, "cannot use certificate");
            goto out;
        }
        count++;
    }
    /* the loop ends with PEM_R_NO_START_LINE at end of file; anything
     * else, or no certificate at all, is an error */
    unsigned long e = ERR_peek_last_error();
    if (!count || (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))) {
        tls_file_error(err, errlen, "tls.chain", file, "no PEM certificate");
        goto out;
    }
    ERR_clear_error();
    rc = 0;
out:
    BIO_free(bio);
    return rc;
}

static int tls_load_files(SSL_CTX *ctx, const struct tls_config *cfg, char *err, size_t errlen)
{
    if (!cfg->cert_file || !*cfg->cert_file) {
        snprintf(err, errlen, "tls.cert: no certificate file configured");
        return -1;
    }
    if (!cfg->key_file || !*cfg->key_file) {
        snprintf(err, errlen, "tls.key: no key file configured");
        return -1;
    }
    if (tls_check_readable(err, errlen, "tls.cert", cfg->cert_file) < 0)
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
        tls_file_error(err, errlen, "tls.cert", cfg->cert_file, "cannot load certificate");
        return -1;
    }
    if (tls_check_readable(err, errlen, "tls.key", cfg->key_file) < 0)
        return -1;
    /* use_PrivateKey_file already fails when the key does not match */
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
            char what[1200];
            snprintf(what, sizeof what, "key does not match certificate %s", cfg->cert_file);
            tls_file_error(err, errlen, "tls.key", cfg->key_file, what);
        } else {
            tls_file_error(err, errlen, "tls.key", cfg->key_file, "cannot load private key");
        }
        return -1;
    }
    if (cfg->chain_file && *cfg->chain_file && tls_load_chain(ctx, cfg->chain_file, err, errlen) < 0)
        return -1;
    if (SSL_CTX_check_private_key(ctx) != 1) {
        char what[1200];
        snprintf(what, sizeof what, "key does not match certificate %s", cfg->cert_file);
        tls_file_error(err, errlen, "tls.key", cfg->key_file, what);
        return -1;
    }
    return 0;
}

/* client_cert 1: ask for a certificate but let the handshake go on whatever
 * the verification says; the result is read back with
 * SSL_get_verify_result() in tls_conn_info(). */
static int tls_verify_any(int preverify_ok, X509_STORE_CTX *store)
{
    (void)preverify_ok;
    (void)store;
    return 1;
}

static int tls_client_certs(SSL_CTX *ctx, const struct tls_config *cfg, char *err, size_t errlen)
{
    if (cfg->client_cert != 1 && cfg->client_cert != 2)
        return 0;
    if (cfg->ca_file && *cfg->ca_file) {
        if (tls_check_readable(err, errlen, "tls.ca", cfg->ca_file) < 0)
            return -1;
        if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
            tls_file_error(err, errlen, "tls.ca", cfg->ca_file, "cannot load CA certificates");
            return -1;
        }
        /* tell clients which issuers we accept */
        STACK_OF(X509_NAME) *cas = SSL_load_client_CA_file(cfg->ca_file);
        if (cas)
            SSL_CTX_set_client_CA_list(ctx, cas);
        ERR_clear_error();
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ERR_clear_error();
    }
    if (cfg->client_cert == 1)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_any);
    else
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return 0;
}

/* ALPACA (cross-protocol attacks, alpaca-attack.com): a client that names
 * application protocols and not SMTP was sent here for something else, say
 * a browser talking HTTPS to port 465. Refuse its handshake (alert
 * no_application_protocol, RFC 7301 3.2); a client that names "smtp" gets
 * it; a client with no ALPN (most mail clients) never reaches this. */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char smtp[] = {'s', 'm', 't', 'p'};
    unsigned int i = 0;
    while (i < inlen) {
        unsigned int n = in[i];
        if (n == 0 || i + 1 + n > inlen)
            break;   /* malformed list */
        if (n == sizeof(smtp) && memcmp(in + i + 1, smtp, n) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Session-ticket keys shared by every context this process and its
 * children make: a ticket issued by one worker (or before a reload) is
 * accepted by another. Made once, before the master forks. */
static unsigned char ticket_keys[80];
static bool have_ticket_keys;

int tls_share_ticket_keys(void)
{
    if (have_ticket_keys)
        return 0;
    if (RAND_bytes(ticket_keys, sizeof ticket_keys) != 1)
        return -1;
    have_ticket_keys = true;
    return 0;
}

struct tls_ctx *tls_ctx_new(const struct tls_config *cfg, char *err, size_t errlen)
{
    struct tls_ctx *t = NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        char reason[256];
        tls_reason(reason, sizeof reason);
        snprintf(err, errlen, "tls: cannot create context: %s", reason);
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
        char reason[256];
        tls_reason(reason, sizeof reason);
        snprintf(err, errlen, "tls: cannot set protocol versions: %s", reason);
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SESSION_ID_CONTEXT,
                                   sizeof TLS_SESSION_ID_CONTEXT - 1);
    if (have_ticket_keys)
        SSL_CTX_set_tlsext_ticket_keys(ctx, ticket_keys, sizeof ticket_keys);

    if (cfg->self_signed) {
        if (tls_self_signed(ctx, cfg->hostname, err, errlen) < 0)
            goto fail;
    } else if (tls_load_files(ctx, cfg, err, errlen) < 0) {
        goto fail;
    }
    if (tls_client_certs(ctx, cfg, err, errlen) < 0)
        goto fail;

    ERR_clear_error();
    t = xmalloc(sizeof *t);
    t->ssl = ctx;
    return t;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/* Connections made from t hold their own reference to the SSL_CTX. */
void tls_ctx_free(struct tls_ctx *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ssl);
    free(t);
}

/* ---- per connection ---- */

void *tls_conn_new(struct tls_ctx *t, int fd)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(t->ssl);
    if (!ssl)
        goto fail;
    if (SSL_set_fd(ssl, fd) != 1)
        goto fail;
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    SSL_set_accept_state(ssl);
    struct tls_conn *tc = xcalloc(1, sizeof *tc);
    tc->ssl = ssl;
    return tc;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}

/* Map the result of a failed SSL call. for_read: an EOF (close_notify, or
 * the peer just closing the socket) is 0 rather than an error. */
static ssize_t tls_failed(struct conn *c, struct tls_conn *tc, int ret, bool for_read)
{
    int sys = errno;
    int e = SSL_get_error(tc->ssl, ret);
    ssize_t r = CONN_ERROR;
    switch (e) {
    case SSL_ERROR_WANT_READ:
        c->want_read = true;
        r = CONN_AGAIN;
        break;
    case SSL_ERROR_WANT_WRITE:
        c->want_write = true;
        r = CONN_AGAIN;
        break;
    case SSL_ERROR_ZERO_RETURN:
        r = for_read ? 0 : CONN_ERROR;
        break;
    case SSL_ERROR_SYSCALL:
        tc->fatal = true;
        /* no error in the queue and no errno: the socket reached EOF */
        r = for_read && ERR_peek_error() == 0 && sys == 0 ? 0 : CONN_ERROR;
        break;
    case SSL_ERROR_SSL: {
        tc->fatal = true;
        unsigned long le = ERR_peek_last_error();
        if (for_read && ERR_GET_LIB(le) == ERR_LIB_SSL && ERR_GET_REASON(le) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            r = 0;      /* OpenSSL 3's name for a close without close_notify */
        break;
    }
    default:
        tc->fatal = true;
        break;
    }
    ERR_clear_error();
    return r;
}

static ssize_t tls_read(struct conn *c, void *buf, size_t n)
{
    struct tls_conn *tc = c->tls;
    c->want_read = c->want_write = false;
    if (!tc)
        return CONN_ERROR;
    if (n == 0)
        return CONN_AGAIN;
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    int ret = SSL_read_ex(tc->ssl, buf, n, &got);
    if (ret == 1)
        return (ssize_t)got;
    return tls_failed(c, tc, ret, true);
}

static ssize_t tls_write(struct conn *c, const void *buf, size_t n)
{
    struct tls_conn *tc = c->tls;
    c->want_read = c->want_write = false;
    if (!tc)
        return CONN_ERROR;
    if (n == 0)
        return 0;
    size_t done = 0;
    ERR_clear_error();
    errno = 0;
    int ret = SSL_write_ex(tc->ssl, buf, n, &done);
    if (ret == 1)
        return (ssize_t)done;
    return tls_failed(c, tc, ret, false);
}

static int tls_handshake(struct conn *c)
{
    struct tls_conn *tc = c->tls;
    c->want_read = c->want_write = false;
    if (!tc)
        return -1;
    ERR_clear_error();
    errno = 0;
    int ret = SSL_do_handshake(tc->ssl);
    if (ret == 1)
        return 1;
    return tls_failed(c, tc, ret, false) == CONN_AGAIN ? 0 : -1;
}

static size_t tls_pending(struct conn *c)
{
    struct tls_conn *tc = c->tls;
    if (!tc)
        return 0;
    int n = SSL_pending(tc->ssl);
    return n > 0 ? (size_t)n : 0;
}

/* One non-blocking close_notify attempt, then free; the fd belongs to conn. */
static void tls_shutdown(struct conn *c)
{
    struct tls_conn *tc = c->tls;
    if (!tc)
        return;
    ERR_clear_error();
    if (!tc->fatal && SSL_is_init_finished(tc->ssl))
        (void)SSL_shutdown(tc->ssl);
    ERR_clear_error();
    SSL_free(tc->ssl);
    free(tc->peer_subject);
    free(tc);
    c->tls = NULL;
}

const struct conn_transport tls_transport = {
    .name = "tls",
    .read = tls_read,
    .write = tls_write,
    .handshake = tls_handshake,
    .pending = tls_pending,
    .shutdown = tls_shutdown,
};

static char *tls_subject(X509 *cert)
{
    char *s = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio)
        goto out;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0)
        goto out;
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    if (n >= 0)
        s = xmemdup(p, (size_t)n);
out:
    BIO_free(bio);
    ERR_clear_error();
    return s;
}

void tls_conn_info(struct conn *c, struct tls_info *out)
{
    memset(out, 0, sizeof *out);
    struct tls_conn *tc = c->tls;
    if (!tc || !SSL_is_init_finished(tc->ssl))
        return;
    out->version = SSL_get_version(tc->ssl);
    const SSL_CIPHER *ciph = SSL_get_current_cipher(tc->ssl);
    if (ciph) {
        out->cipher = SSL_CIPHER_get_name(ciph);
        out->bits = SSL_CIPHER_get_bits(ciph, NULL);
    }
    X509 *peer = SSL_get0_peer_certificate(tc->ssl);
    out->peer_verified = peer && SSL_get_verify_result(tc->ssl) == X509_V_OK;
    if (out->peer_verified) {
        if (!tc->subject_done) {
            tc->peer_subject = tls_subject(peer);
            tc->subject_done = true;
        }
        out->peer_subject = tc->peer_subject;
    }
}
