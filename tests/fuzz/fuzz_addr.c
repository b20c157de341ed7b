/* fuzz_addr.c - libFuzzer harness for core/smtp_addr.c.
 *
 * The first input byte picks what to exercise (MAIL or RCPT path, cmd
 * split, xtext, numbers, HELO check); the rest is the argument. Besides
 * the sanitizers, it checks what callers rely on: every span points inside
 * the input, an accepted path has a well-formed shape (brackets gone,
 * local "@" domain, parameters matching the esmtp-keyword / esmtp-value
 * grammar), the verdict does not depend on bytes after the input (the
 * argument is copied into an exact-size heap block), and numbers agree
 * with a plain reference conversion. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_addr.h"
#include "proto/util.h"

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "fuzz_addr: check failed: %s (line %d)\n",   \
                    #cond, __LINE__);                                    \
            abort();                                                     \
        }                                                                \
    } while (0)

static int inside(const char *base, size_t n, struct smtp_span s)
{
    if (s.len == 0)
        return s.ptr == NULL || (s.ptr >= base && s.ptr <= base + n);
    return s.ptr >= base && s.ptr + s.len <= base + n && s.ptr + s.len >= s.ptr;
}

static int has_byte(struct smtp_span s, unsigned char lo, unsigned char hi)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c >= lo && c <= hi)
            return 1;
    }
    return 0;
}

static void check_path(enum smtp_path_kind kind, const char *a, size_t n)
{
    struct smtp_path p;
    const char *why = NULL;
    enum smtp_addr_error e = smtp_path_parse(kind, a, n, &p, &why);
    CHECK(why != NULL && strlen(why) > 0);
    CHECK(e >= SMTP_ADDR_OK && e <= SMTP_ADDR_TOO_MANY_PARAMS);
    struct smtp_path again;
    CHECK(smtp_path_parse(kind, a, n, &again, NULL) == e);   /* deterministic, why optional */
    if (e != SMTP_ADDR_OK)
        return;
    CHECK(p.nparams >= 0 && p.nparams <= SMTP_MAX_PARAMS);
    CHECK(inside(a, n, p.address));
    CHECK(inside(a, n, p.local));
    CHECK(inside(a, n, p.domain));
    if (p.null_path) {
        CHECK(kind == SMTP_PATH_MAIL);
        CHECK(p.address.len == 0);
        CHECK(!p.postmaster);
    } else if (p.postmaster) {
        CHECK(kind == SMTP_PATH_RCPT);
        CHECK(p.address.len == 10 && ascii_caseeq(p.address.ptr, 10, "postmaster"));
        CHECK(p.domain.len == 0);
    } else {
        /* local "@" domain, the address being exactly those bytes */
        CHECK(p.local.len > 0 && p.domain.len > 0);
        CHECK(p.local.ptr == p.address.ptr);
        CHECK(p.local.len + 1 + p.domain.len == p.address.len);
        CHECK(p.address.ptr[p.local.len] == '@');
        CHECK(p.domain.ptr == p.address.ptr + p.local.len + 1);
        /* no brackets, spaces or controls leak into a mailbox */
        if (p.local.ptr[0] != '"') {
            CHECK(!has_byte(p.local, 0, 32));
            CHECK(memchr(p.local.ptr, '<', p.local.len) == NULL);
            CHECK(memchr(p.local.ptr, '>', p.local.len) == NULL);
        }
        CHECK(!has_byte(p.domain, 0, 32));
        CHECK(p.domain.ptr[0] == '[' || memchr(p.domain.ptr, '>', p.domain.len) == NULL);
        CHECK(p.domain.ptr[0] == '[' || memchr(p.domain.ptr, '<', p.domain.len) == NULL);
        CHECK(memchr(p.domain.ptr, '@', p.domain.len) == NULL || p.domain.ptr[0] == '[');
        CHECK(p.utf8 == has_byte(p.address, 0x80, 0xFF));
    }
    CHECK(!has_byte(p.address, 0, 31));   /* no CR/LF/NUL in an accepted address */
    for (int i = 0; i < p.nparams; i++) {
        const struct smtp_param *pr = &p.params[i];
        CHECK(inside(a, n, pr->key));
        CHECK(pr->key.len > 0);
        for (size_t k = 0; k < pr->key.len; k++) {
            unsigned char c = (unsigned char)pr->key.ptr[k];
            CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c == '-' && k > 0));
        }
        if (pr->value.ptr) {
            CHECK(inside(a, n, pr->value));
            CHECK(pr->value.len > 0);
            CHECK(!has_byte(pr->value, 0, 32) && !has_byte(pr->value, 127, 127));
            CHECK(memchr(pr->value.ptr, '=', pr->value.len) == NULL);
        }
        CHECK(smtp_path_param(&p, "") == NULL);
        char key[64];
        if (pr->key.len < sizeof(key)) {
            memcpy(key, pr->key.ptr, pr->key.len);
            key[pr->key.len] = '\0';
            const struct smtp_param *found = smtp_path_param(&p, key);
            CHECK(found != NULL && found <= pr);
        }
    }
}

