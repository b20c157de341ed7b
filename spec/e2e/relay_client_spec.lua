-- End to end: what kurir's SMTP/LMTP client does on the wire, seen by a
-- small Python receiver (spec/support/smtp_sink.py) on 127.0.0.1 or a
-- Unix socket: several recipients of a message in one transaction with
-- their own results, PIPELINING (MAIL, RCPTs and DATA in one write),
-- connection reuse bounded by queue.connection_idle and
-- queue.connection_messages, AUTH LOGIN, an 8-bit message to a peer
-- without 8BITMIME (5.6.3), LMTP over a Unix socket.

local harness = require "harness"
local client = require "smtp_client"

-- arg[1] DIR, arg[2] the sink's port or socket path, arg[3] the sink's
-- AUTH LOGIN password ("-": no auth). One route per domain; DSNs go to
-- the Maildir DIR/bounces.
local SENDER = [[
local kurir = require "kurir"
local dir, where = arg[1], arg[2]
kurir.configure {
  hostname = "tx.e2e.test",
  queue = { dir = dir .. "/queue", retry = { 0.2 }, lifetime = 60, concurrency = 1,
            connection_idle = 3, connection_messages = 3 },
}
local routes = {}
if where:sub(1, 1) == "/" then
  routes["lmtp.test"] = kurir.lmtp { socket = where }
else
  local auth = arg[3] ~= "-" and { user = "relayuser", password = arg[3] } or nil
  routes["relay.test"] = kurir.relay { host = "127.0.0.1", port = tonumber(where), tls = "none", auth = auth }
end
local bounces = kurir.maildir(dir .. "/bounces")
function kurir.on.rcpt(s, rcpt)
  if s.internal then rcpt.route = bounces return end
  rcpt.route = routes[rcpt.domain]
  if not rcpt.route then return 550, "5.1.1 No such domain" end
end
]]

