-- End to end: regressions found by the code review of the engine's
-- non-pure C files (see the review report). Each test pins one defect; a
-- test fails while its defect is present. Every wait is bounded: a test
-- whose server hangs is stopped by the harness (TERM, then KILL).

local harness = require "harness"
local client = require "smtp_client"

teardown(harness.cleanup)

-- base64 of "\0u\0p" (AUTH PLAIN, user u, password p)
local PLAIN_U_P = "AHUAcA=="

local function session(port, name)
  local c = client.open(port)
  c:expect(220)
  local code, text = c:ehlo(name or "client.e2e.test")
  assert.equals(250, code, text)
  return c
end

-- The process answers a fresh connection (its loop is not stuck).
local function answers(port)
  local c = client.connect(port)
  if not c then return false end
  local code = c:reply(3)
  c:close()
  return code == 220
end

describe("review: Lua objects never outlive their C objects", function()
  it("a kurir.cred kept by the script is closed when its session is torn down mid-hook", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { auth = { plaintext = true }, timeouts = { shutdown = 0.3 } }
      local saved
      kurir.on.auth = function(s, cred)
        saved = cred
        s:log("auth_waits", {})
        kurir.sleep(5)
        return true
      end
      kurir.on.mail = function(s) s:log("mail_waits", {}) kurir.sleep(5) end
      kurir.on.disconnect = function(s)
        if saved then s:log("peek", { c = tostring(saved) }) end
      end
    ]] }
    -- the AUTH session is older, so the grace period closes it first
    local a = session(srv.port)
    local a_id = harness.session_id(srv, a)
    assert(a:send("AUTH PLAIN " .. PLAIN_U_P .. "\r\n"))
    assert(srv:wait_log("event=auth_waits", 10), srv:describe())
    local m = session(srv.port)
    local m_id = harness.session_id(srv, m)
    assert(m:send("MAIL FROM:<a@example.test>\r\n"))
    assert(srv:wait_log("event=mail_waits", 10), srv:describe())
    assert.is_true(srv:signal("TERM"))
    srv:exit_code(10)
    harness.assert_clean(srv)
    -- the MAIL session outlives the AUTH one: its disconnect hook must
    -- peek, and must see the cred closed
    assert.truthy(harness.wait_session_end(srv, a_id, 0), srv:describe())
    local peeks = harness.log_lines(srv, { event = "peek", session = m_id })
    assert.equals(1, #peeks, srv:describe())
    assert.equals("kurir.cred(closed)", peeks[1].fields.c, srv:describe())
    local a_end = srv:log():find("session=" .. a_id .. " event=session_end", 1, true)
    local m_peek = srv:log():find("session=" .. m_id .. " event=peek", 1, true)
    assert.truthy(a_end and m_peek and a_end < m_peek, "the AUTH session did not end first:\n" .. srv:describe())
    harness.finish(srv)
  end)
end)

describe("review: timeouts", function()
  it("the command timeout still applies after a hook that waited longer than it", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { timeouts = { command = 1, hook = 10 } }
      kurir.on.helo = function(s) kurir.sleep(1.5) end
    ]] }
    local c = session(srv.port)
    local code, text = c:reply(6)
    assert.equals(421, code, "idle session after a long hook was never timed out: " .. tostring(text))
    harness.finish(srv)
  end)

  it("the hook wall-clock limit cannot be swallowed by pcall", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { timeouts = { hook = 0.5, shutdown = 1 } }
      kurir.on.helo = function(s)
        for _ = 1, 1e9 do pcall(kurir.sleep, 0.1) end
      end
    ]] }
    local c = client.open(srv.port)
    c:expect(220)
    local code = c:cmd("EHLO client.e2e.test", 5)
    assert.equals(451, code, "hook kept running past its time limit")
    harness.finish(srv)
  end)
end)

describe("review: CPU budget", function()
  it("covers coroutines the hook creates", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { cpu_budget = 0.2, timeouts = { shutdown = 1 } }
      kurir.on.helo = function(s)
        coroutine.wrap(function() local x = 0 while true do x = x + 1 end end)()
      end
    ]] }
    local c = client.open(srv.port)
    c:expect(220)
    local code = c:cmd("EHLO client.e2e.test", 5)
    assert.equals(451, code, "the loop inside a coroutine ran past the CPU budget")
    assert.is_true(answers(srv.port))
    harness.finish(srv)
  end)

  it("covers __close handlers run when a failed hook is reset", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { cpu_budget = 0.2, timeouts = { shutdown = 1 } }
      kurir.on.helo = function(s)
        local guard <close> = setmetatable({}, {
          __close = function() local x = 0 while true do x = x + 1 end end })
        error("hook fails")
      end
    ]] }
    local c = client.open(srv.port)
    c:expect(220)
    local code = c:cmd("EHLO client.e2e.test", 5)
    assert.equals(451, code, "a __close handler ran without a CPU budget")
    assert.is_true(answers(srv.port))
    harness.finish(srv)
  end)
