/* smtp_addr.h - pure parsing of command arguments (RFC 5321 4.1.2, RFC 6531).
 *
 *   smtp_cmd_split("MAIL FROM:<a@b> SIZE=10") -> verb "MAIL", arg "FROM:<a@b> SIZE=10"
 *   smtp_path_parse(arg after "FROM:" / "TO:")  -> mailbox + ESMTP parameters
 *
 * Accepts: null path "<>" (MAIL only), "<postmaster>" (RCPT only, no domain),
 * quoted local parts ("a b"@example.test; the stored address keeps the
 * quotes as sent), address literals (user@[192.0.2.1], user@[IPv6:...]),
 * source routes "<@a,@b:user@c>" (tolerated, dropped, RFC 5321 C),
 * UTF-8 in local part and domain (SMTPUTF8). Space between "FROM:" and "<"
 * is tolerated (common client bug). Parameters "KEY" or "KEY=VALUE",
 * esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"),
 * esmtp-value = 1*(%d33-60 / %d62-126 / UTF-8) (no "=", no SP, no controls).
 * Pointers in results point into the input; nothing is allocated. */
#ifndef KURIR_SMTP_ADDR_H
#define KURIR_SMTP_ADDR_H

#include <stddef.h>
#include <stdbool.h>

#define SMTP_MAX_PARAMS 16

struct smtp_span {
    const char *ptr;
    size_t len;
};

/* Split a command line at the first SP. verb is the bytes before it, arg
 * the bytes after it (leading SPs skipped, trailing SPs dropped).
 * A line with no SP: arg.len == 0. */
void smtp_cmd_split(const char *line, size_t len, struct smtp_span *verb, struct smtp_span *arg);

struct smtp_param {
    struct smtp_span key;
    struct smtp_span value;   /* ptr == NULL when the parameter has no "=" */
};

struct smtp_path {
    struct smtp_span address; /* without <> and source route; len 0 for <> */
    struct smtp_span local;   /* local part as sent (quotes kept) */
    struct smtp_span domain;  /* after the last unquoted '@'; len 0 if none */
    bool null_path;           /* "<>" */
    bool postmaster;          /* "<postmaster>" without domain */
    bool utf8;                /* address has octets >= 0x80 */
    int nparams;
    struct smtp_param params[SMTP_MAX_PARAMS];
};

enum smtp_path_kind { SMTP_PATH_MAIL, SMTP_PATH_RCPT };

enum smtp_addr_error {
    SMTP_ADDR_OK = 0,
    SMTP_ADDR_SYNTAX,         /* -> 501 5.5.4 Syntax: MAIL FROM:<address> */
    SMTP_ADDR_BAD_ADDRESS,    /* -> 501 5.1.3 (MAIL: 5.1.7, RCPT: 5.1.3) bad address syntax */
    SMTP_ADDR_BAD_PARAM,      /* -> 501 5.5.4 malformed parameter */
    SMTP_ADDR_TOO_MANY_PARAMS /* -> 501 5.5.4 */
};

/* arg is the whole argument of MAIL or RCPT ("FROM:<...> params" /
 * "TO:<...> params"); the "FROM:"/"TO:" keyword is checked case-insensitively.
 * Returns SMTP_ADDR_OK or an error; *why gets a short static explanation. */
enum smtp_addr_error smtp_path_parse(enum smtp_path_kind kind, const char *arg, size_t len,
                                     struct smtp_path *out, const char **why);

/* Find a parameter by keyword (case-insensitive). NULL if absent. */
const struct smtp_param *smtp_path_param(const struct smtp_path *path, const char *key);

/* Decode an RFC 3461 xtext value (used by AUTH= and ENVID) into out
 * (capacity outcap). Returns decoded length, or -1 on malformed xtext. */
long smtp_xtext_decode(const char *in, size_t len, char *out, size_t outcap);

/* Parse a decimal size (SIZE=, BDAT n) without overflow. false if not
 * 1..20 digits or above max. */
bool smtp_parse_u64(const char *s, size_t len, unsigned long long max, unsigned long long *out);

/* Domain/address-literal check for HELO/EHLO arguments (lenient: RFC 5321
 * domain or address literal, plus UTF-8 labels). */
bool smtp_valid_helo(const char *s, size_t len);

#endif