local function start_sink(opts)
  local dir = harness.tmpdir()
  local ready = dir .. "/ready"
  local cmd = "/usr/bin/python3 " .. harness.quote(harness.root .. "/spec/support/smtp_sink.py") ..
    " --dir " .. harness.quote(dir) .. " --port-file " .. harness.quote(ready) ..
    " --lifetime " .. (120 * harness.scale)
  for _, o in ipairs(opts or {}) do
    cmd = cmd .. " " .. harness.quote((o:gsub("{dir}", dir)))
  end
  os.execute(cmd .. " </dev/null >" .. harness.quote(dir .. "/out") .. " 2>&1 & echo $! > " ..
    harness.quote(dir .. "/pid"))
  local where = harness.wait_for(function() return harness.read_file(ready) end, 10)
  assert.truthy(where, "smtp_sink.py did not start: " .. tostring(harness.read_file(dir .. "/out")))
  local pid = tonumber(harness.read_file(dir .. "/pid"):match("%d+"))
  local sink = { dir = dir, where = where }
  function sink.log() return harness.read_file(dir .. "/log") or "" end
  function sink.lines(prefix)
    local out = {}
    for line in sink.log():gmatch("[^\n]+") do
      if line:sub(1, #prefix) == prefix then out[#out + 1] = line end
    end
    return out
  end
  function sink.wait(prefix, n)
    return harness.wait_for(function() return #sink.lines(prefix) >= n end, 10)
  end
  function sink.stop()
    os.execute("kill " .. pid .. " 2>/dev/null")
    harness.rmtree(dir)
  end
  return sink
end

-- One message with several recipients over an open session; the queue id.
local function send(c, from, rcpts, body)
  c:check("MAIL FROM:<" .. from .. ">", 250)
  for _, r in ipairs(rcpts) do c:check("RCPT TO:<" .. r .. ">", 250) end
  c:check("DATA", 354)
  assert(c:send(body .. "\r\n.\r\n"))
  local text = c:expect(250)
  local id = text:match("queued as (%S+)$")
  assert.truthy(id, text)
  return id
end

local function session(srv)
  local c = client.open(srv.port)
  c:expect(220)
  assert.equals(250, (c:ehlo("client.e2e.test")))
  return c
end

describe("the SMTP/LMTP client of the queue", function()
  local tx, sink
  after_each(function()
    harness.finish(tx)
    if sink then sink.stop() end
    tx, sink = nil, nil
  end)

  it("sends a message's recipients in one pipelined transaction, reusing the connection", function()
    sink = start_sink()
    tx = harness.start { script = SENDER, args = { "{dir}", sink.where, "-" } }
    local c = session(tx)
    local ids = {}
    for i = 1, 5 do
      ids[i] = send(c, "alice@src.test", { "bob@relay.test", "nobody@relay.test", "carol@relay.test" },
        "Subject: batch " .. i .. "\r\nMessage-ID: <b" .. i .. "@e2e.test>\r\n\r\nmessage " .. i)
    end
    c:close()
    for _, id in ipairs(ids) do
      assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=2 failed=1"), tx:describe())
    end
    -- five transactions, each with both good recipients
    local txns = sink.lines("txn ")
    assert.equals(5, #txns, sink.log())
    for _, t in ipairs(txns) do
      assert.truthy(t:find(" alice@src.test bob@relay.test,carol@relay.test ", 1, true), t)
    end
    -- per-recipient results in the queue's log
    for _, id in ipairs(ids) do
      assert.truthy(tx:log():find("event=delivered id=" .. id .. " rcpt=bob@relay.test agent=relay"), tx:describe())
      assert.truthy(tx:log():find("event=failed id=" .. id .. " rcpt=nobody@relay.test agent=relay " ..
        "attempts=1 status=5.1.1"), tx:describe())
    end
    -- MAIL, the three RCPTs and DATA in one read (one write by the client)
    local pipelined = 0
    for _, r in ipairs(sink.lines("read ")) do
      if r:find("MAIL,RCPT,RCPT,RCPT,DATA$") then pipelined = pipelined + 1 end
    end
    assert.equals(5, pipelined, sink.log())
    -- connection_messages = 3: five messages over two connections
    assert.equals(2, #sink.lines("conn "), sink.log())
    local on_first = 0
    for _, t in ipairs(txns) do
      if t:find("^txn 1 ") then on_first = on_first + 1 end
    end
    assert.equals(3, on_first, sink.log())
    -- connection_idle = 3: the second one is closed with QUIT once idle
    assert.truthy(sink.wait("quit ", 2), sink.log())
    -- the refused recipient is reported, once per message
    assert.truthy(harness.wait_for(function() return #harness.maildir_new(tx.dir .. "/bounces") == 5 end))
    local dsn = harness.read_file(harness.maildir_new(tx.dir .. "/bounces")[1])
    assert.truthy(dsn:find("Final-Recipient: rfc822; nobody@relay.test\r\nAction: failed\r\nStatus: 5.1.1",
      1, true), dsn)
    assert.falsy(dsn:find("Final-Recipient: rfc822; bob@relay.test", 1, true), dsn)
  end)

  it("sends one command at a time to a server without PIPELINING", function()
    sink = start_sink { "--no-pipelining" }
    tx = harness.start { script = SENDER, args = { "{dir}", sink.where, "-" } }
    local c = session(tx)
    local id = send(c, "alice@src.test", { "bob@relay.test", "nobody@relay.test", "carol@relay.test" },
      "Subject: one by one\r\n\r\nbody")
    c:close()
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=2 failed=1"), tx:describe())
    local txns = sink.lines("txn ")
    assert.equals(1, #txns, sink.log())
    assert.truthy(txns[1]:find("bob@relay.test,carol@relay.test", 1, true), txns[1])
    for _, r in ipairs(sink.lines("read ")) do
      assert.truthy(r:find("^read %d+ %u+$"), sink.log())
    end
  end)

  it("authenticates with AUTH LOGIN when the smart host offers only LOGIN", function()
    sink = start_sink { "--auth-login", "relayuser:s3cret" }
    tx = harness.start { script = SENDER, args = { "{dir}", sink.where, "s3cret" } }
    local c = session(tx)
    local id = send(c, "alice@src.test", { "bob@relay.test" }, "Subject: auth\r\n\r\nbody")
    c:close()
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=1"), tx:describe())
    assert.same({ "auth 1 relayuser ok" }, sink.lines("auth "))
  end)

  it("fails the recipients when the smart host refuses the AUTH LOGIN password", function()
    sink = start_sink { "--auth-login", "relayuser:s3cret" }
    tx = harness.start { script = SENDER, args = { "{dir}", sink.where, "wrong" } }
    local c = session(tx)
    local id = send(c, "alice@src.test", { "bob@relay.test" }, "Subject: auth\r\n\r\nbody")
    c:close()
    assert.truthy(tx:wait_log("event=failed id=" .. id .. " .-5%.7%.8 127%.0%.0%.1 refused AUTH"), tx:describe())
    assert.equals(0, #sink.lines("txn "))
  end)

  it("bounces an 8-bit message with 5.6.3 when the peer has no 8BITMIME, sends 7-bit ones", function()
    sink = start_sink { "--no-8bitmime" }
    tx = harness.start { script = SENDER, args = { "{dir}", sink.where, "-" } }
    local c = session(tx)
    local id8 = send(c, "alice@src.test", { "bob@relay.test" }, "Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve")
    local id7 = send(c, "alice@src.test", { "bob@relay.test" }, "Subject: plain\r\n\r\nascii only")
    c:close()
    assert.truthy(tx:wait_log("event=queue_done id=" .. id8 .. " delivered=0 failed=1"), tx:describe())
    assert.truthy(tx:wait_log("event=queue_done id=" .. id7 .. " delivered=1"), tx:describe())
    assert.truthy(tx:log():find("event=failed id=" .. id8 .. " .-status=5%.6%.3 .-does not offer 8BITMIME"),
      tx:describe())
    assert.equals(1, #sink.lines("txn "), sink.log())
    assert.truthy(harness.wait_for(function() return #harness.maildir_new(tx.dir .. "/bounces") == 1 end))
    local dsn = harness.read_file(harness.maildir_new(tx.dir .. "/bounces")[1])
    assert.truthy(dsn:find("Status: 5.6.3", 1, true), dsn)
  end)

  it("passes BODY=8BITMIME to a peer that offers 8BITMIME", function()
    sink = start_sink()
    tx = harness.start { script = SENDER, args = { "{dir}", sink.where, "-" } }
    local c = session(tx)
    local id = send(c, "alice@src.test", { "bob@relay.test" }, "Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve")
    c:close()
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=1"), tx:describe())
    assert.truthy(sink.lines("txn ")[1]:find(" BODY=8BITMIME$"), sink.log())
  end)

  it("delivers over LMTP on a Unix socket with one reply per recipient", function()
    local sdir = harness.tmpdir()
    sink = start_sink { "--lmtp", "--unix", sdir .. "/lmtp.sock" }
    tx = harness.start { script = SENDER, args = { "{dir}", sdir .. "/lmtp.sock", "-" } }
    local c = session(tx)
    local id = send(c, "alice@src.test", { "bob@lmtp.test", "full@lmtp.test", "nobody@lmtp.test", "carol@lmtp.test" },
      "Subject: lmtp\r\n\r\nover a unix socket\r\n..dot")
    c:close()
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=2 failed=2"), tx:describe())
    local txns = sink.lines("txn ")
    assert.equals(1, #txns, sink.log())
    assert.truthy(txns[1]:find("bob@lmtp.test,full@lmtp.test,carol@lmtp.test", 1, true), txns[1])
    local log = tx:log()
    assert.truthy(log:find("event=delivered id=" .. id .. " rcpt=bob@lmtp.test agent=lmtp"), log)
    assert.truthy(log:find("event=delivered id=" .. id .. " rcpt=carol@lmtp.test agent=lmtp"), log)
    assert.truthy(log:find("event=failed id=" .. id .. " rcpt=full@lmtp.test agent=lmtp attempts=1 status=5.2.2"), log)
    assert.truthy(log:find("event=failed id=" .. id .. " rcpt=nobody@lmtp.test agent=lmtp attempts=1 status=5.1.1"),
      log)
    assert.truthy(harness.read_file(sink.dir .. "/msg-1.eml"):find("\r\n.dot", 1, true))
    harness.rmtree(sdir)
  end)

  it("refuses a relative LMTP socket path at load, naming the script line", function()
    local rc, out = harness.run { script = 'local kurir = require "kurir"\n' ..
      'local r = kurir.lmtp { socket = "lmtp.sock" }\n', args = { "--check", "{script}" } }
    assert.are_not.equal(0, rc)
    assert.truthy(out:find("script.lua:2: kurir.lmtp: socket must be an absolute path", 1, true), out)
  end)
end)
