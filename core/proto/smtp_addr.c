/* smtp_addr.c - grammar of command arguments: verb/argument split, MAIL and
 * RCPT paths with ESMTP parameters (RFC 5321 4.1.2, RFC 6531 UTF-8), RFC 3461
 * xtext, decimal numbers, HELO/EHLO argument check.
 *
 * Pure functions over (ptr, len); results point into the caller's input and
 * nothing is allocated. Uses util.h (ASCII case helpers) and inet_pton for
 * IPv6 literals. */
#include "proto/smtp_addr.h"
#include "proto/util.h"

#include <arpa/inet.h>
#include <limits.h>
#include <string.h>

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(unsigned char c)
{
    return is_alpha(c) || is_digit(c);
}

/* Length of the well-formed UTF-8 sequence (RFC 3629) at s, 0 if none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;   /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

void smtp_cmd_split(const char *line, size_t len, struct smtp_span *verb, struct smtp_span *arg)
{
    const char *sp = memchr(line, ' ', len);
    const char *end = line + len;
    if (!sp) {
        verb->ptr = line;
        verb->len = len;
        arg->ptr = end;
        arg->len = 0;
        return;
    }
    verb->ptr = line;
    verb->len = (size_t)(sp - line);
    const char *a = sp;
    while (a < end && *a == ' ')
        a++;
    while (end > a && end[-1] == ' ')
        end--;
    arg->ptr = a;
    arg->len = (size_t)(end - a);
}

/* Domain: dot-separated non-empty labels of letters, digits, '-', '_' and
 * UTF-8 (U-labels). Lenient on purpose: real DNS names carry '_' and
 * hyphens in odd places; the command line limit bounds the length. */
static bool is_domain_char(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '_';
}

/* Non-empty parts of ASCII chars accepted by unit_ok, or UTF-8
 * sequences, separated by single dots. */
static bool dotted_ok(const char *s, size_t n, bool (*unit_ok)(unsigned char))
{
    size_t part = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (part == 0)
                return false;
            part = 0;
            i++;
        } else if (c >= 0x80) {
            size_t k = utf8_seq((const unsigned char *)s + i, n - i);
            if (!k)
                return false;
            i += k;
            part += k;
        } else if (unit_ok(c)) {
            i++;
            part++;
        } else {
            return false;
        }
    }
    return part > 0;
}

static bool domain_ok(const char *s, size_t n, bool trailing_dot)
{
    if (trailing_dot && n > 1 && s[n - 1] == '.')
        n--;
    return n > 0 && dotted_ok(s, n, is_domain_char);
}

/* RFC 5321 IPv4-address-literal body: Snum 3("." Snum), Snum = 1*3DIGIT <= 255. */
static bool ipv4_ok(const char *s, size_t n)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= n || s[i] != '.')
                return false;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < n && is_digit((unsigned char)s[i]) && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        if (i == start || v > 255)
            return false;
    }
    return i == n;
}

/* "[...]" incl. brackets: IPv4, "IPv6:" + address, or General-address-literal. */
static bool literal_ok(const char *s, size_t n)
{
    if (n < 3 || s[0] != '[' || s[n - 1] != ']')
        return false;
    s++;
    n -= 2;
    if (ipv4_ok(s, n))
        return true;
    const char *colon = memchr(s, ':', n);
    if (!colon || colon == s)
        return false;
    size_t tag = (size_t)(colon - s);
    const char *body = colon + 1;
    size_t blen = n - tag - 1;
    if (ascii_caseeq(s, tag, "IPv6")) {
        char tmp[INET6_ADDRSTRLEN + 1];
        unsigned char addr[16];
        if (blen == 0 || blen >= sizeof(tmp))
            return false;
        /* inet_pton stops at a NUL: only hex digits, ':' and '.' may pass */
        for (size_t i = 0; i < blen; i++)
            if (!is_alnum((unsigned char)body[i]) && body[i] != ':' && body[i] != '.')
                return false;
        memcpy(tmp, body, blen);
        tmp[blen] = '\0';
        return inet_pton(AF_INET6, tmp, addr) == 1;
    }
    /* Standardized-tag = Ldh-str; dcontent = %d33-90 / %d94-126 */
    for (size_t i = 0; i < tag; i++)
        if (!is_alnum((unsigned char)s[i]) && s[i] != '-')
            return false;
    if (s[tag - 1] == '-' || blen == 0)
        return false;
    for (size_t i = 0; i < blen; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c < 33 || c > 126 || (c >= 91 && c <= 93))
            return false;
    }
    return true;
}

