/* reply.c - the one table of canned SMTP replies, the default enhanced
 * status codes (RFC 3463) and texts for bare codes, and the formatter that
 * turns (code, esc, text) into wire lines: multi-line, wrapped below the
 * RFC 5321 512-byte reply line limit, control bytes neutralised. Pure: owns
 * only constant tables and appends to a caller's struct buf. */
#include "proto/reply.h"

#include <stdlib.h>
#include <string.h>

/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including CRLF. */
#define REPLY_LINE_MAX 510

static const struct reply_def reply_table[R_COUNT] = {
    [R_GREETING]           = { 220, NULL, "%h ESMTP kurir" },
    [R_CLOSING]            = { 221, "2.0.0", "Bye" },
    [R_ACCEPT]             = { 250, "2.0.0", "OK" },
    [R_MAIL_OK]            = { 250, "2.1.0", "Sender OK" },
    [R_RCPT_OK]            = { 250, "2.1.5", "Recipient OK" },
    [R_DATA_GO]            = { 354, NULL, "End data with <CR><LF>.<CR><LF>" },
    [R_VRFY_DEFAULT]       = { 252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery" },
    [R_EXPN_DEFAULT]       = { 502, "5.5.1", "EXPN not supported" },
    [R_HELP]               = { 214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP STARTTLS AUTH" },
    [R_STARTTLS_GO]        = { 220, "2.0.0", "Ready to start TLS" },
    [R_AUTH_OK]            = { 235, "2.7.0", "Authentication successful" },
    [R_UNKNOWN_CMD]        = { 500, "5.5.1", "Command unrecognized" },
    [R_LINE_TOO_LONG]      = { 500, "5.5.6", "Line too long" },
    [R_SYNTAX]             = { 501, "5.5.4", "Syntax error in parameters or arguments" },
    [R_HELO_SYNTAX]        = { 501, "5.5.4", "Syntax: HELO/EHLO hostname" },
    [R_NOT_IMPLEMENTED]    = { 502, "5.5.1", "Command not implemented" },
    [R_BAD_SEQUENCE]       = { 503, "5.5.1", "Bad sequence of commands" },
    [R_NEED_HELO]          = { 503, "5.5.1", "Send HELO/EHLO first" },
    [R_NEED_MAIL]          = { 503, "5.5.1", "Need MAIL command" },
    [R_NEED_RCPT]          = { 503, "5.5.1", "Need RCPT command" },
    [R_NESTED_MAIL]        = { 503, "5.5.1", "Sender already specified" },
    [R_REFUSED_SESSION]    = { 503, "5.7.0", "Session refused; only QUIT is allowed" },
    [R_PARAM_UNKNOWN]      = { 555, "5.5.4", "Unsupported parameter" },
    [R_MECH_UNKNOWN]       = { 504, "5.5.4", "Unrecognized authentication mechanism" },
    [R_AUTH_CANCELLED]     = { 501, "5.0.0", "Authentication cancelled" },
    [R_AUTH_B64]           = { 501, "5.5.2", "Cannot decode response" },
    [R_AUTH_FAILED]        = { 535, "5.7.8", "Authentication credentials invalid" },
    [R_AUTH_REQUIRED]      = { 530, "5.7.0", "Authentication required" },
    [R_AUTH_NEEDS_TLS]     = { 538, "5.7.11", "Encryption required for requested authentication mechanism" },
    [R_TLS_REQUIRED]       = { 530, "5.7.0", "Must issue a STARTTLS command first" },
    [R_ALREADY_TLS]        = { 503, "5.5.1", "TLS already active" },
    [R_ALREADY_AUTH]       = { 503, "5.5.1", "Already authenticated" },
    [R_MAIL_REJECT]        = { 550, "5.1.0", "Sender rejected" },
    [R_RCPT_REJECT]        = { 550, "5.1.1", "Recipient rejected" },
    [R_DATA_REJECT]        = { 554, "5.6.0", "Message rejected" },
    [R_HELO_REJECT]        = { 550, "5.7.1", "Hello rejected" },
    [R_CONNECT_REJECT]     = { 554, "5.7.1", "Connection refused" },
    [R_GENERIC_REJECT]     = { 550, "5.7.1", "Rejected" },
    [R_TOO_MANY_RCPTS]     = { 452, "4.5.3", "Too many recipients" },
    [R_SIZE_EXCEEDED]      = { 552, "5.3.4", "Message size exceeds fixed maximum message size" },
    [R_HEADER_TOO_BIG]     = { 552, "5.3.4", "Message header section exceeds the limit" },
    [R_BARE_LF]            = { 554, "5.6.0", "Message contains bare LF line endings (not CRLF); fix the client" },
    [R_DATA_LINE_TOO_LONG] = { 554, "5.6.0", "Message contains a line longer than the limit" },
    [R_HOOK_ERROR]         = { 451, "4.3.0", "Temporary server error, try again later" },
    [R_NO_DELIVERY]        = { 451, "4.3.5", "No delivery configured for %a" },
    [R_LOCAL_ERROR]        = { 451, "4.3.0", "Local error in processing" },
    [R_TOO_MANY_CONNS]     = { 421, "4.7.0", "%h Too many connections, try again later" },
    [R_TOO_MANY_ERRORS]    = { 421, "4.7.0", "%h Too many errors, closing connection" },
    [R_TIMEOUT]            = { 421, "4.4.2", "%h Timeout, closing connection" },
    [R_SHUTDOWN]           = { 421, "4.3.2", "%h Service shutting down, closing connection" },
    [R_BDAT_SYNTAX]        = { 501, "5.5.4", "Syntax: BDAT size [LAST]" },
    [R_BDAT_MIXED]         = { 503, "5.5.1", "DATA not allowed after BDAT" },
    [R_BARE_CR]            = { 554, "5.6.0", "Message contains bare CR (not part of CRLF); fix the client" },
    [R_TOO_SLOW]           = { 421, "4.4.2", "%h Data received too slowly, closing connection" },
    [R_TOO_MANY_JUNK]      = { 421, "4.7.0", "%h Too many commands without mail, closing connection" },
    [R_SPOOL_FULL]         = { 452, "4.3.1", "Insufficient system storage, try again later" },
    [R_HOOK_ERROR_CLOSE]   = { 421, "4.3.0", "%h Temporary server error, closing connection" },
    [R_QUEUED]             = { 250, "2.0.0", "Message accepted: queued as %a" },
    [R_BDAT_CHUNK]         = { 250, "2.0.0", "%a octets received" },
    [R_MAIL_ADDR_SYNTAX]   = { 501, "5.1.7", "Syntax error" },
    [R_RCPT_ADDR_SYNTAX]   = { 501, "5.1.3", "Syntax error" },
    [R_PATH_SYNTAX]        = { 501, "5.5.4", "Syntax error" },
    [R_SIZE_SYNTAX]        = { 501, "5.5.4", "Syntax: SIZE=<number>" },
    [R_BODY_SYNTAX]        = { 501, "5.5.4", "Syntax: BODY=7BIT|8BITMIME" },
    [R_SMTPUTF8_VALUE]     = { 501, "5.5.4", "SMTPUTF8 takes no value" },
    [R_AUTH_PARAM_SYNTAX]  = { 501, "5.5.4", "Syntax: AUTH=<xtext>" },
    [R_RET_SYNTAX]         = { 501, "5.5.4", "Syntax: RET=FULL|HDRS" },
    [R_ENVID_SYNTAX]       = { 501, "5.5.4", "Syntax: ENVID=<xtext of at most 100 characters>" },
    [R_NOTIFY_SYNTAX]      = { 501, "5.5.4", "Syntax: NOTIFY=NEVER or NOTIFY=SUCCESS,FAILURE,DELAY" },
    [R_ORCPT_SYNTAX]       = { 501, "5.5.4", "Syntax: ORCPT=addr-type;xtext" },
    [R_UTF8_ADDRESS]       = { 553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter" },
    [R_DELIVERY_FAILED]    = { 451, "4.3.0", "Delivery failed, try again later" },
    [R_QUEUE_FAILED]       = { 451, "4.3.0", "Could not queue the message, try again later" },
    [R_STORE_FAILED]       = { 451, "4.3.0", "Could not store the message, try again later" },
};

/* The rows the shipped Lua answers with (kurir.reply(name [, arg])), so
 * that their texts are written here only. */
static const struct {
    const char *name;
    enum reply_id id;
} reply_names[] = {
    { "no_delivery", R_NO_DELIVERY },
    { "delivery_failed", R_DELIVERY_FAILED },
    { "queue_failed", R_QUEUE_FAILED },
    { "store_failed", R_STORE_FAILED },
    { "hook_error", R_HOOK_ERROR },
    { "local_error", R_LOCAL_ERROR },
};

enum reply_id reply_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof(reply_names) / sizeof(reply_names[0]); i++)
        if (!strcmp(reply_names[i].name, name))
            return reply_names[i].id;
    return R_COUNT;
}

const char *reply_name_at(int i)
{
    if (i < 0 || (size_t)i >= sizeof(reply_names) / sizeof(reply_names[0]))
        return NULL;
    return reply_names[i].name;
}

const struct reply_def *reply_get(enum reply_id id)
{
    if ((unsigned)id >= R_COUNT)
        id = R_LOCAL_ERROR;
    return &reply_table[id];
}

const char *reply_default_esc(int code, enum reply_stage stage)
{
    switch (code / 100) {
    case 2:
        switch (stage) {
        case STAGE_MAIL: return "2.1.0";
        case STAGE_RCPT: return "2.1.5";
        case STAGE_AUTH: return "2.7.0";
        default: return "2.0.0";
        }
    case 4:
        switch (code) {
        case 421: return stage == STAGE_CONNECT ? "4.7.0" : "4.3.0";
        case 450:
            if (stage == STAGE_MAIL)
                return "4.1.0";
            if (stage == STAGE_RCPT)
                return "4.1.1";
            return "4.7.1";
        case 451: return "4.3.0";
        case 452: return stage == STAGE_RCPT ? "4.5.3" : "4.3.1";
        case 454: return "4.7.0";
        default: return "4.0.0";
        }
    case 5:
        switch (code) {
        case 500: case 502: case 503: return "5.5.1";
        case 501: case 504: return "5.5.4";
        case 530: return "5.7.0";
        case 535: return "5.7.8";
        case 538: return "5.7.11";
        case 550:
            if (stage == STAGE_MAIL)
                return "5.1.0";
            if (stage == STAGE_RCPT)
                return "5.1.1";
            return "5.7.1";
        case 551: return "5.1.6";
        case 552: return "5.3.4";
        case 553: return stage == STAGE_MAIL ? "5.1.7" : "5.1.3";
        case 554:
            if (stage == STAGE_DATA)
                return "5.6.0";
            return "5.7.1";
        case 555: return "5.5.4";
        default: return "5.0.0";
        }
    default:
        return NULL;
    }
}

static const char *default_text_2xx(int code, enum reply_stage stage)
{
    switch (code) {
    case 220: return stage == STAGE_STARTTLS ? "Ready to start TLS" : "%h ESMTP kurir";
    case 221: return "Bye";
    case 235: return "Authentication successful";
    case 252: return "Cannot VRFY user, but will accept message and attempt delivery";
    default: break;
    }
    switch (stage) {
    case STAGE_MAIL: return "Sender OK";
    case STAGE_RCPT: return "Recipient OK";
    case STAGE_DATA: return "Message accepted";
    case STAGE_AUTH: return "Authentication successful";
    default: return "OK";
    }
}

static const char *default_text_4xx(int code, enum reply_stage stage)
{
    switch (code) {
    case 421: return "Service not available, closing transmission channel";
    case 450:
        if (stage == STAGE_MAIL)
            return "Sender temporarily rejected";
        if (stage == STAGE_RCPT)
            return "Recipient temporarily rejected";
        if (stage == STAGE_DATA)
            return "Message temporarily rejected";
        return "Temporarily rejected, try again later";
    case 451: return "Requested action aborted: local error in processing";
    case 452: return stage == STAGE_RCPT ? "Too many recipients" : "Insufficient system storage";
    case 454:
        if (stage == STAGE_STARTTLS)
            return "TLS not available";
        if (stage == STAGE_AUTH)
            return "Temporary authentication failure";
        return "Temporary failure, try again later";
    default: return "Temporary failure, try again later";
    }
}

static const char *default_text_5xx(int code, enum reply_stage stage)
{
    switch (code) {
    case 500: return "Command unrecognized";
    case 501: return "Syntax error in parameters or arguments";
    case 502: return "Command not implemented";
    case 503: return "Bad sequence of commands";
    case 504: return "Command parameter not implemented";
    case 530: return "Authentication required";
    case 535: return "Authentication credentials invalid";
    case 538: return "Encryption required for requested authentication mechanism";
    case 550:
        switch (stage) {
        case STAGE_MAIL: return "Sender rejected";
        case STAGE_RCPT: return "Recipient rejected";
        case STAGE_DATA: return "Message rejected";
        case STAGE_HELO: return "Hello rejected";
        case STAGE_CONNECT: return "Connection refused";
        default: return "Rejected";
        }
    case 551: return "User not local";
    case 552:
        return stage == STAGE_RCPT ? "Requested mail action aborted: exceeded storage allocation"
                                   : "Message size exceeds fixed maximum message size";
    case 553: return stage == STAGE_MAIL ? "Sender address not allowed" : "Mailbox name not allowed";
    case 554:
        if (stage == STAGE_CONNECT)
            return "Connection refused";
        if (stage == STAGE_DATA)
            return "Message rejected";
        return "Transaction failed";
    case 555: return "Parameters not recognized or not implemented";
    default: return "Rejected";
    }
}

const char *reply_default_text(int code, enum reply_stage stage)
{
    switch (code / 100) {
    case 2: return default_text_2xx(code, stage);
    case 3:
        if (code == 354)
            return "End data with <CR><LF>.<CR><LF>";
        return code == 334 ? "" : "Continue";   /* an empty AUTH challenge is "334 " */
    case 4: return default_text_4xx(code, stage);
    case 5: return default_text_5xx(code, stage);
    default: return "";
    }
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Count 1 to 3 digits at s[*i], advancing *i. */
static bool take_digits(const char *s, size_t n, size_t *i)
{
    size_t start = *i;
    while (*i < n && *i - start < 3 && is_digit(s[*i]))
        (*i)++;
    return *i > start;
}

bool reply_has_esc(const char *s, size_t n, size_t *esc_len)
{
    if (n < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return false;
    size_t i = 2;
    if (!take_digits(s, n, &i) || i >= n || s[i] != '.')
        return false;
    i++;
    if (!take_digits(s, n, &i))
        return false;
    if (i < n && s[i] != ' ')      /* "5.1.1x" or "5.1.1234" is not a code */
        return false;
    if (esc_len)
        *esc_len = i;
    return true;
}

/* A line starts with an enhanced code of the reply's own class. */
static bool line_esc(const char *s, size_t n, int code, size_t *esc_len)
{
    return reply_has_esc(s, n, esc_len) && s[0] - '0' == code / 100;
}

/* Copy text into out with "%h" replaced by host and "%a" by arg, each
 * only when not NULL (a hook's text is never given an arg). */
static void expand_host(struct buf *out, const char *text, size_t tlen, const char *host,
                        const char *arg)
{
    size_t i = 0, run = 0;
    while (i < tlen) {
        const char *with = NULL;
        if (text[i] == '%' && i + 1 < tlen)
            with = text[i + 1] == 'h' ? host : text[i + 1] == 'a' ? arg : NULL;
        if (with) {
            buf_append(out, text + run, i - run);
            buf_appends(out, with);
            i += 2;
            run = i;
        } else {
            i++;
        }
    }
    buf_append(out, text + run, tlen - run);
}

/* Append n bytes of reply text, neutralising control bytes (TAB is kept). */
static void append_clean(struct buf *out, const char *s, size_t n)
{
    char *p = buf_reserve(out, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        p[i] = ((c < 0x20 && c != '\t') || c == 0x7f) ? '?' : (char)c;
    }
    buf_commit(out, n);
}

/* Where to end a piece of at most avail bytes of s (n > avail): after the
 * last space that leaves a non-empty piece (the space itself is dropped),
 * else at avail, moved back so that a UTF-8 sequence is not split. Sets
 * *skip to the bytes dropped at the break. */
static size_t wrap_point(const char *s, size_t avail, size_t *skip)
{
    for (size_t i = avail; i > 0; i--) {
        if (s[i] == ' ') {
            *skip = 1;
            return i;
        }
    }
    *skip = 0;
    size_t cut = avail;
    for (int k = 0; k < 3 && cut > 1 && ((unsigned char)s[cut] & 0xc0) == 0x80; k++)
        cut--;
    if (((unsigned char)s[cut] & 0xc0) == 0x80)
        cut = avail;
    return cut;
}

static void emit_line(struct buf *out, int code, bool last, const char *esc, size_t esc_len,
                      const char *s, size_t n)
{
    char head[4] = { (char)('0' + code / 100), (char)('0' + code / 10 % 10), (char)('0' + code % 10),
                     last ? ' ' : '-' };
    buf_append(out, head, sizeof(head));
    if (esc) {
        buf_append(out, esc, esc_len);
        if (n)
            buf_append(out, " ", 1);
    }
    append_clean(out, s, n);
    buf_append(out, "\r\n", 2);
}

/* Emit one logical line (no newline inside), wrapped as needed. */
static void emit_logical(struct buf *out, int code, bool last, const char *esc, size_t esc_len,
                         const char *s, size_t n)
{
    size_t avail = REPLY_LINE_MAX - 4 - (esc ? esc_len + 1 : 0);
    /* Bounded: every round consumes at least one byte of s. */
    while (n > avail) {
        size_t skip;
        size_t cut = wrap_point(s, avail, &skip);
        emit_line(out, code, false, esc, esc_len, s, cut);
        s += cut + skip;
        n -= cut + skip;
    }
    emit_line(out, code, last, esc, esc_len, s, n);
}

static void format_arg(struct buf *out, int code, const char *esc, const char *text, size_t tlen,
                       bool enhanced, enum reply_stage stage, const char *host, const char *arg)
{
    if (code < 0 || code > 999)
        code = 451;
    /* A caller's code of the wrong class would contradict the reply code. */
    if (esc && !line_esc(esc, strlen(esc), code, NULL))
        esc = NULL;
    if (!esc && enhanced)
        esc = reply_default_esc(code, stage);
    if (!enhanced)
        esc = NULL;

    if (!text)
        tlen = 0;
    /* A final newline ends the last line; it does not start an empty one. */
    if (tlen && text[tlen - 1] == '\n') {
        tlen--;
        if (tlen && text[tlen - 1] == '\r')
            tlen--;
    }
    if (tlen == 0) {
        text = reply_default_text(code, stage);
        tlen = strlen(text);
    }

    /* texts without "%h" or "%a" (most) are used in place, not copied */
    struct buf tmp;
    buf_init(&tmp);
    const char *p = text;
    size_t left = tlen;
    if ((host || arg) && memchr(text, '%', tlen)) {
        expand_host(&tmp, text, tlen, host, arg);
        p = buf_peek(&tmp);
        left = buf_used(&tmp);
    }
    size_t esc_len = esc ? strlen(esc) : 0;

    /* Bounded: every round consumes one line of the finite text. */
    for (;;) {
        const char *nl = memchr(p, '\n', left);
        size_t len = nl ? (size_t)(nl - p) : left;
        size_t next = nl ? len + 1 : left;
        if (nl && len && p[len - 1] == '\r')
            len--;
        bool last = nl == NULL;

        size_t own = 0;
        if (line_esc(p, len, code, &own)) {
            /* The text chose its code: keep it, on wrapped pieces too, and
             * (when enhanced) on the following lines that have none, so a
             * multi-line reply carries one code (RFC 2034). */
            size_t body = own < len ? own + 1 : own;
            emit_logical(out, code, last, p, own, p + body, len - body);
            if (enhanced) {
                esc = p;
                esc_len = own;
            }
        } else {
            emit_logical(out, code, last, esc, esc_len, p, len);
        }
        p += next;
        left -= next;
        if (last)
            break;
    }
    buf_free(&tmp);
}

void reply_format(struct buf *out, int code, const char *esc, const char *text, size_t tlen,
                  bool enhanced, enum reply_stage stage, const char *host)
{
    format_arg(out, code, esc, text, tlen, enhanced, stage, host, NULL);
}

void reply_canned_arg(struct buf *out, enum reply_id id, int code, bool enhanced, const char *host,
                      const char *arg)
{
    const struct reply_def *d = reply_get(id);
    if (code <= 0 || code / 100 != d->code / 100)
        code = d->code;
    /* A row without an enhanced code (greeting, 354) never gets one. */
    format_arg(out, code, d->esc, d->text, strlen(d->text), enhanced && d->esc, STAGE_OTHER, host,
               arg ? arg : "");
}

void reply_canned(struct buf *out, enum reply_id id, bool enhanced, const char *host)
{
    reply_canned_arg(out, id, 0, enhanced, host, NULL);
}

void reply_cache_free(struct reply_cache *c)
{
    for (int id = 0; id < R_COUNT; id++)
        for (int e = 0; e < 2; e++)
            free(c->row[id][e].wire);
    memset(c, 0, sizeof(*c));
}

/* Format row id once: its full wire bytes, or, for a one-line text that
 * ends in "%a" after a plain word, the bytes before the argument (what
 * formatting with an empty argument gives, less the CRLF). */
static void cache_fill(struct reply_cache_row *row, enum reply_id id, bool enhanced, const char *host)
{
    const struct reply_def *d = reply_get(id);
    size_t tlen = strlen(d->text);
    const char *a = strstr(d->text, "%a");
    /* the text must not start with what could become an enhanced code
     * once the argument follows ("%h", a digit) */
    row->arg_at_end = a && a > d->text && (size_t)(a - d->text) == tlen - 2 && !strchr(d->text, '\n') &&
                      d->text[0] != '%' && !is_digit(d->text[0]);
    row->each_time = a && !row->arg_at_end;
    struct buf b;
    buf_init(&b);
    reply_canned_arg(&b, id, 0, enhanced, host, "");
    row->len = buf_used(&b) - (row->arg_at_end ? 2 : 0);
    row->wire = xmemdup(buf_peek(&b), buf_used(&b));
    buf_free(&b);
}

/* arg can follow a cached prefix of plen bytes as it is: nothing the
 * formatter would change (control bytes) and no wrapping (the line stays
 * within REPLY_LINE_MAX). */
static bool arg_plain(const char *arg, size_t plen, size_t *alen)
{
    size_t n = 0;
    for (; arg[n]; n++) {
        unsigned char ch = (unsigned char)arg[n];
        if (ch < 0x20 || ch == 0x7f || plen + n >= REPLY_LINE_MAX)
            return false;
    }
    *alen = n;
    return true;
}

void reply_cache_put(struct reply_cache *c, struct buf *out, enum reply_id id, int code, bool enhanced,
                     const char *host, const char *arg)
{
    const struct reply_def *d = reply_get(id);
    if (!c || (unsigned)id >= R_COUNT || (code > 0 && code != d->code)) {
        reply_canned_arg(out, id, code, enhanced, host, arg);
        return;
    }
    if (c->host != host) {
        reply_cache_free(c);
        c->host = host;
    }
    struct reply_cache_row *row = &c->row[id][enhanced ? 1 : 0];
    if (!row->wire)
        cache_fill(row, id, enhanced, host);
    size_t alen = 0;
    if (row->each_time) {
        reply_canned_arg(out, id, code, enhanced, host, arg);
    } else if (!row->arg_at_end) {
        buf_append(out, row->wire, row->len);
    } else if (!arg || arg_plain(arg, row->len, &alen)) {
        char *p = buf_reserve(out, row->len + alen + 2);
        memcpy(p, row->wire, row->len);
        if (alen)
            memcpy(p + row->len, arg, alen);
        memcpy(p + row->len + alen, "\r\n", 2);
        buf_commit(out, row->len + alen + 2);
    } else {
        reply_canned_arg(out, id, code, enhanced, host, arg);
    }
}

void reply_row_text(struct buf *out, enum reply_id id, const char *arg)
{
    const struct reply_def *d = reply_get(id);
    if (d->esc) {
        buf_appends(out, d->esc);
        buf_append(out, " ", 1);
    }
    expand_host(out, d->text, strlen(d->text), NULL, arg ? arg : "");
}
