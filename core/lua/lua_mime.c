/* lua_mime.c - kurir.mime(raw or msg): a message parsed by GMime 3 (never
 * by hand) into a plain Lua table: decoded headers (RFC 2047), subject,
 * from/to/cc (display form and bare addresses), date, the first text/plain
 * and text/html bodies converted to UTF-8, and every leaf part with its
 * content type, charset, disposition, filename, size and decoded bytes.
 * Malformed input gives what GMime could make of it, never a crash.
 * GMime is initialised once per process (it is a library-wide type
 * registry); everything else is per call and freed before returning. */
#include <gmime/gmime.h>
#include <lauxlib.h>
#include <stdbool.h>
#include <string.h>

#include "lua/lua_mime.h"

/* UTF-8 copy of a C string (invalid sequences replaced), pushed */
static void push_utf8(lua_State *L, const char *s, gssize len)
{
    if (!s) {
        lua_pushliteral(L, "");
        return;
    }
    gchar *v = g_utf8_make_valid(s, len);
    lua_pushstring(L, v);
    g_free(v);
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    push_utf8(L, v, -1);
    lua_setfield(L, -2, k);
}

/* {display = "A <a@x>", addresses = {"a@x", ...}} */
static void push_addresses(lua_State *L, InternetAddressList *list)
{
    lua_createtable(L, 0, 2);
    if (!list) {
        lua_pushliteral(L, "");
        lua_setfield(L, -2, "display");
        lua_newtable(L);
        lua_setfield(L, -2, "addresses");
        return;
    }
    char *d = internet_address_list_to_string(list, NULL, FALSE);
    set_str(L, "display", d);
    g_free(d);
    lua_newtable(L);
    int n = 0;
    for (int i = 0; i < internet_address_list_length(list); i++) {
        InternetAddress *a = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
            push_utf8(L, internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a)), -1);
            lua_rawseti(L, -2, ++n);
        } else if (INTERNET_ADDRESS_IS_GROUP(a)) {
            InternetAddressList *members = internet_address_group_get_members(INTERNET_ADDRESS_GROUP(a));
            for (int j = 0; members && j < internet_address_list_length(members); j++) {
                InternetAddress *m = internet_address_list_get_address(members, j);
                if (INTERNET_ADDRESS_IS_MAILBOX(m)) {
                    push_utf8(L, internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(m)), -1);
                    lua_rawseti(L, -2, ++n);
                }
            }
        }
    }
    lua_setfield(L, -2, "addresses");
}

struct walk {
    lua_State *L;
    int parts;    /* stack index of the parts array */
    int n;
    bool text_done, html_done;
    int result;   /* stack index of the result table */
};

static void push_bytes(lua_State *L, GMimeObject *obj)
{
    GMimeStream *out = g_mime_stream_mem_new();
    if (GMIME_IS_PART(obj)) {
        GMimeDataWrapper *dw = g_mime_part_get_content(GMIME_PART(obj));
        if (dw)
            g_mime_data_wrapper_write_to_stream(dw, out);
    } else {
        g_mime_object_write_to_stream(obj, NULL, out);
    }
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out));
    lua_pushlstring(L, ba && ba->len ? (const char *)ba->data : "", ba ? ba->len : 0);
    g_object_unref(out);
}

