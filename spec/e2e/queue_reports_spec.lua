-- End to end: the queue's reports beyond the final DSN. Delay warnings
-- (queue.delay_warning, RFC 3461 NOTIFY=DELAY): one RFC 3464 report with
-- Action: delayed per recipient that wants one, never to <>, none when
-- off. A report the script's rcpt hook will not route to the sender goes
-- to postmaster@<hostname>; when that is refused too the message stays
-- queued, held, until `kurir queue release` (or delete).

local harness = require "harness"
local client = require "smtp_client"

-- arg[1] DIR, arg[2] queue.delay_warning ("false": off). Reports to
-- senders in norep.test are refused; postmaster is routed only while the
-- file DIR/pm-ok exists.
local SCRIPT = [[
local kurir = require "kurir"
local dir = arg[1]
local warn = arg[2] == "false" and false or tonumber(arg[2])
kurir.configure {
  hostname = "mx.e2e.test",
  queue = { dir = dir .. "/queue", retry = { 0.2 }, lifetime = 60, delay_warning = warn },
}
local routes = {
  ["later.test"] = kurir.pipe { "/bin/sh", "-c", "echo 'try later' >&2; exit 75" },
  ["fail.test"]  = kurir.pipe { "/bin/sh", "-c", "echo 'user unknown here' >&2; exit 67" },
}
local bounces = kurir.maildir(dir .. "/bounces")
local postmaster = kurir.maildir(dir .. "/postmaster")
function kurir.on.rcpt(s, rcpt)
  if s.internal then
    if rcpt.domain == "norep.test" then return 550, "5.1.1 no reports there" end
    if rcpt.user == "postmaster" then
      local f = io.open(dir .. "/pm-ok")
      if not f then return 550, "5.1.1 no postmaster yet" end
      f:close()
      rcpt.route = postmaster
      return
    end
    rcpt.route = bounces
    return
  end
  rcpt.route = routes[rcpt.domain]
  if not rcpt.route then return 550, "5.1.1 No such domain" end
end
]]

local function session(srv)
  local c = client.open(srv.port)
  c:expect(220)
  assert.equals(250, (c:ehlo("client.e2e.test")))
  return c
end

local function send(c, from, rcpts)
  c:check("MAIL FROM:<" .. from .. ">", 250)
  for _, r in ipairs(rcpts) do c:check("RCPT TO:<" .. r[1] .. ">" .. (r[2] or ""), 250) end
  c:check("DATA", 354)
  assert(c:send("Subject: reports\r\nMessage-ID: <rep@e2e.test>\r\n\r\nbody\r\n.\r\n"))
  local text = c:expect(250)
  local id = text:match("queued as (%S+)$")
  assert.truthy(id, text)
  return id
end

local function deferrals(srv, id)
  return harness.count_log(srv, "event=deferred id=" .. id .. " ")
end

