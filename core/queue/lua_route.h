/* lua_route.h - the rcpt hook routes kurir's own messages (DSNs); route
 * objects become route strings in lua/lroute.h. */
#ifndef KURIR_LUA_ROUTE_H
#define KURIR_LUA_ROUTE_H

#include <lua.h>
#include <stdbool.h>
#include "lua/engine.h"
#include "lua/lroute.h"
#include "proto/util.h"

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
/* msg:enqueue on the smtp layer's kurir.message (lua_queue.c); after
 * engine_session_register, from engine_load's open function. */
void lqueue_register(lua_State *L);

#endif
