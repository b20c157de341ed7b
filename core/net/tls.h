/* tls.h - OpenSSL 3 server contexts and the TLS transport for conn.
 *
 * A tls_ctx is made once per configuration (and again on SIGHUP) from
 * certificate/key/chain files, or self-signed in memory for the mock.
 * tls_transport plugs into conn_start_handshake(): non-blocking handshake,
 * read and write with want-read/want-write, SSL_pending. */
#ifndef KURIR_TLS_H
#define KURIR_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include "net/conn.h"

struct tls_config {
    const char *cert_file;      /* PEM certificate (may contain the chain) */
    const char *key_file;       /* PEM private key */
    const char *chain_file;     /* optional extra chain PEM */
    const char *ca_file;        /* optional CA bundle to verify client certificates */
    bool self_signed;           /* make a self-signed cert for hostname in memory */
    const char *hostname;       /* CN/SAN of the self-signed certificate */
    int client_cert;            /* 0 none, 1 request (optional), 2 require */
};

struct tls_ctx;

/* NULL on failure, with a message naming the file (and OpenSSL's reason)
 * in err. */
struct tls_ctx *tls_ctx_new(const struct tls_config *cfg, char *err, size_t errlen);
/* Make the session-ticket keys that every later context uses (call before
 * forking workers, so that they all accept each other's tickets, also
 * across reloads). -1 when no random bytes could be had. */
int tls_share_ticket_keys(void);
void tls_ctx_free(struct tls_ctx *t);

/* Per-connection TLS state for conn_start_handshake(c, &tls_transport, state). */
void *tls_conn_new(struct tls_ctx *t, int fd);
extern const struct conn_transport tls_transport;

/* After the handshake: "TLSv1.3", cipher name, bits, verified client
 * certificate subject (NULL when none / not verified). */
struct tls_info {
    const char *version;
    const char *cipher;
    int bits;
    const char *peer_subject;   /* one-line RFC 2253 form, owned by tls state */
    bool peer_verified;
};
void tls_conn_info(struct conn *c, struct tls_info *out);

#endif
