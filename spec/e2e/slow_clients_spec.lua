-- End to end: clients that hold a slot without doing work (issue 6.3).
--   * DATA/BDAT: a whole-message deadline (timeouts.data, extended by one
--     second per limits.min_data_rate bytes), answered 421 4.4.2;
--   * commands that change nothing past limits.junk_commands: 421;
--   * the per-client connection limit (IPv6 clients by /limits.ipv6_prefix;
--     the prefix arithmetic is the unit test tests/unit/test_client_key.c,
--     loopback has only ::1);
--   * a failed AUTH is answered after auth.failure_delay, a timer that
--     leaves every other session served meanwhile.

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"

teardown(harness.cleanup)

local function stop(srv)
  client.close_all(srv.port)
  srv:stop()
  harness.assert_clean(srv)
  harness.rmtree(srv.dir)
end

local function to_data(c)
  c:expect(220)
  c:check("EHLO slow.test", 250)
  c:check("MAIL FROM:<a@slow.test>", 250)
  c:check("RCPT TO:<b@slow.test>", 250)
end

describe("the message deadline", function()
  local srv
  lazy_setup(function()
    srv = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.slow.test",
  timeouts = { command = 60, data = 2 * ]] .. harness.scale .. [[ } }   -- min_data_rate: 500 by default
function kurir.on.data() return 250 end
]] }
  end)
  lazy_teardown(function() stop(srv) end)

  it("a client trickling one byte every 0.5 s gets 421 4.4.2 at the deadline, not never", function()
    local c = client.open(srv.port)
    to_data(c)
    c:check("DATA", 354)
    local t0 = socket.gettime()
    local code, text
    -- bounded: 40 bytes (20 s) is far past the 2 s deadline
    for _ = 1, 40 do
      if not c:send("x") then break end
      if c:readable(0.5) then
        code, text = c:reply()
        break
      end
    end
    local held = socket.gettime() - t0
    assert.equals(421, code, text)
    assert.equals("421 4.4.2 mx.slow.test Data received too slowly, closing connection", text)
    assert.is_true(c:closed(5))
    assert.is_true(held < 6 * harness.scale, "held for " .. held .. " s")
    assert.truthy(srv:wait_log("reason=min_data_rate", 5))
    c:close()
  end)

  it("the same with BDAT chunks", function()
    local c = client.open(srv.port)
    to_data(c)
    assert(c:send("BDAT 1000\r\n"))
    local code, text
    for _ = 1, 40 do
      if not c:send("y") then break end
      if c:readable(0.5) then
        code, text = c:reply()
        break
      end
    end
    assert.equals(421, code, text)
    assert.truthy(text:find("4.4.2", 1, true), text)
    c:close()
  end)

  it("a client that keeps the minimum rate may take longer than timeouts.data", function()
    local c = client.open(srv.port)
    to_data(c)
    c:check("DATA", 354)
    local line = ("z"):rep(998) .. "\r\n"
    local t0 = socket.gettime()
    -- 2 KB every 0.25 s (8 KB/s, well above 500 B/s) for 3 s: past the 2 s base
    local n = 0
    while socket.gettime() - t0 < 3 * harness.scale and n < 100 do
      assert(c:send(line .. line))
      n = n + 1
      assert.is_false(c:readable(0.25), "no reply while the data flows")
    end
    c:send(".\r\n")
    c:expect(250)
    c:check("QUIT", 221)
    c:close()
  end)
end)

