/* tls_test.c - unit test of core/tls.c without libev: the server side runs
 * through tls_transport on one end of a non-blocking socketpair, an OpenSSL
 * client on the other, the test alternating between them (every loop
 * bounded). Certificates come from the openssl command line in a temporary
 * directory. Covers the self-signed certificate, files + chain, client
 * certificates (request / require), data both ways incl. partial writes and
 * SSL_pending, EOF, bad input, and tls_ctx_new's error messages.
 *
 * Named tls_test.c, not test_tls.c, so that the pure-module glob in
 * CMakeLists.txt leaves it alone: it has its own target. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net/tls.h"
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

static int check_contains(const char *hay, const char *needle, const char *what, const char *file, int line)
{
    int ok = strstr(hay, needle) != NULL;
    if (!testutil_check(ok, what, file, line)) {
        testutil_dump("got", hay, strlen(hay));
        testutil_dump("expected to contain", needle, strlen(needle));
    }
    return ok;
}
#define CHECK_CONTAINS(hay, needle) check_contains((hay), (needle), #hay " contains " #needle, __FILE__, __LINE__)

#define MAX_ROUNDS 5000

/* ---- certificates via the openssl command line ---- */

struct files {
    char dir[64];
    char cnf[128], ca[128], ca_key[128], cert[128], key[128];
    char client_cert[128], client_key[128], rogue_cert[128], rogue_key[128];
    char other_key[128], garbage[128], missing[128];
};

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " >/dev/null 2>&1", sizeof cmd - strlen(cmd) - 1);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc == 0 ? 0 : -1;
}