static void visit(GMimeObject *parent, GMimeObject *obj, gpointer data)
{
    (void)parent;
    struct walk *w = data;
    lua_State *L = w->L;
    if (GMIME_IS_MULTIPART(obj))
        return;
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    char *type = ct ? g_mime_content_type_get_mime_type(ct) : g_strdup("application/octet-stream");
    const char *disp = g_mime_object_get_disposition(obj);
    const char *filename = GMIME_IS_PART(obj) ? g_mime_part_get_filename(GMIME_PART(obj)) : NULL;
    const char *charset = g_mime_object_get_content_type_parameter(obj, "charset");
    bool attachment = GMIME_IS_MESSAGE_PART(obj) ||
                      (GMIME_IS_PART(obj) && g_mime_part_is_attachment(GMIME_PART(obj))) || filename;

    lua_createtable(L, 0, 8);
    lua_pushinteger(L, ++w->n);
    lua_setfield(L, -2, "index");
    set_str(L, "content_type", type);
    if (charset)
        set_str(L, "charset", charset);
    if (disp)
        set_str(L, "disposition", disp);
    if (filename)
        set_str(L, "filename", filename);
    const char *cid = g_mime_object_get_content_id(obj);
    if (cid)
        set_str(L, "content_id", cid);
    lua_pushboolean(L, attachment);
    lua_setfield(L, -2, "attachment");
    push_bytes(L, obj);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    lua_setfield(L, -3, "size");
    lua_setfield(L, -2, "data");
    if (GMIME_IS_TEXT_PART(obj)) {
        char *text = g_mime_text_part_get_text(GMIME_TEXT_PART(obj));
        push_utf8(L, text, -1);
        g_free(text);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "text");
        /* the first inline text/plain and text/html are the bodies */
        const char *key = NULL;
        if (!attachment && !g_ascii_strcasecmp(type, "text/plain") && !w->text_done) {
            key = "text";
            w->text_done = true;
        } else if (!attachment && !g_ascii_strcasecmp(type, "text/html") && !w->html_done) {
            key = "html";
            w->html_done = true;
        }
        if (key)
            lua_setfield(L, w->result, key);
        else
            lua_pop(L, 1);
    }
    lua_rawseti(L, w->parts, w->n);
    g_free(type);
}

static void mime_init_once(void)
{
    static bool done;
    if (!done) {
        g_mime_init();
        done = true;
    }
}

/* (string|message) -> table | nil, err */
int lua_mime_parse(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING) {
        /* a kurir.message: its bytes through its own raw() */
        luaL_checkudata(L, 1, "kurir.message");
        lua_getfield(L, 1, "raw");
        lua_pushvalue(L, 1);
        lua_call(L, 1, 1);
        lua_replace(L, 1);
    }
    size_t len;
    const char *raw = luaL_checklstring(L, 1, &len);
    mime_init_once();
    GMimeStream *in = g_mime_stream_mem_new_with_buffer(raw, len);
    GMimeParser *parser = g_mime_parser_new_with_stream(in);
    GMimeMessage *m = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    g_object_unref(in);
    if (!m) {
        lua_pushnil(L);
        lua_pushliteral(L, "not a MIME message");
        return 2;
    }
    lua_createtable(L, 0, 12);
    int result = lua_gettop(L);

    GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(m));
    int nh = hl ? g_mime_header_list_get_count(hl) : 0;
    lua_createtable(L, nh, 0);
    for (int i = 0; i < nh; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        lua_createtable(L, 0, 2);
        set_str(L, "name", g_mime_header_get_name(h));
        set_str(L, "value", g_mime_header_get_value(h));
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, result, "headers");

    set_str(L, "subject", g_mime_message_get_subject(m));
    push_addresses(L, g_mime_message_get_from(m));
    lua_setfield(L, result, "from");
    push_addresses(L, g_mime_message_get_addresses(m, GMIME_ADDRESS_TYPE_TO));
    lua_setfield(L, result, "to");
    push_addresses(L, g_mime_message_get_addresses(m, GMIME_ADDRESS_TYPE_CC));
    lua_setfield(L, result, "cc");
    GDateTime *date = g_mime_message_get_date(m);
    if (date) {
        lua_pushinteger(L, (lua_Integer)g_date_time_to_unix(date));
        lua_setfield(L, result, "date");
    }
    const char *mid = g_mime_message_get_message_id(m);
    if (mid)
        set_str(L, "message_id", mid);

    lua_newtable(L);
    struct walk w = { .L = L, .parts = lua_gettop(L), .result = result };
    GMimeObject *top = g_mime_message_get_mime_part(m);
    if (top) {
        if (GMIME_IS_MULTIPART(top))
            g_mime_multipart_foreach(GMIME_MULTIPART(top), visit, &w);
        else
            visit(NULL, top, &w);
    }
    lua_setfield(L, result, "parts");
    g_object_unref(m);
    return 1;
}

void lua_mime_open(lua_State *L)
{
    lua_pushcfunction(L, lua_mime_parse);
    lua_setfield(L, -2, "mime");
}
