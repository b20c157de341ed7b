/* test_lstate.c - a state from lstate_new behaves as one from
 * luaL_newstate where a script or an error can tell: warn() (off until
 * "@on", "@off", pieces of one warning, unknown control messages) writes
 * the same bytes to stderr, and an error outside a protected call prints
 * the same PANIC line before the process aborts. Also: a script that
 * makes and drops many small objects runs to the same result. */
#include "lua/lstate.h"
#include "testutil.h"

#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* What fn(L) writes to stderr, for L from make. */
static size_t captured(lua_State *(*make)(void), void (*fn)(lua_State *), char *out, size_t cap)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    lua_State *L = make();
    luaL_openlibs(L);
    fn(L);
    if (make == lstate_new)
        lstate_close(L);
    else
        lua_close(L);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, cap - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return n;
}

static void run(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK) {
        fprintf(stdout, "script error: %s\n", lua_tostring(L, -1));
        CHECK(0);
    }
}

static void warnings(lua_State *L)
{
    run(L, "warn('not shown') "
           "warn('@on') warn('one') warn('two ', 'pieces', '!') warn('@what') warn('@on', 'x') "
           "warn('@off') warn('hidden') warn('@on') warn('again')");
}

static void churn(lua_State *L)
{
    run(L, "local t, s = {}, 0 "
           "for i = 1, 20000 do local v = { i, tostring(i), { i } } "
           "  t[i % 97] = v s = s + #v[2] + v[3][1] end "
           "local parts = {} for i = 1, 300 do parts[#parts + 1] = string.rep('x', i) end "
           "local big = table.concat(parts) "
           "warn('@on') warn(tostring(s) .. ' ' .. #big)");
}

static void test_same_output(void)
{
    char a[4096], b[4096];
    size_t na = captured(luaL_newstate, warnings, a, sizeof(a));
    size_t nb = captured(lstate_new, warnings, b, sizeof(b));
    CHECK_BYTES(b, nb, a, na);
    CHECK(strstr(b, "Lua warning: one\n") != NULL && strstr(b, "hidden") == NULL);

    na = captured(luaL_newstate, churn, a, sizeof(a));
    nb = captured(lstate_new, churn, b, sizeof(b));
    CHECK_BYTES(b, nb, a, na);
    CHECK(na > 0);
}

/* An error outside any protected call in a child: its stderr and how it ended. */
static void panic_in_child(lua_State *(*make)(void), const char *what, char *out, size_t cap, int *status)
{
    fflush(stdout);
    fflush(stderr);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        signal(SIGABRT, SIG_DFL);
        lua_State *L = make();
        if (what)
            lua_pushstring(L, what);
        else
            lua_newtable(L);
        lua_error(L);
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fds[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(fds[0]);
    waitpid(pid, status, 0);
}

static void test_panic(void)
{
    const char *whats[] = {"boom", NULL};
    for (int i = 0; i < 2; i++) {
        char a[512], b[512];
        int sa = 0, sb = 0;
        panic_in_child(luaL_newstate, whats[i], a, sizeof(a), &sa);
        panic_in_child(lstate_new, whats[i], b, sizeof(b), &sb);
        CHECK_MEM(b, strlen(b), a);
        CHECK(WIFSIGNALED(sb) && WTERMSIG(sb) == SIGABRT && WIFSIGNALED(sa) == WIFSIGNALED(sb));
    }
}

int main(void)
{
    test_same_output();
    test_panic();
    return testutil_summary();
}
