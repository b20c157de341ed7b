/* lroute.h - routes as data: a route object made by a factory
 * (kurir.maildir, kurir.mbox, kurir.pipe, kurir.relay, kurir.lmtp,
 * kurir.deliver, kurir.discard) becomes the route string stored with a
 * recipient of the envelope and of a queued message (docs/queue.md). */
#ifndef KURIR_LROUTE_H
#define KURIR_LROUTE_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include "proto/util.h"

/* Is the value at idx a route made by a factory (queueable)? */
bool lroute_is(lua_State *L, int idx);
/* Append the route string ("agent key=value ...") of the route at idx.
 * -1 with a reason in err when it is not a route. */
int lroute_serialize(lua_State *L, int idx, struct buf *out, char *err, size_t cap);

#endif