describe("queue reports", function()
  local srv
  after_each(function()
    harness.finish(srv)
    srv = nil
  end)

  it("warns once per recipient about a delay, honouring NOTIFY, never to <>", function()
    srv = harness.start { script = SCRIPT, args = { "{dir}", "0.5" } }
    local c = session(srv)
    local id = send(c, "alice@src.test", {
      { "a@later.test" },                               -- no NOTIFY: FAILURE,DELAY
      { "b@later.test", " NOTIFY=FAILURE" },
      { "c@later.test", " NOTIFY=DELAY,FAILURE" },
      { "d@later.test", " NOTIFY=NEVER" },
    })
    local null = send(c, "", { { "e@later.test" } })
    c:close()
    assert.truthy(srv:wait_log("event=dsn id=" .. id .. " .-kind=delay to=alice@src.test"), srv:describe())
    -- it keeps being retried; the warning is not repeated
    assert.truthy(harness.wait_for(function() return deferrals(srv, id) >= 4 * 6 end, 20), srv:describe())
    assert.truthy(harness.wait_for(function() return deferrals(srv, null) >= 6 end, 20), srv:describe())
    assert.truthy(harness.wait_for(function() return #harness.maildir_new(srv.dir .. "/bounces") == 1 end))
    assert.equals(1, harness.count_log(srv, "event=dsn .*kind=delay"), srv:describe())
    assert.equals(0, harness.count_log(srv, "event=dsn id=" .. null), srv:describe())
    local dsn = harness.read_file(harness.maildir_new(srv.dir .. "/bounces")[1])
    assert.truthy(dsn:find("Subject: Delayed Mail (still being retried)", 1, true), dsn)
    for _, who in ipairs { "a", "c" } do
      assert.truthy(dsn:find("Final-Recipient: rfc822; " .. who .. "@later.test\r\nAction: delayed\r\n" ..
        "Status: 4.3.0\r\nWill-Retry-Until: ", 1, true), dsn)
    end
    assert.falsy(dsn:find("b@later.test", 1, true), dsn)
    assert.falsy(dsn:find("d@later.test", 1, true), dsn)
    -- durable: the status log says who was warned
    local st = harness.read_file(srv.dir .. "/queue/st/" .. id)
    assert.truthy(st:find("\n0 warned ", 1, true) or st:find("^0 warned "), st)
    assert.truthy(st:find("\n2 warned ", 1, true), st)
    assert.falsy(st:find("\n1 warned ", 1, true), st)
  end)

  it("sends no delay warnings when queue.delay_warning = false", function()
    srv = harness.start { script = SCRIPT, args = { "{dir}", "false" } }
    local c = session(srv)
    local id = send(c, "alice@src.test", { { "a@later.test", " NOTIFY=DELAY" } })
    c:close()
    assert.truthy(harness.wait_for(function() return deferrals(srv, id) >= 5 end, 20), srv:describe())
    assert.equals(0, harness.count_log(srv, "event=dsn "), srv:describe())
  end)

  it("sends a report the hook refuses for the sender to the postmaster", function()
    srv = harness.start { script = SCRIPT, args = { "{dir}", "false" } }
    harness.write_file(srv.dir .. "/pm-ok", "")
    local c = session(srv)
    local id = send(c, "stranger@norep.test", { { "x@fail.test" } })
    c:close()
    assert.truthy(srv:wait_log("event=queue_done id=" .. id .. " delivered=0 failed=1"), srv:describe())
    assert.truthy(srv:log():find("event=dsn_unroutable id=" .. id .. " .-kind=final to=stranger@norep.test"),
      srv:describe())
    assert.truthy(srv:log():find("event=dsn id=" .. id .. " .-kind=final to=postmaster@mx.e2e.test"),
      srv:describe())
    assert.truthy(harness.wait_for(function() return #harness.maildir_new(srv.dir .. "/postmaster") == 1 end))
    local dsn = harness.read_file(harness.maildir_new(srv.dir .. "/postmaster")[1])
    assert.truthy(dsn:find("Final-Recipient: rfc822; x@fail.test\r\nAction: failed", 1, true), dsn)
  end)

  it("holds the message when nobody can get its report, until it is released", function()
    srv = harness.start { script = SCRIPT, args = { "{dir}", "false" } }
    local c = session(srv)
    local id = send(c, "stranger@norep.test", { { "x@fail.test" } })
    c:close()
    assert.truthy(srv:wait_log("event=dsn_held id=" .. id), srv:describe())
    assert.equals(0, harness.count_log(srv, "event=queue_done id=" .. id), srv:describe())
    local spool = " --spool " .. harness.quote(srv.dir .. "/queue")
    local kq = harness.quote(harness.bin) .. " queue "
    local rc, out = harness.sh(kq .. "list --json" .. spool)
    assert.equals(0, rc, out)
    assert.truthy(out:find('"id": "' .. id .. '"', 1, true), out)
    assert.truthy(out:find('"held": true', 1, true), out)
    assert.truthy(out:find('"address": "x@fail.test", "status": "failed"', 1, true), out)
    -- a postmaster appears; the admin releases the message: the report goes out
    harness.write_file(srv.dir .. "/pm-ok", "")
    rc, out = harness.sh(kq .. "release " .. id .. spool)
    assert.equals(0, rc, out)
    assert.truthy(srv:wait_log("event=queue_done id=" .. id .. " delivered=0 failed=1"), srv:describe())
    assert.truthy(harness.wait_for(function() return #harness.maildir_new(srv.dir .. "/postmaster") == 1 end))
    rc, out = harness.sh(kq .. "list --json" .. spool)
    assert.equals(0, rc, out)
    assert.falsy(out:find(id, 1, true), out)
  end)
end)
