/* test_session.c - a real session without the kurir binary: the runtime
 * library (kurir_core), a real engine running session.lua, a libev loop,
 * and the client end of a socketpair. SOCK_SEQPACKET keeps the server's
 * writes apart, so a test sees how many writes a group of replies took.
 * Every wait is for an event (a reply, the end of the connection, the
 * session gone) under a deadline that only stops a broken build. */
#include "app/server.h"
#include "smtp/session.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct ev_loop *loop;
static struct server srv;
static bool readable, timed_out;

static void readable_cb(struct ev_loop *l, ev_io *w, int revents)
{
    (void)revents;
    readable = true;
    ev_io_stop(l, w);
}

static void deadline_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    timed_out = true;
}

/* seconds a wait may take before the test gives up (sanitizer builds are slower) */
static double deadline(void)
{
    return getenv("ASAN_OPTIONS") ? 60.0 : 20.0;
}

/* Run the loop until fd has something to read (a record or the end). */
static bool wait_readable(int fd)
{
    ev_io w;
    ev_timer t;
    ev_io_init(&w, readable_cb, fd, EV_READ);
    ev_timer_init(&t, deadline_cb, deadline(), 0);
    readable = timed_out = false;
    ev_io_start(loop, &w);
    ev_timer_start(loop, &t);
    while (!readable && !timed_out)
        ev_run(loop, EVRUN_ONCE);
    ev_io_stop(loop, &w);
    ev_timer_stop(loop, &t);
    return readable;
}

/* The next write of the server, whole; "" at the end of the connection. */
static const char *next_write(int fd)
{
    static char rec[65536];
    if (!wait_readable(fd)) {
        fprintf(stderr, "test_session: no reply within %.0f s\n", deadline());
        return "(timeout)";
    }
    ssize_t n = recv(fd, rec, sizeof(rec) - 1, MSG_DONTWAIT);
    rec[n > 0 ? n : 0] = '\0';
    return rec;
}

static void send_str(int fd, const char *s)
{
    CHECK(send(fd, s, strlen(s), MSG_NOSIGNAL) == (ssize_t)strlen(s));
}

#define EXPECT_WRITE(fd, want)                                                                   \
    do {                                                                                         \
        const char *got_ = next_write(fd);                                                       \
        testutil_check_bytes(got_, strlen(got_), (want), strlen(want), "reply " #want, __FILE__, \
                             __LINE__);                                                          \
    } while (0)

/* A client: the session gets the other end, as if accepted from 127.0.0.1. */
static int connect_client(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        exit(2);
    }
    struct sockaddr_storage peer;
    memset(&peer, 0, sizeof(peer));
    struct sockaddr_in *in = (struct sockaddr_in *)&peer;
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
    inet_pton(AF_INET, "127.0.0.1", &in->sin_addr);
    session_new(&srv.w, &srv.sessions, sv[1], false, &peer, NULL);
    return sv[0];
}

static void wait_sessions_gone(void)
{
    ev_timer t;
    ev_timer_init(&t, deadline_cb, deadline(), 0);
    timed_out = false;
    ev_timer_start(loop, &t);
    while (srv.sessions.n > 0 && !timed_out)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
    CHECK(srv.sessions.n == 0);
}

static struct engine *start(const char *mode)
{
    char *argv[] = {"session.lua", (char *)mode, NULL};
    char *listen[] = {"127.0.0.1:0"};
    char *err = NULL;
    struct engine *e = engine_load("session.lua", server_open_lua, mode ? 2 : 1, argv, listen, 1, &err);
    if (!e) {
        fprintf(stderr, "test_session: %s\n", err ? err : "cannot load session.lua");
        exit(2);
    }
    if (server_init(&srv, loop, e) < 0) {
        fprintf(stderr, "test_session: server_init failed\n");
        exit(2);
    }
    return e;
}

/* server_free drops the server's reference to the engine, the last one */
static void stop(struct engine *e)
{
    wait_sessions_gone();
    engine_stop_jobs(e);
    server_free(&srv);
}

static bool is_queue_id(const char *s)
{
    size_t n = 0;
    while (isxdigit((unsigned char)s[n]) && !islower((unsigned char)s[n]))
        n++;
    return n == 20 && s[n] == '\r';
}