static bool is_atext(unsigned char c)
{
    return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Length of a Quoted-string starting at s[0] == '"', incl. both quotes;
 * 0 if malformed or unterminated. */
static size_t quoted_len(const char *s, size_t n)
{
    size_t i = 1;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            return i + 1;
        if (c == '\\') {
            if (i + 1 >= n || (unsigned char)s[i + 1] < 32 || (unsigned char)s[i + 1] > 126)
                return 0;
            i += 2;
        } else if (c >= 0x80) {
            size_t k = utf8_seq((const unsigned char *)s + i, n - i);
            if (!k)
                return 0;
            i += k;
        } else if (c >= 32 && c <= 126) {
            i++;
        } else {
            return 0;
        }
    }
    return 0;
}

/* Dot-string = Atom *("." Atom), atext extended with UTF-8 (RFC 6531). */
static bool dot_string_ok(const char *s, size_t n)
{
    return dotted_ok(s, n, is_atext);
}

/* A-d-l ":" = "@" Domain *("," "@" Domain) ":" at the start of s.
 * Returns its length incl. the colon, 0 if malformed. */
static size_t source_route_len(const char *s, size_t n)
{
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return 0;
    size_t end = (size_t)(colon - s);
    size_t i = 0;
    while (i < end) {
        if (s[i] != '@')
            return 0;
        i++;
        const char *comma = memchr(s + i, ',', end - i);
        size_t dend = comma ? (size_t)(comma - s) : end;
        if (!domain_ok(s + i, dend - i, false))
            return 0;
        i = comma ? dend + 1 : dend;
        if (comma && i >= end)
            return 0;
    }
    return end + 1;
}

static enum smtp_addr_error fail(const char **why, enum smtp_addr_error err, const char *text)
{
    if (why)
        *why = text;
    return err;
}

static bool keyword_ok(const char *s, size_t n)
{
    if (n == 0 || !is_alnum((unsigned char)s[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!is_alnum((unsigned char)s[i]) && s[i] != '-')
            return false;
    return true;
}

/* esmtp-value = 1*(%d33-60 / %d62-126 / UTF-8) */
static bool value_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t k = utf8_seq((const unsigned char *)s + i, n - i);
            if (!k)
                return false;
            i += k;
        } else if (c >= 33 && c <= 126 && c != '=') {
            i++;
        } else {
            return false;
        }
    }
    return true;
}

static enum smtp_addr_error parse_params(const char *s, size_t n, struct smtp_path *out,
                                         const char **why)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && s[i] == ' ')
            i++;
        if (i >= n)
            break;
        size_t start = i;
        while (i < n && s[i] != ' ')
            i++;
        if (out->nparams >= SMTP_MAX_PARAMS)
            return fail(why, SMTP_ADDR_TOO_MANY_PARAMS, "too many parameters");
        const char *tok = s + start;
        size_t tlen = i - start;
        const char *eq = memchr(tok, '=', tlen);
        struct smtp_param *prm = &out->params[out->nparams];
        prm->key.ptr = tok;
        prm->key.len = eq ? (size_t)(eq - tok) : tlen;
        prm->value.ptr = NULL;
        prm->value.len = 0;
        if (!keyword_ok(prm->key.ptr, prm->key.len))
            return fail(why, SMTP_ADDR_BAD_PARAM, "malformed parameter keyword");
        if (eq) {
            prm->value.ptr = eq + 1;
            prm->value.len = tlen - prm->key.len - 1;
            if (!value_ok(prm->value.ptr, prm->value.len))
                return fail(why, SMTP_ADDR_BAD_PARAM, "malformed parameter value");
        }
        out->nparams++;
    }
    return SMTP_ADDR_OK;
}

/* Mailbox (or "postmaster" for RCPT) between the brackets, source route gone. */
static enum smtp_addr_error parse_mailbox(enum smtp_path_kind kind, const char *p, size_t n,
                                          struct smtp_path *out, const char **why)
{
    out->address.ptr = p;
    out->address.len = n;
    if (ascii_caseeq(p, n, "postmaster")) {
        if (kind != SMTP_PATH_RCPT)
            return fail(why, SMTP_ADDR_BAD_ADDRESS, "address must have a domain");
        out->postmaster = true;
        out->local = out->address;
        out->domain.ptr = p + n;
        out->domain.len = 0;
        return SMTP_ADDR_OK;
    }

