/* test_logfmt.c - exact logfmt output: the time field's shape, bare and
 * quoted values, every escape, UTF-8 pass-through, keys, numbers, and that
 * logfmt_emit() puts one whole line on the fd and resets the buffer; every
 * single byte value, alone and between letters, against the rule written
 * out (bare, quoted, escaped). */
#include "proto/logfmt.h"
#include "testutil.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* logfmt_value over n bytes must give exactly `expected`. */
#define CHECK_VAL(val, n, expected)                                \
    do {                                                            \
        struct buf b_;                                              \
        buf_init(&b_);                                              \
        logfmt_value(&b_, (val), (n));                              \
        CHECK_MEM(buf_peek(&b_), buf_used(&b_), (expected));        \
        buf_free(&b_);                                              \
    } while (0)
#define CHECK_SVAL(val, expected) CHECK_VAL((val), strlen(val), (expected))

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "time=YYYY-MM-DDTHH:MM:SS.mmmZ" (29 bytes): shape and plausible ranges. */
static bool time_field_ok(const char *p, size_t n)
{
    static const char shape[] = "time=dddd-dd-ddTdd:dd:dd.dddZ";
    if (n < sizeof(shape) - 1)
        return false;
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        if (shape[i] == 'd' ? !is_digit(p[i]) : p[i] != shape[i])
            return false;
    }
    int year = atoi(p + 5), mon = atoi(p + 10), day = atoi(p + 13);
    int hh = atoi(p + 16), mm = atoi(p + 19), ss = atoi(p + 22);
    return year >= 2024 && mon >= 1 && mon <= 12 && day >= 1 && day <= 31 && hh < 24 && mm < 60 &&
           ss < 61;
}

static void test_begin(void)
{
    struct buf b;
    buf_init(&b);
    logfmt_begin(&b, "info", "a1b2c3", "connect");
    CHECK(time_field_ok(buf_peek(&b), buf_used(&b)));
    CHECK(buf_used(&b) > 29);
    if (buf_used(&b) > 29)
        CHECK_MEM(buf_peek(&b) + 29, buf_used(&b) - 29, " level=info session=a1b2c3 event=connect");
    buf_free(&b);

    /* No session: the field is left out. */
    buf_init(&b);
    logfmt_begin(&b, "warn", NULL, "startup");
    CHECK(time_field_ok(buf_peek(&b), buf_used(&b)));
    if (buf_used(&b) > 29)
        CHECK_MEM(buf_peek(&b) + 29, buf_used(&b) - 29, " level=warn event=startup");
    buf_free(&b);

    /* Even the fixed fields are escaped. */
    buf_init(&b);
    logfmt_begin(&b, "info", "x y", "a=b");
    if (CHECK(buf_used(&b) > 29))
        CHECK_MEM(buf_peek(&b) + 29, buf_used(&b) - 29,
                  " level=info session=\"x y\" event=\"a=b\"");
    buf_free(&b);
}

static void test_bare(void)
{
    CHECK_SVAL("hello", "hello");
    CHECK_SVAL("user@example.test", "user@example.test");
    CHECK_SVAL("<a@b>", "<a@b>");
    CHECK_SVAL("127.0.0.1:2525", "127.0.0.1:2525");
    CHECK_SVAL("!#$%&'()*+,-./:;<>?@[]^_`{|}~", "!#$%&'()*+,-./:;<>?@[]^_`{|}~");
}

static void test_quoted(void)
{
    CHECK_SVAL("", "\"\"");
    CHECK_VAL(NULL, 0, "\"\"");
    CHECK_SVAL("two words", "\"two words\"");
    CHECK_SVAL("a=b", "\"a=b\"");
    CHECK_SVAL("say \"hi\"", "\"say \\\"hi\\\"\"");
    CHECK_SVAL("back\\slash", "\"back\\\\slash\"");
    CHECK_SVAL("\"", "\"\\\"\"");
    CHECK_SVAL(" ", "\" \"");
    /* Line forgery: the newline and the fake fields stay inside one value. */
    CHECK_SVAL("x\nlevel=error event=fake", "\"x\\nlevel=error event=fake\"");
    CHECK_SVAL("a\r\nb\tc", "\"a\\r\\nb\\tc\"");
    /* Other control bytes and DEL as \xNN, NUL included. */
    CHECK_VAL("a\0b\x01\x1b\x7f", 6, "\"a\\x00b\\x01\\x1b\\x7f\"");
    CHECK_VAL("\0", 1, "\"\\x00\"");
}

static void test_utf8(void)
{
    /* Well-formed UTF-8 passes through, inside quotes. */
    CHECK_SVAL("caf\xc3\xa9", "\"caf\xc3\xa9\"");
    CHECK_SVAL("\xe2\x82\xac 5", "\"\xe2\x82\xac 5\"");
    CHECK_SVAL("\xf0\x9f\x93\xa7", "\"\xf0\x9f\x93\xa7\"");
    CHECK_SVAL("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");   /* U+10FFFF */
    /* Not UTF-8: every offending byte as \xNN. */
    CHECK_SVAL("\xff", "\"\\xff\"");
    CHECK_SVAL("a\x80z", "\"a\\x80z\"");                       /* lone continuation */
    CHECK_SVAL("\xc3", "\"\\xc3\"");                           /* truncated at end */
    CHECK_SVAL("\xc3(", "\"\\xc3(\"");                         /* bad continuation */
    CHECK_SVAL("\xc0\xaf", "\"\\xc0\\xaf\"");                  /* overlong '/' */
    CHECK_SVAL("\xe0\x80\xaf", "\"\\xe0\\x80\\xaf\"");         /* overlong 3-byte */
    CHECK_SVAL("\xed\xa0\x80", "\"\\xed\\xa0\\x80\"");         /* surrogate U+D800 */
    CHECK_SVAL("\xf4\x90\x80\x80", "\"\\xf4\\x90\\x80\\x80\""); /* above U+10FFFF */
    CHECK_SVAL("\xe2\x82", "\"\\xe2\\x82\"");                  /* truncated 3-byte */
    /* C1 controls (U+0085 NEL is a line break to some readers) are escaped. */
    CHECK_SVAL("a\xc2\x85" "b", "\"a\\xc2\\x85b\"");
    CHECK_SVAL("\xc2\xa0", "\"\xc2\xa0\"");                    /* U+00A0 is fine */
}

