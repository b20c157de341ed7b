-- End to end: SIGTERM/SIGINT (graceful stop, exit 0, a message in flight
-- still gets its 250) and SIGHUP (reload for new sessions; sessions in
-- progress keep their Lua state; a broken script keeps the old one; an
-- implicit-TLS listener survives a reload to a script without tls).

local harness = require "harness"
local client = require "smtp_client"

local function session(port)
  local c = client.open(port)
  c:expect(220)
  local code, text = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  return c
end

-- True once the server no longer takes new sessions: connect refused, or
-- a 421 greeting.
local function refuses(port)
  return harness.wait_for(function()
    local c = client.connect(port)
    if not c then return true end
    local code = c:reply(2)
    c:close()
    return code == 421 or code == nil
  end, 10, 0.1)
end

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("SIGTERM", function()
  it("exits 0 when idle", function()
    local srv = harness.start { script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" } }
    assert.is_true(srv:signal("TERM"))
    assert.equals(0, srv:exit_code(10))
    harness.assert_clean(srv)
  end)

  it("exits 0 on SIGINT too", function()
    local srv = harness.start { script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" } }
    assert.is_true(srv:signal("INT"))
    assert.equals(0, srv:exit_code(10))
    harness.assert_clean(srv)
  end)

  it("stops accepting but lets a transaction in progress finish with 250", function()
    local srv = harness.start { script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" } }
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: in flight\r\n\r\n"))
    assert.is_true(srv:signal("TERM"))
    assert.is_true(refuses(srv.port), "new connections still served after SIGTERM")
    assert(c:send("the end\r\n.\r\n"))
    local text = c:expect(250)
    assert.truthy(text:match("^250 2%.0%.0 "), text)
    local code = c:cmd("QUIT")
    assert.truthy(code == 221 or code == 421 or code == nil, tostring(code))
    assert.is_true(c:closed(10))
    assert.equals(0, srv:exit_code(10))
    local files = harness.maildir_new(srv.dir .. "/mail")
    assert.equals(1, #files)
    assert.truthy(harness.read_file(files[1]):find("Subject: in flight\r\n\r\nthe end\r\n", 1, true))
    harness.assert_clean(srv)
  end)

  it("closes sessions that outlive timeouts.shutdown and still exits 0", function()
    local srv = harness.start {
      script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.e2e.test", timeouts = { shutdown = 1 } }
function kurir.on.data() end
]],
    }
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert.is_true(srv:signal("TERM"))
    assert.is_true(c:closed(10))
    if #c.buf > 0 then
      local code, text = c:reply(1)
      assert.equals(421, code, text)
      assert.truthy(text:match("^421 4%.3%.2 "), text)
    end
    assert.equals(0, srv:exit_code(10))
    harness.assert_clean(srv)
  end)
end)

local function versioned(v)
  return [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.e2e.test" }
local version = "]] .. v .. [["
function kurir.on.rcpt(s, rcpt)
  return 250, "2.1.5 " .. version
end
function kurir.on.data() end
]]
end

describe("SIGHUP", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = versioned("v1") }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  local function count(pattern)
    local n = 0
    for line in srv:log():gmatch("[^\n]+") do
      if line:find(pattern) then n = n + 1 end
    end
    return n
  end

  it("reloads the script for new sessions; open sessions keep the old one", function()
    local old = session(srv.port)
    old:check("MAIL FROM:<a@example.test>", 250)
    old:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 v1")

    local before = count("event=reload")
    harness.write_file(srv.script, versioned("v2"))
    assert.is_true(srv:signal("HUP"))
    assert.truthy(harness.wait_for(function() return count("event=reload") > before end, 10), srv:describe())

    local new = session(srv.port)
    new:check("MAIL FROM:<a@example.test>", 250)
    new:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 v2")

    old:check("RCPT TO:<c@example.test>", 250, "250 2.1.5 v1")
    old:check("DATA", 354)
    assert(old:send("Subject: x\r\n\r\nx\r\n.\r\n"))
    old:expect(250)
    old:check("QUIT", 221)
    new:close()
    old:close()
  end)

  it("keeps the running script when the new one is broken, and logs an error", function()
    local good = session(srv.port)
    good:check("MAIL FROM:<a@example.test>", 250)
    local code, current = good:cmd("RCPT TO:<b@example.test>")
    assert.equals(250, code)
    good:close()

    local function failures()
      local n = 0
      for line in srv:log():gmatch("[^\n]+") do
        local l = line:lower()
        if l:find("reload", 1, true) and (l:find("error", 1, true) or l:find("fail", 1, true)) then n = n + 1 end
      end
      return n
    end
    local before = failures()
    harness.write_file(srv.script, "local kurir = require \"kurir\"\nthis is not lua\n")
    assert.is_true(srv:signal("HUP"))
    assert.truthy(harness.wait_for(function() return failures() > before end, 10), srv:describe())
    assert.truthy(srv:log():find("script.lua:2", 1, true), srv:describe())
    assert.is_true(srv:running())

    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250, current)
    c:close()
  end)
end)

describe("SIGHUP and implicit TLS", function()

  it("an implicit-TLS listener survives a reload to a script without tls", function()
    local srv = harness.start {
      listen = false,
      script = 'local kurir = require "kurir"\nkurir.configure { listen = { "smtps://127.0.0.1:0" }, ' ..
        'tls = { self_signed = true } }\n',
    }
    local port = srv.port
    harness.write_file(srv.script, 'local kurir = require "kurir"\nkurir.configure { listen = { ' ..
      '"127.0.0.1:0" } }\n')
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