    size_t at;
    if (n > 0 && p[0] == '"') {
        at = quoted_len(p, n);
        if (at == 0)
            return fail(why, SMTP_ADDR_BAD_ADDRESS, "malformed quoted local part");
    } else {
        const char *a = memchr(p, '@', n);
        at = a ? (size_t)(a - p) : n;
        if (!dot_string_ok(p, at))
            return fail(why, SMTP_ADDR_BAD_ADDRESS, "malformed local part");
    }
    if (at >= n || p[at] != '@')
        return fail(why, SMTP_ADDR_BAD_ADDRESS, "address must have a domain");
    out->local.ptr = p;
    out->local.len = at;
    out->domain.ptr = p + at + 1;
    out->domain.len = n - at - 1;
    const char *d = out->domain.ptr;
    size_t dn = out->domain.len;
    bool ok = (dn > 0 && d[0] == '[') ? literal_ok(d, dn) : domain_ok(d, dn, false);
    if (!ok)
        return fail(why, SMTP_ADDR_BAD_ADDRESS, "malformed domain");
    return SMTP_ADDR_OK;
}

enum smtp_addr_error smtp_path_parse(enum smtp_path_kind kind, const char *arg, size_t len,
                                     struct smtp_path *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (why)
        *why = "ok";
    const char *kw = kind == SMTP_PATH_MAIL ? "FROM:" : "TO:";
    size_t kwlen = strlen(kw);
    if (len < kwlen || !ascii_casecmp(arg, kw, kwlen))
        return fail(why, SMTP_ADDR_SYNTAX,
                    kind == SMTP_PATH_MAIL ? "expected FROM:<address>" : "expected TO:<address>");
    size_t i = kwlen;
    if (i < len && arg[i] == ' ')
        i++;   /* common client bug, tolerated once */
    if (i >= len || arg[i] != '<')
        return fail(why, SMTP_ADDR_SYNTAX, "address must be enclosed in <>");

    /* The first '>' outside a quoted string closes the path. */
    size_t open = i;
    size_t close = SIZE_MAX;
    bool quoted = false;
    for (i = open + 1; i < len; i++) {
        char c = arg[i];
        if (quoted) {
            if (c == '\\' && i + 1 < len)
                i++;
            else if (c == '"')
                quoted = false;
        } else if (c == '"') {
            quoted = true;
        } else if (c == '>') {
            close = i;
            break;
        }
    }
    if (close == SIZE_MAX)
        return fail(why, SMTP_ADDR_SYNTAX, "address must be enclosed in <>");
    if (close + 1 < len && arg[close + 1] != ' ')
        return fail(why, SMTP_ADDR_SYNTAX, "unexpected characters after address");

    const char *p = arg + open + 1;
    size_t n = close - open - 1;
    if (n == 0) {
        if (kind != SMTP_PATH_MAIL)
            return fail(why, SMTP_ADDR_BAD_ADDRESS, "null path not allowed here");
        out->null_path = true;
        out->address.ptr = out->local.ptr = out->domain.ptr = p;
    } else {
        if (p[0] == '@') {
            size_t r = source_route_len(p, n);
            if (r == 0)
                return fail(why, SMTP_ADDR_BAD_ADDRESS, "malformed source route");
            p += r;
            n -= r;
        }
        enum smtp_addr_error err = parse_mailbox(kind, p, n, out, why);
        if (err != SMTP_ADDR_OK)
            return err;
        for (size_t k = 0; k < n; k++) {
            if ((unsigned char)p[k] >= 0x80) {
                out->utf8 = true;
                break;
            }
        }
    }
    return parse_params(arg + close + 1, len - close - 1, out, why);
}

const struct smtp_param *smtp_path_param(const struct smtp_path *path, const char *key)
{
    for (int i = 0; i < path->nparams; i++)
        if (ascii_caseeq(path->params[i].key.ptr, path->params[i].key.len, key))
            return &path->params[i];
    return NULL;
}

static int hex_upper(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long smtp_xtext_decode(const char *in, size_t len, char *out, size_t outcap)
{
    size_t o = 0;
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)in[i];
        int byte;
        if (c == '+') {
            if (len - i < 3)
                return -1;
            int hi = hex_upper((unsigned char)in[i + 1]);
            int lo = hex_upper((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            byte = hi * 16 + lo;
            i += 3;
        } else if (c >= 33 && c <= 126 && c != '=') {
            byte = c;
            i++;
        } else {
            return -1;
        }
        if (o >= outcap || o >= (size_t)LONG_MAX)
            return -1;
        out[o++] = (char)byte;
    }
    return (long)o;
}

bool smtp_parse_u64(const char *s, size_t len, unsigned long long max, unsigned long long *out)
{
    if (len == 0 || len > 20)
        return false;
    unsigned long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit((unsigned char)s[i]))
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

bool smtp_valid_helo(const char *s, size_t len)
{
    if (len == 0)
        return false;
    if (s[0] == '[')
        return literal_ok(s, len);
    return domain_ok(s, len, true);
}