static int make_files(struct files *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/kurir-tls-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
#define P(field, name) snprintf(f->field, sizeof f->field, "%s/%s", f->dir, name)
    P(cnf, "openssl.cnf");
    P(ca, "ca.pem");
    P(ca_key, "ca.key");
    P(cert, "server.pem");
    P(key, "server.key");
    P(client_cert, "client.pem");
    P(client_key, "client.key");
    P(rogue_cert, "rogue.pem");
    P(rogue_key, "rogue.key");
    P(other_key, "other.key");
    P(garbage, "garbage.pem");
    P(missing, "nope.pem");
#undef P
    FILE *c = fopen(f->cnf, "w");
    if (!c)
        return -1;
    fputs("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n"
          "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
          "subjectKeyIdentifier = hash\n"
          "[server]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n"
          "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1\n"
          "[client]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n"
          "extendedKeyUsage = clientAuth\n",
          c);
    fclose(c);
    FILE *g = fopen(f->garbage, "w");
    if (!g)
        return -1;
    fputs("this is not a certificate\n", g);
    fclose(g);
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    if (run("openssl req -x509 -config %s -extensions ca %s -keyout %s -out %s -days 2 -subj '/CN=kurir test CA'",
            f->cnf, ec, f->ca_key, f->ca) < 0 ||
        run("openssl req -new -config %s %s -keyout %s -out %s/server.csr -subj /CN=localhost", f->cnf, ec, f->key,
            f->dir) < 0 ||
        run("openssl x509 -req -in %s/server.csr -CA %s -CAkey %s -set_serial 2 -days 2 -extfile %s "
            "-extensions server -out %s",
            f->dir, f->ca, f->ca_key, f->cnf, f->cert) < 0 ||
        run("openssl req -new -config %s %s -keyout %s -out %s/client.csr -subj '/CN=client.test/O=kurir tests'",
            f->cnf, ec, f->client_key, f->dir) < 0 ||
        run("openssl x509 -req -in %s/client.csr -CA %s -CAkey %s -set_serial 3 -days 2 -extfile %s "
            "-extensions client -out %s",
            f->dir, f->ca, f->ca_key, f->cnf, f->client_cert) < 0 ||
        run("openssl req -x509 -config %s -extensions client %s -keyout %s -out %s -days 2 -subj /CN=rogue",
            f->cnf, ec, f->rogue_key, f->rogue_cert) < 0 ||
        run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s", f->other_key) < 0)
        return -1;
    return 0;
}

static void remove_files(const struct files *f)
{
    run("rm -rf '%s'", f->dir);
}

/* ---- a server conn and a client SSL on a socketpair ---- */

struct pair {
    struct conn c;          /* server side, through tls_transport */
    SSL_CTX *cctx;
    SSL *cl;                /* client side */
    int cfd;
    int srv, cli;           /* handshake: 0 running, 1 done, -1 failed */
};

static void nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* client options */
struct client_opts {
    const char *ca;         /* verify the server against this CA */
    const char *cert, *key; /* present a client certificate */
    int max_version;
};

static int pair_open(struct pair *p, struct tls_ctx *t, const struct client_opts *o)
{
    memset(p, 0, sizeof *p);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return -1;
    nonblock(sv[0]);
    nonblock(sv[1]);
    p->c.fd = sv[0];
    p->cfd = sv[1];
    p->c.tr = &tls_transport;
    p->c.tls = tls_conn_new(t, sv[0]);
    p->cctx = SSL_CTX_new(TLS_client_method());
    if (!p->c.tls || !p->cctx)
        return -1;
    if (o && o->ca) {
        SSL_CTX_load_verify_locations(p->cctx, o->ca, NULL);
        SSL_CTX_set_verify(p->cctx, SSL_VERIFY_PEER, NULL);
    }
    if (o && o->max_version)
        SSL_CTX_set_max_proto_version(p->cctx, o->max_version);
    if (o && o->cert) {
        if (SSL_CTX_use_certificate_file(p->cctx, o->cert, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_use_PrivateKey_file(p->cctx, o->key, SSL_FILETYPE_PEM) != 1)
            return -1;
    }
    p->cl = SSL_new(p->cctx);
    SSL_set_fd(p->cl, sv[1]);
    SSL_set_connect_state(p->cl);
    if (o && o->ca)
        SSL_set1_host(p->cl, "localhost");
    return 0;
}

static void pair_close(struct pair *p)
{
    if (p->c.tls)
        tls_transport.shutdown(&p->c);
    CHECK(p->c.tls == NULL);
    if (p->cl)
        SSL_free(p->cl);
    SSL_CTX_free(p->cctx);
    if (p->c.fd >= 0)
        close(p->c.fd);
    if (p->cfd >= 0)
        close(p->cfd);
    ERR_clear_error();
}

/* Alternate until both sides are done or one has failed and the other
 * cannot go on. */
static void pair_handshake(struct pair *p)
{
    for (int i = 0; i < MAX_ROUNDS && (p->srv == 0 || p->cli == 0); i++) {
        if (p->srv == 0) {
            int r = tls_transport.handshake(&p->c);
            CHECK(ERR_peek_error() == 0);   /* the transport leaves no errors behind */
            if (r == 1)
                p->srv = 1;
            else if (r < 0)
                p->srv = -1;
            else
                CHECK(p->c.want_read != p->c.want_write);
        }
        if (p->cli == 0) {
            int r = SSL_do_handshake(p->cl);
            if (r == 1) {
                p->cli = 1;
            } else {
                int e = SSL_get_error(p->cl, r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    p->cli = -1;
            }
            ERR_clear_error();
        }
        /* a failed server leaves the client waiting forever: stop there */
        if (p->srv == -1 && p->cli == 0 && i > 50)
            break;
    }
}

/* client reads exactly n bytes */
static int client_read(struct pair *p, char *buf, size_t n)
{
    size_t got = 0;
    for (int i = 0; i < MAX_ROUNDS && got < n; i++) {
        size_t k = 0;
        if (SSL_read_ex(p->cl, buf + got, n - got, &k) == 1)
            got += k;
        else if (SSL_get_error(p->cl, 0) != SSL_ERROR_WANT_READ)
            break;
    }
    ERR_clear_error();
    return got == n ? 0 : -1;
}

/* ---- tests ---- */

static void test_self_signed(void)
{
    char err[512] = "";
    struct tls_config cfg = { .self_signed = true, .hostname = "mx.test" };
    struct tls_ctx *t = tls_ctx_new(&cfg, err, sizeof err);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "tls_ctx_new: %s\n", err);
        return;
    }
    struct pair p;
    CHECK(pair_open(&p, t, NULL) == 0);

    /* nothing from the client yet: the server waits for reading */
    CHECK(tls_transport.handshake(&p.c) == 0);
    CHECK(p.c.want_read && !p.c.want_write);
    /* info before the handshake is empty */
    struct tls_info info;
    tls_conn_info(&p.c, &info);
    CHECK(info.version == NULL && info.cipher == NULL);

    pair_handshake(&p);
    CHECK(p.srv == 1 && p.cli == 1);

    /* the certificate the client got */
    X509 *cert = SSL_get0_peer_certificate(p.cl);
    CHECK(cert != NULL);
    if (cert) {
        CHECK(X509_get_version(cert) == X509_VERSION_3);
        CHECK(X509_check_host(cert, "mx.test", 0, 0, NULL) == 1);
        CHECK(X509_check_host(cert, "localhost", 0, 0, NULL) == 1);
        CHECK(X509_check_host(cert, "other.test", 0, 0, NULL) == 0);
        CHECK(X509_check_ip_asc(cert, "127.0.0.1", 0) == 1);
        CHECK(X509_check_ip_asc(cert, "::1", 0) == 1);
        CHECK(X509_check_ip_asc(cert, "10.0.0.1", 0) == 0);
        CHECK(X509_get_signature_nid(cert) == NID_ecdsa_with_SHA256);
        CHECK(X509_verify(cert, X509_get0_pubkey(cert)) == 1);   /* self-signed */
        EVP_PKEY *pk = X509_get0_pubkey(cert);
        char group[64] = "";
        size_t gl = 0;
        CHECK(pk && EVP_PKEY_get_group_name(pk, group, sizeof group, &gl) == 1);
        CHECK_STR(group, "prime256v1");
        time_t in364 = time(NULL) + 364 * 86400, in366 = time(NULL) + 366 * 86400;
        CHECK(X509_cmp_time(X509_get0_notAfter(cert), &in364) > 0);
        CHECK(X509_cmp_time(X509_get0_notAfter(cert), &in366) < 0);
        CHECK(X509_cmp_current_time(X509_get0_notBefore(cert)) < 0);
        X509_NAME *subj = X509_get_subject_name(cert);
        char cn[64] = "";
        X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof cn);
        CHECK_STR(cn, "mx.test");
    }

    tls_conn_info(&p.c, &info);
    CHECK_STR(info.version, "TLSv1.3");
    CHECK(info.cipher && strcmp(info.cipher, SSL_CIPHER_get_name(SSL_get_current_cipher(p.cl))) == 0);
    CHECK(info.bits >= 128);
    CHECK(info.peer_subject == NULL && !info.peer_verified);

    /* server -> client */
    const char *greet = "220 mx.test ESMTP kurir\r\n";
    CHECK(tls_transport.write(&p.c, greet, strlen(greet)) == (ssize_t)strlen(greet));
    char buf[256];
    CHECK(client_read(&p, buf, strlen(greet)) == 0);
    CHECK(memcmp(buf, greet, strlen(greet)) == 0);

    /* nothing to read: CONN_AGAIN waiting for reading */
    CHECK(tls_transport.read(&p.c, buf, sizeof buf) == CONN_AGAIN);
    CHECK(p.c.want_read && !p.c.want_write);
    CHECK(ERR_peek_error() == 0);

    /* client -> server, read in small pieces: the rest is pending */
    char msg[100];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (char)('a' + i % 26);
    size_t wrote = 0;
    CHECK(SSL_write_ex(p.cl, msg, sizeof msg, &wrote) == 1 && wrote == sizeof msg);
    CHECK(tls_transport.read(&p.c, buf, 10) == 10);
    CHECK(!p.c.want_read && !p.c.want_write);
    CHECK(memcmp(buf, msg, 10) == 0);
    CHECK(tls_transport.pending(&p.c) == 90);
    CHECK(tls_transport.read(&p.c, buf, sizeof buf) == 90);
    CHECK(memcmp(buf, msg + 10, 90) == 0);
    CHECK(tls_transport.pending(&p.c) == 0);

    /* bulk server -> client: 1 MiB through partial writes and WANT_WRITE */
    size_t big = 1 << 20;
    char *out = xmalloc(big), *in = xmalloc(big);
    for (size_t i = 0; i < big; i++)
        out[i] = (char)(i * 7 + i / 4096);
    size_t sent = 0, recvd = 0;
    /* first fill the socket without reading: partial writes, then AGAIN */
    ssize_t n0 = 0;
    int partial = 0;
    for (int i = 0; i < 1000 && sent < big; i++) {
        n0 = tls_transport.write(&p.c, out + sent, big - sent);
        if (n0 <= 0)
            break;
        partial += (size_t)n0 < big - sent;
        sent += (size_t)n0;
    }
    CHECK(n0 == CONN_AGAIN && p.c.want_write && !p.c.want_read);
    CHECK(partial > 0 && sent > 0 && sent < big);
    CHECK(ERR_peek_error() == 0);
    for (int i = 0; i < 100000 && recvd < big; i++) {
        if (sent < big) {
            ssize_t n = tls_transport.write(&p.c, out + sent, big - sent);
            if (n > 0) {
                sent += (size_t)n;
            } else {
                CHECK(n == CONN_AGAIN);
                if (n != CONN_AGAIN)
                    break;
                CHECK(p.c.want_write || p.c.want_read);
            }
        }
        size_t k = 0;
        if (SSL_read_ex(p.cl, in + recvd, big - recvd, &k) == 1)
            recvd += k;
        ERR_clear_error();
    }
    CHECK(sent == big && recvd == big);
    CHECK(memcmp(in, out, big) == 0);

    /* bulk client -> server through tls_transport.read */
    memset(in, 0, big);
    sent = recvd = 0;
    for (int i = 0; i < 100000 && recvd < big; i++) {
        size_t k = 0;
        if (sent < big && SSL_write_ex(p.cl, out + sent, big - sent > 50000 ? 50000 : big - sent, &k) == 1)
            sent += k;
        ERR_clear_error();
        ssize_t n = tls_transport.read(&p.c, in + recvd, 7000);
        if (n > 0)
            recvd += (size_t)n;
        else
            CHECK(n == CONN_AGAIN);
    }
    CHECK(recvd == big && memcmp(in, out, big) == 0);
    free(out);
    free(in);

    /* close_notify from the client: EOF */
    SSL_shutdown(p.cl);
    CHECK(tls_transport.read(&p.c, buf, sizeof buf) == 0);
    CHECK(ERR_peek_error() == 0);
    pair_close(&p);

    /* a TLS 1.2 client; then the socket closed without close_notify: EOF */
    struct client_opts o12 = { .max_version = TLS1_2_VERSION };
    CHECK(pair_open(&p, t, &o12) == 0);
    pair_handshake(&p);
    CHECK(p.srv == 1 && p.cli == 1);
    tls_conn_info(&p.c, &info);
    CHECK_STR(info.version, "TLSv1.2");
    CHECK(info.cipher != NULL && info.bits >= 128);
    CHECK(SSL_write_ex(p.cl, "QUIT\r\n", 6, &wrote) == 1);
    SSL_free(p.cl);
    p.cl = NULL;
    close(p.cfd);
    p.cfd = -1;
    CHECK(tls_transport.read(&p.c, buf, sizeof buf) == 6);
    CHECK(tls_transport.read(&p.c, buf, sizeof buf) == 0);
    CHECK(ERR_peek_error() == 0);
    /* writing to the gone peer is an error, not EOF or AGAIN */
    ssize_t wr = 0;
    for (int i = 0; i < 100 && wr != CONN_ERROR; i++)
        wr = tls_transport.write(&p.c, "x", 1);
    CHECK(wr == CONN_ERROR);
    pair_close(&p);

    /* a TLS 1.1 client is refused */
    struct client_opts o11 = { .max_version = TLS1_1_VERSION };
    CHECK(pair_open(&p, t, &o11) == 0);
    SSL_set_security_level(p.cl, 0);
    pair_handshake(&p);
    CHECK(p.srv == -1 && p.cli != 1);
    CHECK(ERR_peek_error() == 0);
    pair_close(&p);

    /* garbage instead of a ClientHello */
    CHECK(pair_open(&p, t, NULL) == 0);
    CHECK(write(p.cfd, "EHLO garbage.test\r\n\r\n\r\n\r\n", 25) == 25);
    int hs = 0;
    for (int i = 0; i < 10 && hs == 0; i++)
        hs = tls_transport.handshake(&p.c);
    CHECK(hs == -1);
    CHECK(ERR_peek_error() == 0);
    pair_close(&p);

    /* the client stops mid-handshake: the ClientHello, then the socket closes */
    CHECK(pair_open(&p, t, NULL) == 0);
    CHECK(SSL_do_handshake(p.cl) == -1);        /* sends the ClientHello */
    ERR_clear_error();
    CHECK(tls_transport.handshake(&p.c) == 0);  /* answers, waits for the Finished */
    close(p.cfd);
    p.cfd = -1;
    hs = 0;
    for (int i = 0; i < 10 && hs == 0; i++)
        hs = tls_transport.handshake(&p.c);
    CHECK(hs == -1);
    CHECK(ERR_peek_error() == 0);
    pair_close(&p);

    /* transport calls on a conn without TLS state fail cleanly */
    struct conn none;
    memset(&none, 0, sizeof none);
    CHECK(tls_transport.read(&none, buf, 1) == CONN_ERROR);
    CHECK(tls_transport.write(&none, buf, 1) == CONN_ERROR);
    CHECK(tls_transport.handshake(&none) == -1);
    CHECK(tls_transport.pending(&none) == 0);
    tls_transport.shutdown(&none);
    tls_conn_info(&none, &info);
    CHECK(info.version == NULL && !info.peer_verified);
    CHECK_STR(tls_transport.name, "tls");

    tls_ctx_free(t);

    /* default hostname */
    cfg.hostname = NULL;
    t = tls_ctx_new(&cfg, err, sizeof err);
    CHECK(t != NULL);
    tls_ctx_free(t);
}

