-- End to end: delivery over SMTP from the queue (kurir.relay), MX delivery
-- through the test DNS server, Python's aiosmtpd as a relay target, and a
-- Lua agent (kurir.deliver). All on 127.0.0.1.

local harness = require "harness"
local client = require "smtp_client"

-- The receiving kurir: stores msg:raw() in DIR/<rcpt>.eml; "nobody" is
-- refused (550 5.1.1), "later" gets a 451 the first time.
local RECEIVER = [[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure { hostname = "rx.e2e.test" }
local seen = {}
function kurir.on.rcpt(s, rcpt)
  if rcpt.user == "nobody" then return 550, "5.1.1 No such user here" end
  if rcpt.user == "later" and not seen[rcpt.address] then
    seen[rcpt.address] = true
    return 451, "4.2.0 Come back later"
  end
end
function kurir.on.data(s, msg)
  for _, r in ipairs(msg.rcpts) do
    local f = assert(io.open(dir .. "/" .. r.address .. ".eml", "wb"))
    f:write("MAIL FROM:", msg.from.address, "\n", msg:raw())
    f:close()
  end
  return 250, "2.0.0 stored " .. msg.id
end
]]

-- The sending kurir: arg[1] DIR, arg[2] the receiver's port, arg[3] a DNS
-- server "127.0.0.1:PORT" (or "-").
local SENDER = [[
local kurir = require "kurir"
local dir, port = arg[1], tonumber(arg[2])
local cfg = {
  hostname = "tx.e2e.test",
  queue = { dir = dir .. "/queue", retry = { 0.2, 0.3 }, lifetime = 30 },
}
if arg[3] ~= "-" then cfg.dns = { servers = { arg[3] }, timeout = 2 } end
kurir.configure(cfg)
local calls = 0
local routes = {
  ["relay.test"]    = kurir.relay { host = "127.0.0.1", port = port, tls = "none" },
  ["tlsreq.test"]   = kurir.relay { host = "127.0.0.1", port = port, tls = "required" },
  ["mxdeliver.test"] = kurir.relay { port = port },
  ["nullmx.test"]   = kurir.relay { port = port },
  ["nomx.test"]     = kurir.relay { port = port },
  ["lmtp.test"]     = kurir.lmtp { host = "127.0.0.1", port = port },
  ["lua.test"]      = kurir.deliver(function(msg, rcpts)
    calls = calls + 1
    if calls == 1 then return nil, "4.3.0 first call fails" end
    kurir.sleep(0.01)
    local f = assert(io.open(dir .. "/lua-" .. rcpts[1].address, "wb"))
    f:write(msg:raw())
    f:close()
    return true
  end, "store"),
}
local bounces = kurir.maildir(dir .. "/bounces")
function kurir.on.rcpt(s, rcpt)
  if s.internal then rcpt.route = bounces return end
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

local function send(srv, from, rcpt, body)
  local c = session(srv)
  c:check("MAIL FROM:<" .. from .. ">", 250)
  c:check("RCPT TO:<" .. rcpt .. ">", 250)
  c:check("DATA", 354)
  assert(c:send(body .. "\r\n.\r\n"))
  local text = c:expect(250)
  c:close()
  return text:match("queued as (%S+)$")
end

local function start_dns()
  local dir = harness.tmpdir()
  local pf = dir .. "/port"
  os.execute("python3 " .. harness.quote(harness.root .. "/spec/support/dns_server.py") ..
    " --port-file " .. harness.quote(pf) .. " --lifetime " .. (120 * harness.scale) ..
    " </dev/null >/dev/null 2>" .. harness.quote(dir .. "/log") .. " & echo $! > " ..
    harness.quote(dir .. "/pid"))
  local port = harness.wait_for(function()
    local t = harness.read_file(pf)
    return t and tonumber(t:match("%d+"))
  end, 10)
  assert(port, "dns_server.py did not start")
  local pid = tonumber(harness.read_file(dir .. "/pid"):match("%d+"))
  return { port = port, stop = function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    harness.rmtree(dir)
  end }
end

-- dot-stuffed on the wire: the message itself has ".leading dot"
local MSG = "Subject: relayed\r\nMessage-ID: <r1@e2e.test>\r\n\r\n..leading dot\r\nbody"

describe("relaying from the queue", function()
  local rx, tx, dns
  local function start(dns_port)
    rx = harness.start { script = RECEIVER, args = { "{dir}" } }   -- an ephemeral port
    tx = harness.start { script = SENDER, args = { "{dir}", tostring(rx.port), dns_port or "-" } }
    return rx.port
  end
  after_each(function()
    harness.finish(tx)
    harness.finish(rx)
    if dns then dns.stop() end
    tx, rx, dns = nil, nil, nil
  end)

  it("relays kurir -> kurir over SMTP, dot-stuffing kept whole", function()
    start()
    local id = send(tx, "alice@src.test", "bob@relay.test", MSG)
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=1"), tx:describe())
    local got = harness.read_file(rx.dir .. "/bob@relay.test.eml")
    assert.truthy(got, rx:describe())
    assert.truthy(got:find("^MAIL FROM:alice@src.test\n"), got)
    assert.truthy(got:find("\r\n.leading dot\r\nbody", 1, true), got)
    assert.truthy(got:find("by tx.e2e.test (kurir)", 1, true), got)
  end)

  it("relays a message's recipients kurir -> kurir in one transaction, each with its own result", function()
    start()
    local c = session(tx)
    c:check("MAIL FROM:<alice@src.test>", 250)
    for _, r in ipairs { "bob", "nobody", "carol" } do c:check("RCPT TO:<" .. r .. "@relay.test>", 250) end
    c:check("DATA", 354)
    assert(c:send(MSG .. "\r\n.\r\n"))
    local id = c:expect(250):match("queued as (%S+)$")
    c:close()
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=2 failed=1"), tx:describe())
    -- the receiver saw one message for both accepted recipients
    assert.equals(1, harness.count_log(rx, "event=message "), rx:describe())
    assert.truthy(rx:log():find("event=message .-rcpts=\"?bob@relay.test,carol@relay.test"), rx:describe())
    assert.truthy(tx:log():find("event=failed id=" .. id .. " rcpt=nobody@relay.test agent=relay attempts=1 " ..
      "status=5.1.1"), tx:describe())
    assert.truthy(harness.read_file(rx.dir .. "/bob@relay.test.eml"))
    assert.truthy(harness.read_file(rx.dir .. "/carol@relay.test.eml"))
  end)

  it("retries a 4xx from the receiver and delivers on the next attempt", function()
    start()
    local id = send(tx, "alice@src.test", "later@relay.test", MSG)
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=1"), tx:describe())
    assert.truthy(tx:log():find("event=deferred id=" .. id .. " .-Come back later"), tx:describe())
    assert.truthy(harness.read_file(rx.dir .. "/later@relay.test.eml"))
  end)

  it("bounces a 5xx with a DSN carrying the receiver's status and text", function()
    start()
    local id = send(tx, "alice@src.test", "nobody@relay.test", MSG)
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=0 failed=1"), tx:describe())
    assert.truthy(tx:wait_log("event=delivered id=%S+ rcpt=alice@src.test agent=maildir"))
    local files = harness.maildir_new(tx.dir .. "/bounces")
    assert.equals(1, #files)
    local dsn = harness.read_file(files[1])
    local block = "Final-Recipient: rfc822; nobody@relay.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    assert.truthy(dsn:find(block, 1, true), dsn)
    assert.truthy(dsn:find("No such user here", 1, true), dsn)
  end)

  it("defers while the receiver is down and delivers once it is up", function()
    -- a receiver's ephemeral port, then the receiver goes away
    local first = harness.start { script = RECEIVER, args = { "{dir}" } }
    local port = first.port
    harness.finish(first)
    tx = harness.start { script = SENDER, args = { "{dir}", tostring(port), "-" } }
    local id = send(tx, "alice@src.test", "bob@relay.test", MSG)
    assert.truthy(tx:wait_log("event=deferred id=" .. id .. " .-connect to 127.0.0.1"), tx:describe())
    rx = harness.start { script = RECEIVER, args = { "{dir}" }, listen = { "127.0.0.1:" .. port } }
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=1"), tx:describe())
    assert.truthy(harness.read_file(rx.dir .. "/bob@relay.test.eml"))
  end)

  it("defers when tls = required and the peer offers no STARTTLS", function()
    start()
    local id = send(tx, "alice@src.test", "bob@tlsreq.test", MSG)
    assert.truthy(tx:wait_log("event=deferred id=" .. id .. " .-4%.7%.5 TLS required"), tx:describe())
    assert.is_nil(harness.read_file(rx.dir .. "/bob@tlsreq.test.eml"))
  end)

  it("delivers to the MX of the recipient domain, falls back to A without MX, refuses a null MX", function()
    dns = start_dns()
    start("127.0.0.1:" .. dns.port)
    local id1 = send(tx, "alice@src.test", "bob@mxdeliver.test", MSG)
    local id2 = send(tx, "alice@src.test", "carol@nomx.test", MSG)
    local id3 = send(tx, "alice@src.test", "dave@nullmx.test", MSG)
    assert.truthy(tx:wait_log("event=queue_done id=" .. id1 .. " delivered=1"), tx:describe())
    assert.truthy(tx:wait_log("event=queue_done id=" .. id2 .. " delivered=1"), tx:describe())
    assert.truthy(tx:wait_log("event=failed id=" .. id3 .. " .-status=5%.1%.10"), tx:describe())
    assert.truthy(harness.read_file(rx.dir .. "/bob@mxdeliver.test.eml"))
    assert.truthy(harness.read_file(rx.dir .. "/carol@nomx.test.eml"))
  end)

  it("runs a kurir.deliver function in a task, retrying its temporary failure", function()
    start()
    local id = send(tx, "alice@src.test", "zed@lua.test", MSG)
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=1"), tx:describe())
    assert.truthy(tx:log():find("event=deferred id=" .. id .. " .-first call fails"), tx:describe())
    assert.truthy(harness.read_file(tx.dir .. "/lua-zed@lua.test"):find(".leading dot", 1, true))
  end)

  it("relays to Python's aiosmtpd", function()
    assert(os.execute("/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null"),
      "Debian's python3 cannot import aiosmtpd: install python3-aiosmtpd (make deps)")
    local dir = harness.tmpdir()
    harness.write_file(dir .. "/rx.py", [[
import sys, time
from aiosmtpd.controller import Controller
class H:
    async def handle_DATA(self, server, session, envelope):
        with open(sys.argv[2] + "/got.eml", "wb") as f:
            f.write(envelope.content)
        with open(sys.argv[2] + "/rcpts", "w") as f:
            f.write(",".join(envelope.rcpt_tos))
        return "250 OK"
import socket
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
free = probe.getsockname()[1]
probe.close()
c = Controller(H(), hostname="127.0.0.1", port=free)
c.start()
with open(sys.argv[2] + "/ready.tmp", "w") as f:
    f.write(str(free))
import os
os.rename(sys.argv[2] + "/ready.tmp", sys.argv[2] + "/ready")
time.sleep(60)
]])
    os.execute("/usr/bin/python3 " .. harness.quote(dir .. "/rx.py") .. " 0 " .. harness.quote(dir) ..
      " >/dev/null 2>&1 & echo $! > " .. harness.quote(dir .. "/pid"))
    local port = tonumber(harness.wait_for(function() return harness.read_file(dir .. "/ready") end, 10))
    assert.truthy(port, "aiosmtpd did not start")
    tx = harness.start { script = SENDER, args = { "{dir}", tostring(port), "-" } }
    local id = send(tx, "alice@src.test", "bob@relay.test", MSG)
    assert.truthy(tx:wait_log("event=queue_done id=" .. id .. " delivered=1"), tx:describe())
    assert.equals("bob@relay.test", harness.read_file(dir .. "/rcpts"))
    assert.truthy(harness.read_file(dir .. "/got.eml"):find("\r\n.leading dot\r\nbody", 1, true))
    os.execute("kill " .. harness.read_file(dir .. "/pid"):match("%d+"))
    harness.rmtree(dir)
  end)

  it("delivers over LMTP to aiosmtpd and takes its per-recipient reply", function()
    assert(os.execute("/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null"),
      "Debian's python3 cannot import aiosmtpd: install python3-aiosmtpd (make deps)")
    local dir = harness.tmpdir()
    harness.write_file(dir .. "/lmtp.py", [==[
import sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
class H:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 No mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"
    async def handle_DATA(self, server, session, envelope):
        with open(sys.argv[2] + "/" + envelope.rcpt_tos[0], "wb") as f:
            f.write(envelope.content)
        return "250 2.0.0 stored"
class C(Controller):
    def factory(self):
        return LMTP(self.handler)
import socket
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
free = probe.getsockname()[1]
probe.close()
c = C(H(), hostname="127.0.0.1", port=free)
c.start()
with open(sys.argv[2] + "/ready.tmp", "w") as f:
    f.write(str(free))
import os
os.rename(sys.argv[2] + "/ready.tmp", sys.argv[2] + "/ready")
time.sleep(60)
]==])
    os.execute("/usr/bin/python3 " .. harness.quote(dir .. "/lmtp.py") .. " 0 " ..
      harness.quote(dir) .. " >" .. harness.quote(dir .. "/log") .. " 2>&1 & echo $! > " ..
      harness.quote(dir .. "/pid"))
    local port = tonumber(harness.wait_for(function() return harness.read_file(dir .. "/ready") end, 10))
    assert.truthy(port, harness.read_file(dir .. "/log"))
    tx = harness.start { script = SENDER, args = { "{dir}", tostring(port), "-" } }
    local id1 = send(tx, "alice@src.test", "bob@lmtp.test", MSG)
    local id2 = send(tx, "alice@src.test", "nobody@lmtp.test", MSG)
    assert.truthy(tx:wait_log("event=queue_done id=" .. id1 .. " delivered=1"), tx:describe())
    assert.truthy(tx:wait_log("event=failed id=" .. id2 .. " .-status=5%.1%.1"), tx:describe())
    assert.truthy(harness.read_file(dir .. "/bob@lmtp.test"):find("\r\n.leading dot\r\nbody", 1, true))
    os.execute("kill " .. harness.read_file(dir .. "/pid"):match("%d+"))
    harness.rmtree(dir)
  end)
end)