describe("the junk command limit", function()
  local srv
  lazy_setup(function()
    srv = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.slow.test" }   -- junk_commands: 100 by default
function kurir.on.rcpt(_, r) if r.user == "nobody" then return false end end
function kurir.on.data() return 250 end
]] }
  end)
  lazy_teardown(function() stop(srv) end)

  it("past limits.junk_commands commands that change nothing, 421 and close", function()
    local c = client.open(srv.port)
    c:expect(220)
    c:check("EHLO slow.test", 250)
    for _ = 1, 96 do c:check("NOOP", 250) end
    c:check("RSET", 250)
    c:check("HELP", 214)
    c:check("VRFY someone", 252)
    c:check("MAIL FROM:<a@slow.test>", 250)
    c:check("RCPT TO:<nobody@slow.test>", 550)
    c:check("NOOP", 250)   -- the 101st
    c:expect(421, "421 4.7.0 mx.slow.test Too many commands without mail, closing connection")
    assert.is_true(c:closed(5))
    c:close()
    assert.truthy(srv:wait_log("too_many_junk_commands", 5))
  end)

  it("an accepted message starts the count again", function()
    local c = client.open(srv.port)
    c:expect(220)
    c:check("EHLO slow.test", 250)
    for _ = 1, 100 do c:check("NOOP", 250) end
    c:check("MAIL FROM:<a@slow.test>", 250)
    c:check("RCPT TO:<b@slow.test>", 250)
    c:check("DATA", 354)
    c:check("Subject: x\r\n\r\nbody\r\n.", 250)
    for _ = 1, 100 do c:check("NOOP", 250) end
    c:check("NOOP", 250)
    c:expect(421)
    c:close()
  end)
end)

describe("the per-client connection limit over IPv6", function()
  it("counts connections from ::1 (one /64) against connections_per_ip", function()
    local s6 = socket.tcp6()
    local okb = s6 and s6:bind("::1", 0)
    if s6 then s6:close() end
    if not okb then pending("no IPv6 loopback") return end
    local srv = harness.start { listen = { "[::1]:0" }, script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.slow.test", limits = { connections_per_ip = 2 } }
]] }
    local port = srv.port
    local a = client.open(port, "::1")
    a:expect(220)
    local b = client.open(port, "::1")
    b:expect(220)
    local c = client.open(port, "::1")
    local code, text = c:reply()
    assert.equals(421, code, text)
    assert.truthy(srv:wait_log("reason=\"?connection limit", 5))
    a:close()
    b:close()
    c:close()
    client.close_all(port)
    srv:stop()
    harness.assert_clean(srv)
    harness.rmtree(srv.dir)
  end)
end)

describe("a failed AUTH", function()
  local srv
  local DELAY = 1.5 * harness.scale
  lazy_setup(function()
    srv = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.slow.test", auth = { plaintext = true, failure_delay = ]] .. DELAY .. [[ } }
function kurir.on.auth(_, cred) return cred.password == "right" end
]] }
  end)
  lazy_teardown(function() stop(srv) end)

  local function plain(user, pass)
    return (require "mime").b64("\0" .. user .. "\0" .. pass)
  end

  it("is answered after auth.failure_delay while other sessions are served", function()
    local a = client.open(srv.port)
    a:expect(220)
    a:check("EHLO a.slow.test", 250)
    local t0 = socket.gettime()
    assert(a:send("AUTH PLAIN " .. plain("u", "wrong") .. "\r\n"))
    assert.truthy(srv:wait_log("result=failed", 5), "the hook said no")
    -- another session is served from start to end while a waits
    local b = client.open(srv.port)
    b:expect(220)
    b:check("EHLO b.slow.test", 250)
    b:check("AUTH PLAIN " .. plain("u", "right"), 235)
    b:check("QUIT", 221)
    b:close()
    assert.is_false(a:readable(0), "a's refusal is still held back")
    a:expect(535)
    assert.is_true(socket.gettime() - t0 >= DELAY * 0.9, "answered after the delay")
    -- the session goes on
    a:check("AUTH PLAIN " .. plain("u", "right"), 235)
    a:close()
  end)

  it("a successful AUTH is not delayed", function()
    local c = client.open(srv.port)
    c:expect(220)
    c:check("EHLO c.slow.test", 250)
    local t0 = socket.gettime()
    c:check("AUTH PLAIN " .. plain("u", "right"), 235)
    assert.is_true(socket.gettime() - t0 < DELAY * 0.5)
    c:close()
  end)
end)