end)

describe("review: reload", function()
  it("an implicit-TLS listener survives a reload to a script without tls", function()
    local port = harness.free_port()
    local srv = harness.start {
      listen = false, wait_port = port,
      script = 'local kurir = require "kurir"\nkurir.configure { listen = { "smtps://127.0.0.1:' ..
        port .. '" }, tls = { self_signed = true } }\n',
    }
    harness.write_file(srv.script, 'local kurir = require "kurir"\nkurir.configure { listen = { ' ..
      '"127.0.0.1:' .. harness.free_port() .. '" } }\n')
    assert.is_true(srv:signal("HUP"))
    assert(srv:wait_log("event=reload", 10), srv:describe())
    -- a TCP connect to the old smtps listener starts a session on the new engine
    local c = assert(client.connect(port))
    local id = harness.session_id(srv, c)
    assert(c:send("\22\3\1\0\1\1"))   -- start of a TLS record; any bytes will do
    c:reply(1)
    c:close()
    assert.truthy(harness.wait_session_end(srv, id), srv:describe())
    assert.is_true(srv:running(), "kurir died:\n" .. srv:describe())
    harness.finish(srv)
  end)
end)

describe("review: STARTTLS", function()
  it("forgets an AUTH done before TLS (RFC 3207 4.2)", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { tls = { self_signed = true }, auth = { plaintext = true } }
      kurir.on.auth = function(s, cred) return cred:verify("p") end
    ]] }
    local py = [[
import base64, socket, ssl, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = c.makefile("rb")
def reply(f):
    while True:
        l = f.readline()
        if not l or l[3:4] != b"-": return l
reply(f)
c.sendall(b"EHLO a\r\n"); reply(f)
c.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n"); print("auth1", reply(f)[:3].decode())
c.sendall(b"STARTTLS\r\n"); print("starttls", reply(f)[:3].decode())
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(c); g = t.makefile("rb")
t.sendall(b"EHLO a\r\n"); reply(g)
t.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n"); print("auth2", reply(g)[:3].decode())
t.sendall(b"QUIT\r\n"); reply(g)
]]
    local dir = harness.tmpdir()
    harness.write_file(dir .. "/c.py", py)
    local rc, out = harness.sh("python3 " .. harness.quote(dir .. "/c.py") .. " " .. srv.port, 20)
    harness.rmtree(dir)
    assert.equals(0, rc, out)
    assert.truthy(out:find("auth1 235", 1, true), out)
    assert.truthy(out:find("starttls 220", 1, true), out)
    assert.truthy(out:find("auth2 235", 1, true), "the plaintext AUTH survived STARTTLS:\n" .. out)
    harness.finish(srv)
  end)
end)

describe("review: scripts", function()
  it("an error inside kurir.log does not glue two log lines together", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.on.helo = function(s)
        local bad = setmetatable({}, { __tostring = function() error("boom") end })
        pcall(kurir.log, "first", { b = bad })
        s:log("second", { ok = "1" })
      end
    ]] }
    local c = session(srv.port)
    c:cmd("QUIT")
    assert(srv:wait_log("event=second", 5), srv:describe())
    for line in srv:log():gmatch("[^\n]+") do
      local _, n = line:gsub("time=", "")
      assert.equals(1, n, "two records on one log line: " .. line)
    end
    harness.finish(srv)
  end)

  it("numeric keys of the session's own table can be read back", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.on.helo = function(s)
        s[1] = "one"
        s:log("keys", { one = tostring(s[1]) })
      end
    ]] }
    local c = session(srv.port)
    c:cmd("QUIT")
    local line = srv:wait_log("[^\n]*event=keys[^\n]*", 5)
    assert.truthy(line and line:find("one=one", 1, true), srv:describe())
    harness.finish(srv)
  end)

  it("a rejected HELO leaves an ESMTP session ESMTP", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.on.helo = function(s, name) if name == "bad.example" then return 550, "no" end end
    ]] }
    local c = session(srv.port)
    c:check("HELO bad.example", 550)
    local code, text = c:cmd("MAIL FROM:<a@example.test>")
    assert.equals(250, code)
    assert.truthy(text:match("^250 2%.1%.0 "), "enhanced status codes dropped: " .. text)
    harness.finish(srv)
  end)
end)
