/* lua_route.h - routes as data: a route object made by a factory
 * (kurir.maildir, kurir.mbox, kurir.pipe, kurir.discard; lua/kurir/route.lua)
 * becomes the route string stored with a queued recipient, and the rcpt
 * hook routes kurir's own messages (DSNs). */
#ifndef KURIR_LUA_ROUTE_H
#define KURIR_LUA_ROUTE_H

#include <lua.h>
#include <stdbool.h>
#include "lua/engine.h"
#include "proto/util.h"

/* Is the value at idx a route made by a factory (queueable)? */
bool lroute_is(lua_State *L, int idx);
/* Append the route string ("agent key=value ...") of the route at idx.
 * -1 with a reason in err when it is not a route. */
int lroute_serialize(lua_State *L, int idx, struct buf *out, char *err, size_t cap);
/* Ask the script's rcpt hook (with s.internal = true) for the route of
 * address, for a message kurir makes itself (a DSN). The hook runs in a
 * task, so it may wait. cb gets (arg, 0, route string, NULL) or (arg, -1,
 * NULL, reason); it may run before this returns. NULL: nothing started
 * (kurir.route cannot be loaded), cb never runs. */
typedef void (*lroute_cb)(void *arg, int rc, const char *route, const char *err);
struct route_run;
struct route_run *lroute_internal(struct engine *eng, const char *id, const char *address, lroute_cb cb,
                                     void *arg);
/* Stop a run that has not called cb yet (shutdown); cb never runs. */
void lroute_internal_cancel(struct route_run *r);

#endif