static void check_split(const char *a, size_t n)
{
    struct smtp_span verb, arg;
    smtp_cmd_split(a, n, &verb, &arg);
    CHECK(verb.ptr == a && verb.len <= n);
    CHECK(memchr(verb.ptr, ' ', verb.len) == NULL);
    CHECK(inside(a, n, arg));
    if (arg.len) {
        CHECK(arg.ptr[0] != ' ' && arg.ptr[arg.len - 1] != ' ');
        CHECK(arg.ptr > verb.ptr + verb.len);
    }
    if (verb.len == n)
        CHECK(arg.len == 0);
}

static void check_xtext(const char *a, size_t n, size_t cap)
{
    char *out = xmalloc(cap ? cap : 1);
    long r = smtp_xtext_decode(a, n, out, cap);
    CHECK(r >= -1);
    if (r >= 0) {
        CHECK((size_t)r <= cap && (size_t)r <= n);
        /* reference decode */
        size_t o = 0;
        for (size_t i = 0; i < n; o++) {
            char c;
            if (a[i] == '+') {
                CHECK(i + 2 < n);
                char hex[3] = { a[i + 1], a[i + 2], 0 };
                CHECK(strspn(hex, "0123456789ABCDEF") == 2);
                c = (char)strtol(hex, NULL, 16);
                i += 3;
            } else {
                CHECK((unsigned char)a[i] >= 33 && (unsigned char)a[i] <= 126 && a[i] != '=');
                c = a[i++];
            }
            CHECK(o < (size_t)r && out[o] == c);
        }
        CHECK(o == (size_t)r);
    }
    free(out);
}

static void check_u64(const char *a, size_t n, unsigned long long max)
{
    unsigned long long v = 12345;
    bool ok = smtp_parse_u64(a, n, max, &v);
    /* reference: 1..20 digits, value fits, <= max */
    bool ref_ok = n >= 1 && n <= 20;
    unsigned long long ref = 0;
    for (size_t i = 0; ref_ok && i < n; i++) {
        if (a[i] < '0' || a[i] > '9') {
            ref_ok = false;
            break;
        }
        unsigned d = (unsigned)(a[i] - '0');
        if (ref > ULLONG_MAX / 10 || ref * 10 > ULLONG_MAX - d)
            ref_ok = false;
        else
            ref = ref * 10 + d;
    }
    if (ref_ok && ref > max)
        ref_ok = false;
    CHECK(ok == ref_ok);
    if (ok)
        CHECK(v == ref);
    else
        CHECK(v == 12345);   /* untouched on failure */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    size_t n = size - 1;
    /* exact-size copy so that ASan sees any read past the argument */
    char *a = xmalloc(n ? n : 1);
    memcpy(a, data + 1, n);
    const char *arg = n ? a : a + 1;   /* n == 0: pointer one past, never read */
    switch (sel % 6) {
    case 0:
        check_path(SMTP_PATH_MAIL, arg, n);
        break;
    case 1:
        check_path(SMTP_PATH_RCPT, arg, n);
        break;
    case 2:
        check_split(arg, n);
        if (n > 5 && ascii_casecmp(arg, "MAIL ", 5))
            check_path(SMTP_PATH_MAIL, arg + 5, n - 5);
        break;
    case 3:
        check_xtext(arg, n, (sel >> 3) % 8 == 0 ? n : (sel >> 3) % 8);
        break;
    case 4:
        check_u64(arg, n, (sel & 0x80) ? ~0ull : 100000);
        break;
    case 5:
        (void)smtp_valid_helo(arg, n);
        check_path(SMTP_PATH_RCPT, arg, n);
        break;
    }
    free(a);
    return 0;
}