static void test_files(const struct files *f)
{
    char err[512] = "";
    struct tls_config cfg = { .cert_file = f->cert, .key_file = f->key, .chain_file = f->ca };
    struct tls_ctx *t = tls_ctx_new(&cfg, err, sizeof err);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "tls_ctx_new: %s\n", err);
        return;
    }
    struct client_opts o = { .ca = f->ca };
    struct pair p;
    CHECK(pair_open(&p, t, &o) == 0);
    pair_handshake(&p);
    CHECK(p.srv == 1 && p.cli == 1);
    CHECK(SSL_get_verify_result(p.cl) == X509_V_OK);
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(p.cl);
    CHECK(chain && sk_X509_num(chain) == 2);    /* leaf + the chain file's CA */
    struct tls_info info;
    tls_conn_info(&p.c, &info);
    CHECK(info.peer_subject == NULL && !info.peer_verified);   /* no client cert asked */
    pair_close(&p);
    tls_ctx_free(t);

    /* client certificates requested */
    cfg.chain_file = NULL;
    cfg.ca_file = f->ca;
    cfg.client_cert = 1;
    t = tls_ctx_new(&cfg, err, sizeof err);
    CHECK(t != NULL);
    if (!t)
        return;
    struct client_opts good = { .ca = f->ca, .cert = f->client_cert, .key = f->client_key };
    CHECK(pair_open(&p, t, &good) == 0);
    pair_handshake(&p);
    CHECK(p.srv == 1 && p.cli == 1);
    /* TLS 1.3: the client's certificate arrives with its Finished */
    tls_conn_info(&p.c, &info);
    CHECK(info.peer_verified);
    CHECK_STR(info.peer_subject, "O=kurir tests,CN=client.test");
    const char *first = info.peer_subject;
    tls_conn_info(&p.c, &info);
    CHECK(info.peer_subject == first);          /* computed once, owned by the state */
    pair_close(&p);

    struct client_opts rogue = { .ca = f->ca, .cert = f->rogue_cert, .key = f->rogue_key };
    CHECK(pair_open(&p, t, &rogue) == 0);
    pair_handshake(&p);
    CHECK(p.srv == 1 && p.cli == 1);            /* optional: the handshake goes on */
    tls_conn_info(&p.c, &info);
    CHECK(!info.peer_verified && info.peer_subject == NULL);
    pair_close(&p);

    CHECK(pair_open(&p, t, &o) == 0);           /* no certificate at all */
    pair_handshake(&p);
    CHECK(p.srv == 1 && p.cli == 1);
    tls_conn_info(&p.c, &info);
    CHECK(!info.peer_verified && info.peer_subject == NULL);
    pair_close(&p);
    tls_ctx_free(t);

    /* client certificates required */
    cfg.client_cert = 2;
    t = tls_ctx_new(&cfg, err, sizeof err);
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK(pair_open(&p, t, &o) == 0);
    pair_handshake(&p);
    CHECK(p.srv == -1);
    CHECK(ERR_peek_error() == 0);
    pair_close(&p);
    CHECK(pair_open(&p, t, &rogue) == 0);
    pair_handshake(&p);
    CHECK(p.srv == -1);
    pair_close(&p);
    CHECK(pair_open(&p, t, &good) == 0);
    pair_handshake(&p);
    CHECK(p.srv == 1 && p.cli == 1);
    tls_conn_info(&p.c, &info);
    CHECK(info.peer_verified);
    CHECK_STR(info.peer_subject, "O=kurir tests,CN=client.test");
    pair_close(&p);
    tls_ctx_free(t);
}

