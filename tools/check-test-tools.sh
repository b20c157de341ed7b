#!/bin/sh
# check-test-tools.sh - checks, before the end-to-end run, every outside tool
# that the specs drive, so that a missing one stops the run with one clear
# line naming the Debian package to install, not with an assertion deep in
# a spec. `make test-e2e` and `make test-asan` run it first; `make deps`
# installs everything it checks. Nothing in the specs is skipped for a
# missing tool: this script is the only place that looks for one.
#
#   sh tools/check-test-tools.sh [LUA]     (LUA: the interpreter, lua5.4)
#
# Exit 0 when everything is there, 1 (after listing every problem) if not.
LUA=${1:-lua5.4}
problems=0
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "check-test-tools: $1" >&2
    problems=$((problems + 1))
}

need() { # need COMMAND PACKAGE: the command is on PATH
    command -v "$1" >/dev/null 2>&1 || fail "$1 is missing: install $2"
}

need "$LUA" lua5.4
need busted lua-busted
need luacheck lua-check
need python3 python3
need openssl openssl
need curl curl
need swaks swaks
need strace strace

if command -v "$LUA" >/dev/null 2>&1; then
    "$LUA" -e 'require "socket"' >/dev/null 2>&1 ||
        fail "the Lua module socket is missing for $LUA: install lua-socket"
fi

if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import smtplib, ssl, socket, struct, select, threading' >/dev/null 2>&1 ||
        fail "python3 cannot import smtplib/ssl (spec/support/*.py): install python3"
fi

if command -v curl >/dev/null 2>&1; then
    curl -V 2>/dev/null | grep -qw smtps ||
        fail "curl cannot do smtp:// and smtps:// (tls_spec): install curl from Debian"
fi

# the queue specs relay to aiosmtpd under Debian's own python3
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 ||
    fail "/usr/bin/python3 cannot import aiosmtpd (spec/e2e/relay_spec.lua): install python3-aiosmtpd"

# swaks reports its optional modules with --support; the specs use TLS
# (STARTTLS and --tls-on-connect) and AUTH PLAIN/LOGIN/CRAM-MD5.
if command -v swaks >/dev/null 2>&1; then
    swaks --support >"$tmp/swaks" 2>&1
    grep -q '^=== TLS supported' "$tmp/swaks" ||
        fail "swaks cannot do TLS: install libnet-ssleay-perl"
    grep -q '^=== AUTH CRAM-MD5 supported' "$tmp/swaks" ||
        fail "swaks cannot do AUTH CRAM-MD5 (Digest::MD5): install perl"
    grep -q '^=== Basic AUTH supported' "$tmp/swaks" ||
        fail "swaks cannot do AUTH PLAIN/LOGIN (MIME::Base64): install perl"
fi

# The one-write-per-pipelined-group spec attaches strace to the server.
if command -v strace >/dev/null 2>&1; then
    strace -f -o /dev/null true >/dev/null 2>&1 ||
        fail "strace cannot trace here (ptrace refused: kernel.yama.ptrace_scope or a seccomp policy)"
fi

# the browser test (tests/browser/ui_test.py): Debian's chromium driven by
# python3-selenium through chromedriver (chromium-driver, built from the
# same source as chromium: the two must be the same major version)
need chromium chromium
need chromedriver chromium-driver
/usr/bin/python3 -c 'import selenium, sys; sys.exit(int(selenium.__version__.split(".")[0]) < 4)' >/dev/null 2>&1 ||
    fail "/usr/bin/python3 cannot import selenium 4 (tests/browser/ui_test.py): install python3-selenium"
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    browser=$(chromium --version 2>/dev/null | sed -n 's/^Chromium \([0-9]*\)\..*/\1/p')
    driver=$(chromedriver --version 2>/dev/null | sed -n 's/^ChromeDriver \([0-9]*\)\..*/\1/p')
    [ -n "$browser" ] && [ "$browser" = "$driver" ] ||
        fail "chromedriver (${driver:-unknown}) and chromium (${browser:-unknown}) differ in major version: upgrade both chromium and chromium-driver"
fi

# the JS example (examples/js/signup.test.mjs): Node.js and Debian's
# node-nodemailer, found through NODE_PATH as make test-examples sets it
need node nodejs
if command -v node >/dev/null 2>&1; then
    NODE_PATH=/usr/share/nodejs node -e 'require.resolve("nodemailer")' >/dev/null 2>&1 ||
        fail "node cannot load nodemailer from /usr/share/nodejs (examples/js/signup.test.mjs): install node-nodemailer"
fi

if [ "$problems" -gt 0 ]; then
    echo "check-test-tools: $problems problem(s); 'make deps' installs every tool the tests use" >&2
    exit 1
fi
exit 0