static void test_fields(void)
{
    struct buf b;
    buf_init(&b);
    logfmt_str(&b, "from", "<a@b.test>");
    logfmt_mem(&b, "helo", "evil\nhost", 9);
    logfmt_mem(&b, "part", "abcdef", 3);
    logfmt_int(&b, "size", 12345);
    logfmt_int(&b, "neg", -7);
    logfmt_int(&b, "max", 9223372036854775807LL);
    logfmt_dbl(&b, "dur", 0.12349);
    logfmt_dbl(&b, "big", 1234.5);
    logfmt_str(&b, "none", NULL);
    CHECK_MEM(buf_peek(&b), buf_used(&b),
              " from=<a@b.test> helo=\"evil\\nhost\" part=abc size=12345 neg=-7"
              " max=9223372036854775807 dur=0.123 big=1234.500 none=\"\"");
    buf_free(&b);

    /* Keys cannot forge fields either. */
    buf_init(&b);
    logfmt_str(&b, "a b=c\n", "v");
    logfmt_str(&b, "", "v");
    logfmt_str(&b, "ok_key.x-1", "v");
    CHECK_MEM(buf_peek(&b), buf_used(&b), " a_b_c_=v _=v ok_key.x-1=v");
    buf_free(&b);
}

static void test_emit(void)
{
    int fds[2];
    if (!CHECK(pipe2(fds, O_CLOEXEC) == 0))
        return;
    struct buf b;
    buf_init(&b);
    logfmt_begin(&b, "info", "s1", "data");
    logfmt_str(&b, "msg", "line one\nline two");
    size_t before = buf_used(&b);
    logfmt_emit(&b, fds[1]);
    CHECK(buf_used(&b) == 0);

    /* The buffer is reusable after emit. */
    logfmt_begin(&b, "error", NULL, "second");
    logfmt_emit(&b, fds[1]);
    close(fds[1]);

    char got[1024];
    size_t n = 0;
    for (int i = 0; i < 100 && n < sizeof(got); i++) {
        ssize_t r = read(fds[0], got + n, sizeof(got) - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fds[0]);

    /* Exactly two lines, each ending in one newline. */
    const char *nl1 = memchr(got, '\n', n);
    CHECK(nl1 != NULL && (size_t)(nl1 - got) == before);
    if (nl1) {
        CHECK(time_field_ok(got, n));
        CHECK_MEM(got + 29, (size_t)(nl1 - got) + 1 - 29,
                  " level=info session=s1 event=data msg=\"line one\\nline two\"\n");
        const char *l2 = nl1 + 1;
        size_t l2n = n - (size_t)(l2 - got);
        CHECK(time_field_ok(l2, l2n));
        if (l2n > 29)
            CHECK_MEM(l2 + 29, l2n - 29, " level=error event=second\n");
    }
    buf_free(&b);

    /* A bad fd is not fatal and still resets the buffer. */
    buf_init(&b);
    logfmt_begin(&b, "info", NULL, "x");
    logfmt_emit(&b, -1);
    CHECK(buf_used(&b) == 0);
    buf_free(&b);
}

/* the rule, byte by byte: what logfmt_value must make of "a" c "b" for an
 * ASCII byte c (and of c alone) */
static void test_every_byte(void)
{
    for (int c = 0; c < 0x80; c++) {
        char in[3] = { 'a', (char)c, 'b' };
        char want[16];
        size_t wn = 0;
        bool bare = c > 0x20 && c < 0x7f && c != '"' && c != '=' && c != '\\';
        if (!bare)
            want[wn++] = '"';
        want[wn++] = 'a';
        if (c == '"' || c == '\\') {
            want[wn++] = '\\';
            want[wn++] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            want[wn++] = '\\';
            want[wn++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20 || c == 0x7f) {
            want[wn++] = '\\';
            want[wn++] = 'x';
            want[wn++] = "0123456789abcdef"[c >> 4];
            want[wn++] = "0123456789abcdef"[c & 15];
        } else {
            want[wn++] = (char)c;
        }
        want[wn++] = 'b';
        if (!bare)
            want[wn++] = '"';
        struct buf b;
        buf_init(&b);
        logfmt_value(&b, in, 3);
        CHECK_BYTES(buf_peek(&b), buf_used(&b), want, wn);
        buf_free(&b);
    }
    for (int c = 0x80; c < 0x100; c++) {   /* a lone byte >= 0x80 is not UTF-8 */
        char in[1] = { (char)c };
        char want[7] = { '"', '\\', 'x', "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15], '"', 0 };
        struct buf b;
        buf_init(&b);
        logfmt_value(&b, in, 1);
        CHECK_BYTES(buf_peek(&b), buf_used(&b), want, 6);
        buf_free(&b);
    }
}

int main(void)
{
    test_begin();
    test_every_byte();
    test_bare();
    test_quoted();
    test_utf8();
    test_fields();
    test_emit();
    return testutil_summary();
}
