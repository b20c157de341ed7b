/* engine_session.h - what engine_session.c and the session's Lua classes
 * (lua_session.c, lua_message.c, lua_cred.c) offer to the session layer: the session's task and userdata, starting and aborting
 * hooks, and the Lua objects of a transaction. */
#ifndef KURIR_ENGINE_SESSION_H
#define KURIR_ENGINE_SESSION_H

#include <lua.h>
#include "smtp/session.h"
#include "proto/smtp_addr.h"

void engine_session_open(struct session *s);
void engine_session_close(struct session *s);

/* Resume the session coroutine on hook h; always ends in
 * session_hook_finished() (now, or later after a wait). */
void engine_start_hook(struct session *s, enum hook h, int (*push)(struct session *, lua_State *));
/* Abandon a running/waiting hook (client gone). */
void engine_abort_hook(struct session *s);

/* A view (lua_address.c) on the sender (idx -1) or recipient idx of env;
 * returns a registry ref. */
int engine_address_ref(struct session *s, struct envelope *env, int idx);
/* Push s->arg_ref (the object a check built) as the hook argument. */
int engine_push_arg(struct session *s, lua_State *co);
/* Push verb and argument of the current command (command hook). */
int engine_push_command_args(struct session *s, lua_State *co);
/* Push the HELO name / VRFY / EXPN argument as a string. */
int engine_push_line_arg(struct session *s, lua_State *co);
/* Push a new kurir.message for the current transaction. */
int engine_push_message(struct session *s, lua_State *co);
/* Push a kurir.cred for the SASL exchange in s->sasl. */
int engine_push_cred(struct session *s, lua_State *co);

/* Transaction objects: the sender's view (ref taken over) starts the
 * transaction's views; an accepted recipient's view joins them */
void engine_tx_set_from(struct session *s, int ref);
void engine_tx_add_rcpt(struct session *s, int idx, int ref);
/* push the accepted recipients' views, in order, as a new array */
void engine_push_rcpts(struct session *s, lua_State *L);
/* rcpt.route of the RCPT argument table ref, if set, must be a delivery
 * agent: false (and an error logged) otherwise. */
bool engine_check_route(struct session *s, int ref);
void engine_tx_release(struct session *s);   /* drop refs, close the message object */
void engine_release_ref(struct session *s, int *ref);

/* bindings (lua_session.c, lua_message.c, lua_cred.c); their
 * prefix is l + the class, never Lua's own lua_/luaL_ */
void lsession_register(lua_State *L);
void lsession_push_new(lua_State *L, struct session *s);   /* new userdata */
void lsession_invalidate(lua_State *L, int ud_ref);
void lmessage_register(lua_State *L);
void lmessage_push_new(lua_State *L, struct session *s);
void lmessage_invalidate(lua_State *L, int ref);
/* the address views on the envelope (lua_address.c): idx -1 is the sender */
struct envelope;
void laddress_register(lua_State *L);
/* sibling: the stack index of a view that may be on the same envelope
 * (its reference is shared), or 0 */
void laddress_push(lua_State *L, struct envelope *env, int idx, int sibling);
/* push rcpt.route of the recipient view at i (nil when unset), without
 * going through its __index */
void laddress_push_route(lua_State *L, int i);
/* the recipient index of the view at i if it is a recipient of env, else -1 */
int laddress_index(lua_State *L, int i, const struct envelope *env);
void lcred_register(lua_State *L);
void lcred_push_new(lua_State *L, struct session *s);
void lcred_invalidate(lua_State *L, int ref);
/* the session of the kurir.message at stack index i (an error if it is
 * not one, or closed) */
struct session *lmessage_session(lua_State *L, int i);
/* The smtp layer's classes, for engine_load's open function. */
void engine_session_register(lua_State *L);

#endif