static void expect_error(const struct tls_config *cfg, const char *want1, const char *want2)
{
    char err[1024] = "";
    struct tls_ctx *t = tls_ctx_new(cfg, err, sizeof err);
    CHECK(t == NULL);
    tls_ctx_free(t);
    if (getenv("TLS_TEST_VERBOSE"))
        fprintf(stderr, "error: %s\n", err);
    CHECK_CONTAINS(err, want1);
    if (want2)
        CHECK_CONTAINS(err, want2);
    CHECK(ERR_peek_error() == 0);
}

static void test_errors(const struct files *f)
{
    char want[512];
    struct tls_config cfg = { .cert_file = f->missing, .key_file = f->key };
    snprintf(want, sizeof want, "tls.cert %s: cannot read: No such file or directory", f->missing);
    expect_error(&cfg, want, NULL);

    cfg = (struct tls_config){ .cert_file = f->cert, .key_file = f->missing };
    snprintf(want, sizeof want, "tls.key %s: cannot read: No such file or directory", f->missing);
    expect_error(&cfg, want, NULL);

    cfg = (struct tls_config){ .cert_file = f->cert, .key_file = f->other_key };
    snprintf(want, sizeof want, "tls.key %s: key does not match certificate %s", f->other_key, f->cert);
    expect_error(&cfg, want, "mismatch");       /* OpenSSL's "key values mismatch" */

    cfg = (struct tls_config){ .cert_file = f->garbage, .key_file = f->key };
    snprintf(want, sizeof want, "tls.cert %s: ", f->garbage);
    expect_error(&cfg, want, "no start line");

    cfg = (struct tls_config){ .cert_file = f->cert, .key_file = f->garbage };
    snprintf(want, sizeof want, "tls.key %s: ", f->garbage);
    expect_error(&cfg, want, NULL);

    cfg = (struct tls_config){ .cert_file = f->cert, .key_file = f->key, .chain_file = f->missing };
    snprintf(want, sizeof want, "tls.chain %s: cannot read", f->missing);
    expect_error(&cfg, want, NULL);

    cfg = (struct tls_config){ .cert_file = f->cert, .key_file = f->key, .chain_file = f->garbage };
    snprintf(want, sizeof want, "tls.chain %s: ", f->garbage);
    expect_error(&cfg, want, NULL);

    cfg = (struct tls_config){ .cert_file = f->cert, .key_file = f->key, .ca_file = f->missing, .client_cert = 1 };
    snprintf(want, sizeof want, "tls.ca %s: cannot read", f->missing);
    expect_error(&cfg, want, NULL);

    cfg = (struct tls_config){ .key_file = f->key };
    expect_error(&cfg, "tls.cert", NULL);

    /* a CA file is ignored when no client certificate is asked for */
    char err[512];
    cfg = (struct tls_config){ .cert_file = f->cert, .key_file = f->key, .ca_file = f->missing };
    struct tls_ctx *t = tls_ctx_new(&cfg, err, sizeof err);
    CHECK(t != NULL);
    tls_ctx_free(t);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct files f;
    memset(&f, 0, sizeof f);
    test_self_signed();
    if (make_files(&f) == 0) {
        test_files(&f);
        test_errors(&f);
    } else {
        CHECK(!"could not make certificates with the openssl command line");
    }
    if (f.dir[0])
        remove_files(&f);
    return testutil_summary();
}