static void test_dialogue(void)
{
    int c = connect_client();
    EXPECT_WRITE(c, "220 mx.test ESMTP kurir\r\n");

    send_str(c, "EHLO client.test\r\n");
    const char *ehlo = next_write(c);
    CHECK(!strncmp(ehlo, "250-mx.test Hello client.test [127.0.0.1]\r\n250-PIPELINING\r\n", 58));
    CHECK(strstr(ehlo, "\r\n250-STARTTLS\r\n") == NULL);   /* no TLS configured */
    size_t n = strlen(ehlo);
    CHECK(n > 10 && !strcmp(ehlo + n - 10, "250 HELP\r\n"));

    /* a pipelined group, a rejecting hook inside it: every reply in one write */
    send_str(c, "MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
                "RCPT TO:<reject@example.test>\r\nDATA\r\n");
    EXPECT_WRITE(c, "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n550 5.7.1 no thanks\r\n"
                    "354 End data with <CR><LF>.<CR><LF>\r\n");
    send_str(c, "Subject: t\r\n\r\nhello\r\n.\r\n");
    const char *queued = next_write(c);
    CHECK(!strncmp(queued, "250 2.0.0 Message accepted: queued as ", 38) && is_queue_id(queued + 38));

    /* the command hook: a code handles the verb, nothing leaves it unknown */
    send_str(c, "XPING\r\n");
    EXPECT_WRITE(c, "250 2.0.0 pong\r\n");
    send_str(c, "XOTHER\r\n");
    EXPECT_WRITE(c, "500 5.5.1 Command unrecognized\r\n");

    /* kurir.reply: the rows of C's table the shipped Lua answers with */
    send_str(c, "XREPLY store_failed\r\n");
    EXPECT_WRITE(c, "451 4.3.0 Could not store the message, try again later\r\n");
    send_str(c, "XREPLY no_delivery\r\n");
    EXPECT_WRITE(c, "451 4.3.5 No delivery configured for <x@example.test>\r\n");
    send_str(c, "XREPLY nosuch\r\n");   /* raises: a hook error */
    EXPECT_WRITE(c, "451 4.3.0 Temporary server error, try again later\r\n");

    /* a refused MAIL starts nothing: its check left no trace */
    send_str(c, "MAIL FROM:<a@example.test> SIZE=lots\r\n");
    EXPECT_WRITE(c, "501 5.5.4 Syntax: SIZE=<number>\r\n");
    send_str(c, "RCPT TO:<b@example.test>\r\n");
    EXPECT_WRITE(c, "503 5.5.1 Need MAIL command\r\n");

    /* no data hook and a recipient without a route: kurir.default answers
     * with the text of C's reply table (kurir.reply) */
    send_str(c, "MAIL FROM:<a@example.test>\r\nRCPT TO:<noroute@example.test>\r\nDATA\r\n");
    EXPECT_WRITE(c, "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    send_str(c, "Subject: t\r\n\r\nhello\r\n.\r\n");
    EXPECT_WRITE(c, "451 4.3.5 No delivery configured for <noroute@example.test>\r\n");

    /* a hook that returns 421: the reply, then the end of the connection */
    send_str(c, "MAIL FROM:<a@example.test>\r\nRCPT TO:<bye@example.test>\r\nNOOP\r\n");
    EXPECT_WRITE(c, "250 2.1.0 Sender OK\r\n421 4.7.0 going away\r\n");
    EXPECT_WRITE(c, "");
    close(c);

    c = connect_client();
    EXPECT_WRITE(c, "220 mx.test ESMTP kurir\r\n");
    send_str(c, "HELO client.test\r\n");
    EXPECT_WRITE(c, "250 mx.test Hello client.test [127.0.0.1]\r\n");
    /* sequence errors before a transaction, and QUIT */
    send_str(c, "DATA\r\n");
    EXPECT_WRITE(c, "503 Need MAIL command\r\n");   /* HELO: no enhanced codes */
    send_str(c, "QUIT\r\n");
    EXPECT_WRITE(c, "221 Bye\r\n");
    EXPECT_WRITE(c, "");
    close(c);
}

static void test_tls_required(void)
{
    int c = connect_client();
    EXPECT_WRITE(c, "220 mx.test ESMTP kurir\r\n");
    send_str(c, "EHLO client.test\r\n");
    CHECK(strstr(next_write(c), "\r\n250-STARTTLS\r\n") != NULL);
    /* before STARTTLS only the rows flagged CMD_BEFORE_TLS are taken */
    send_str(c, "MAIL FROM:<a@example.test>\r\n");
    EXPECT_WRITE(c, "530 5.7.0 Must issue a STARTTLS command first\r\n");
    send_str(c, "VRFY postmaster\r\n");
    EXPECT_WRITE(c, "530 5.7.0 Must issue a STARTTLS command first\r\n");
    /* NOOP ends a group, but the client sent past it: still one write */
    send_str(c, "NOOP\r\nRSET\r\n");
    EXPECT_WRITE(c, "250 2.0.0 OK\r\n250 2.0.0 OK\r\n");
    send_str(c, "QUIT\r\n");
    EXPECT_WRITE(c, "221 2.0.0 Bye\r\n");
    EXPECT_WRITE(c, "");
    close(c);
}

int main(void)
{
    loop = ev_default_loop(0);
    struct engine *e = start(NULL);
    test_dialogue();
    stop(e);

    e = start("tls");
    test_tls_required();
    stop(e);
    ev_loop_destroy(loop);
    return testutil_summary();
}
