/* sasl.h - SMTP AUTH mechanisms (RFC 4954): PLAIN (RFC 4616), LOGIN,
 * CRAM-MD5 (RFC 2195). Pure state machine: the session hands it the AUTH
 * argument and each client response line; it answers with a challenge to
 * send (334 + base64) or a result. Uses OpenSSL libcrypto for base64,
 * random bytes and HMAC-MD5; no sockets. */
#ifndef KURIR_SASL_H
#define KURIR_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include "proto/util.h"

enum sasl_mech { SASL_NONE = 0, SASL_PLAIN, SASL_LOGIN, SASL_CRAM_MD5 };

enum sasl_result {
    SASL_CONTINUE,      /* send "334 " + challenge (already base64) */
    SASL_DONE,          /* credentials complete: call the auth hook / verify */
    SASL_ERR_MECH,      /* 504 5.5.4 unknown or disabled mechanism */
    SASL_ERR_BASE64,    /* 501 5.5.2 cannot decode */
    SASL_ERR_CANCEL,    /* 501 5.0.0 client sent "*" */
    SASL_ERR_SYNTAX,    /* 501 5.5.4 decoded but malformed (e.g. PLAIN without two NULs) */
};

struct sasl {
    enum sasl_mech mech;
    int step;
    char *authzid;      /* PLAIN authorization identity, may be "" */
    char *user;         /* authentication identity (NUL-terminated; NUL bytes inside are rejected) */
    char *password;     /* PLAIN/LOGIN; NULL for CRAM-MD5 */
    char *challenge;    /* CRAM-MD5 challenge as sent (decoded) */
    char digest[33];    /* CRAM-MD5 hex digest from the client, lowercased */
};

enum sasl_mech sasl_mech_from_name(const char *name, size_t len);  /* case-insensitive */
const char *sasl_mech_name(enum sasl_mech m);

/* Begin: arg is the AUTH argument after the mechanism name (initial
 * response, may be "=" for an empty one), has_initial false when absent.
 * hostname goes into the CRAM-MD5 challenge. challenge_out receives the
 * base64 text of a 334 reply (may be empty). */
enum sasl_result sasl_start(struct sasl *s, enum sasl_mech mech, const char *initial, size_t ilen,
                            bool has_initial, const char *hostname, struct buf *challenge_out);
/* One client response line (without CRLF). */
enum sasl_result sasl_step(struct sasl *s, const char *line, size_t len, struct buf *challenge_out);

/* Check a plaintext secret against what the client sent, for every
 * mechanism; constant-time compare. */
bool sasl_verify(const struct sasl *s, const char *secret, size_t slen);

/* Free strings, back to SASL_NONE. Passwords are wiped before free. */
void sasl_reset(struct sasl *s);

/* Strict base64 (RFC 4648, padding required, no whitespace). Return decoded
 * length or -1. out must hold (len / 4) * 3 bytes. */
long sasl_b64_decode(const char *in, size_t len, unsigned char *out);
void sasl_b64_encode(struct buf *out, const unsigned char *in, size_t len);

#endif
