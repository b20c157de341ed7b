-- End to end: a session's lifetime is a reference count (docs/design.md,
-- "Session lifetime"). A connection closed while a hook waits (here: by
-- the shutdown grace timer, which force-closes what is left) drops the
-- connection's reference; the abandoned hook's reference goes with it;
-- the disconnect hook, which may wait too, keeps the session until it
-- ends; then the session is freed (event=session_end) exactly once, the
-- abandoned hook never continues, and the server exits cleanly once the
-- last session is gone.

local harness = require "harness"
local client = require "smtp_client"

local SCRIPT = [=[
local kurir = require "kurir"
kurir.configure { hostname = "mx.e2e.test", timeouts = { shutdown = 0.3 } }

function kurir.on.rcpt(s, rcpt)
  s:log("rcpt-waits", { to = rcpt.address })
  kurir.sleep(60)
  s:log("rcpt-continued", {})
end

function kurir.on.disconnect(s)
  s:log("bye-start", {})
  kurir.sleep(0.2)
  s:log("bye-end", {})
end
]=]

teardown(harness.cleanup)

-- position of the first log line of session id with event ev (nil: none)
local function line_of(srv, id, ev)
  local i = 0
  for line in srv:log():gmatch("[^\n]+") do
    i = i + 1
    local f = harness.logfmt(line)
    if f.session == id and f.event == ev then return i end
  end
end

-- a session that waits in its rcpt hook (the client stays connected)
local function wait_mid_hook(srv, n)
  local c = client.open(srv.port)
  c:expect(220)
  assert.equals(250, (c:ehlo("client.e2e.test")))
  assert.equals(250, (c:cmd("MAIL FROM:<a@e2e.test>")))
  c:send("RCPT TO:<b" .. n .. "@e2e.test>\r\n")
  local id = harness.session_id(srv, c)
  assert(srv:wait_log(function(text)
    return text:find("event=rcpt-waits session=" .. id, 1, true)
        or text:find("session=" .. id .. " event=rcpt-waits", 1, true)
  end, 10), srv:describe())
  return id
end

-- SIGTERM; the grace timer closes the connections whose hooks still wait
local function stop(srv)
  srv:signal("TERM")
  assert(srv:wait_log("event=shutdown_grace_expired", 10), srv:describe())
  assert(srv:exit_code(10), srv:describe())
  assert.equals(0, srv:stop(), srv:describe())
  harness.assert_clean(srv)
end

describe("session lifetime", function()
  it("outlives its connection while the disconnect hook waits, then ends once", function()
    local srv = harness.start { script = SCRIPT }
    local id = wait_mid_hook(srv, 1)
    stop(srv)
    local gone = line_of(srv, id, "disconnect")
    local start = line_of(srv, id, "bye-start")
    local bye_end = line_of(srv, id, "bye-end")
    local ended = line_of(srv, id, "session_end")
    assert(gone and start and bye_end and ended, srv:describe())
    assert.is_true(gone < start and start < bye_end and bye_end < ended, srv:describe())
    assert.is_nil(line_of(srv, id, "rcpt-continued"))
    assert.equals(1, #harness.log_lines(srv, { event = "session_end", session = id }))
    assert(line_of(srv, nil, "stopped") > ended, srv:describe())
    harness.rmtree(srv.dir)
  end)

  it("frees every session closed mid-hook before the server exits", function()
    local srv = harness.start { script = SCRIPT }
    local ids = {}
    for n = 1, 12 do ids[n] = wait_mid_hook(srv, n) end
    stop(srv)
    for _, id in ipairs(ids) do
      assert(line_of(srv, id, "session_end"), "no session_end for " .. id .. "\n" .. srv:describe())
      assert.is_nil(line_of(srv, id, "rcpt-continued"))
    end
    assert.equals(12, #harness.log_lines(srv, { event = "bye-end" }))
    harness.rmtree(srv.dir)
  end)
end)
