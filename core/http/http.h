/* http.h - HTTP listeners on the server's own event loop (libmicrohttpd
 * in external-select epoll mode) and the request object that Lua
 * handlers answer: at once, later (a suspended connection, e.g. a
 * wait-for-message), or as a stream (Server-Sent Events). */
#ifndef KURIR_HTTP_H
#define KURIR_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include "lua/engine.h"
#include "net/worker.h"
#include "proto/util.h"

struct http_daemon;
struct http_req;

/* Serve HTTP on fd, a bound listening socket named name, in w's loop;
 * the daemon is linked into *list (its owner's). libmicrohttpd owns fd
 * from here on, also when this fails. -1 with a message on stderr.
 * Requests run the Lua handler of w->eng. */
int http_listen(struct worker *w, struct http_daemon **list, int fd, const char *name);
/* Answer every suspended request of *list with 503 and stop them all. */
void http_stop_all(struct worker *w, struct http_daemon **list);

/* --- the request, for lua_http.c ---------------------------------------- */
const char *http_req_method(const struct http_req *r);
const char *http_req_path(const struct http_req *r);
const char *http_req_body(const struct http_req *r, size_t *len);
const char *http_req_header(const struct http_req *r, const char *name);
/* call fn(ctx, key, value) for each query argument (decoded) */
void http_req_each_arg(const struct http_req *r, void (*fn)(void *ctx, const char *k, const char *v), void *ctx);
/* nothing more can be sent: answered, stream ended, or client gone */
bool http_req_answered(const struct http_req *r);
/* Set the response (headers: "Name: value\n" lines). 0, or -1 when the
 * request was answered already. */
int http_req_respond(struct http_req *r, int status, const char *headers, const char *body, size_t len);
/* Start a streamed response (SSE); then http_req_send appends bytes. */
int http_req_stream(struct http_req *r, int status, const char *headers);
int http_req_send(struct http_req *r, const char *data, size_t len);
/* Answer with (status, body) if nothing else answered within seconds. */
void http_req_deadline(struct http_req *r, double seconds, int status, const char *headers,
                       const char *body, size_t len);
/* The Lua object of the request (a registry ref owned by lua_http.c). */
void http_req_set_lua(struct http_req *r, int ref);

/* lua_http.c: run the engine's HTTP handler for r; called once per
 * request when its body is complete. */
void lua_http_handle(struct engine *e, struct http_req *r);
/* lua_http.c: r ends (answered and sent, or the client went away). */
void lua_http_closed(struct engine *e, struct http_req *r, int ref);
void lua_http_open(lua_State *L);   /* kurir.http on the table at the top */

#endif
