/* testutil.h - minimal assertions for the C unit tests.
 *
 *   CHECK(cond)                      cond must be true
 *   CHECK_MEM(ptr, len, "expected")  len bytes at ptr equal the C string
 *   CHECK_BYTES(ptr, len, exp, elen) the same with an explicit length
 *   return testutil_summary();       from main: prints a count, 0 if all passed
 *
 * Each test program is its own process, so the counters live here. */
#ifndef KURIR_TESTUTIL_H
#define KURIR_TESTUTIL_H

#include <stdio.h>
#include <string.h>

static int testutil_checks;
static int testutil_failures;

static inline void testutil_dump(const char *label, const void *ptr, size_t len)
{
    const unsigned char *s = ptr;
    fprintf(stderr, "    %s (%zu): \"", label, len);
    for (size_t i = 0; i < len && i < 400; i++) {
        unsigned char c = s[i];
        if (c == '\r')
            fputs("\\r", stderr);
        else if (c == '\n')
            fputs("\\n", stderr);
        else if (c == '\\' || c == '"')
            fprintf(stderr, "\\%c", c);
        else if (c < 32 || c > 126)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputs(len > 400 ? "\"...\n" : "\"\n", stderr);
}

static inline int testutil_check(int ok, const char *what, const char *file, int line)
{
    testutil_checks++;
    if (!ok) {
        testutil_failures++;
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, what);
    }
    return ok;
}

static inline int testutil_check_bytes(const void *ptr, size_t len, const void *exp, size_t elen,
                                       const char *what, const char *file, int line)
{
    int ok = len == elen && (len == 0 || (ptr && memcmp(ptr, exp, len) == 0));
    if (!testutil_check(ok, what, file, line)) {
        testutil_dump("got", ptr ? ptr : "", ptr ? len : 0);
        testutil_dump("expected", exp, elen);
    }
    return ok;
}

static inline int testutil_summary(void)
{
    fprintf(stderr, "%d checks, %d failed\n", testutil_checks, testutil_failures);
    return testutil_failures ? 1 : 0;
}

#define CHECK(cond) testutil_check(!!(cond), #cond, __FILE__, __LINE__)
#define CHECK_BYTES(ptr, len, exp, elen) \
    testutil_check_bytes((ptr), (len), (exp), (elen), #ptr " == " #exp, __FILE__, __LINE__)
#define CHECK_MEM(ptr, len, expected) \
    testutil_check_bytes((ptr), (len), (expected), strlen(expected), #ptr " == " #expected, \
                         __FILE__, __LINE__)

#endif
