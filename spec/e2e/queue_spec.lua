-- End to end: the durable queue (SPEC 4). Messages routed to queued agents
-- (pipe, mbox) get their 250 with the queue id once committed; the queue
-- delivers them, retries temporary failures on queue.retry, expires them
-- after queue.lifetime, and reports permanent failures with one RFC 3464
-- DSN that the script's rcpt hook routes (s.internal). Also: the DSN
-- extension's parameters, path escapes, the route check at RCPT, restart
-- recovery and `kurir queue` against a running server.

local harness = require "harness"
local client = require "smtp_client"

-- arg[1] = DIR. Routes by domain; DSNs (s.internal) go to the Maildir
-- DIR/bounces. pipe scripts live in DIR (written by the tests).
local SCRIPT = [[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure {
  hostname = "mx.e2e.test",
  queue = { dir = dir .. "/queue", retry = { 0.2, 0.3 }, lifetime = tonumber(arg[2] or "60") },
}
local routes = {
  ["ok.test"]    = kurir.pipe { "/bin/sh", dir .. "/ok.sh", "%{user}" },
  ["flaky.test"] = kurir.pipe { "/bin/sh", dir .. "/flaky.sh" },
  ["fail.test"]  = kurir.pipe { "/bin/sh", "-c", "echo 'user unknown here' >&2; exit 67" },
  ["tmp.test"]   = kurir.pipe { "/bin/sh", "-c", "echo 'try later' >&2; exit 75" },
  ["later.test"] = kurir.pipe { "/bin/sh", dir .. "/later.sh" },
  ["slow.test"]  = kurir.pipe { "/bin/sh", "-c", "sleep 5", timeout = 0.3 },
  ["mbox.test"]  = kurir.mbox(dir .. "/mbox/%{user}"),
  ["md.test"]    = kurir.maildir(dir .. "/md/%{user}"),
  ["null.test"]  = kurir.discard(),
}
local bounces = kurir.maildir(dir .. "/bounces")
function kurir.on.rcpt(s, rcpt)
  if s.internal then
    kurir.sleep(0.01)   -- routing kurir's own messages may wait, as any hook
    rcpt.route = bounces
    return
  end
  if rcpt.domain == "bad.test" then
    rcpt.route = "not a route"
    return
  end
  rcpt.route = routes[rcpt.domain]
  if not rcpt.route then return 550, "5.1.1 No such domain" end
end
]]

local OK_SH = [[
out="$(dirname "$0")/out"
mkdir -p "$out"
cat > "$out/$RECIPIENT"
echo "$1" > "$out/$RECIPIENT.arg"
]]

local FLAKY_SH = [[
d="$(dirname "$0")"
if [ ! -e "$d/flaky.once" ]; then : > "$d/flaky.once"; echo "not yet" >&2; exit 75; fi
cat > "$d/flaky.out"
]]

local function start(lifetime)
  local srv = harness.start { script = SCRIPT, args = { "{dir}", lifetime or "60" } }
  harness.write_file(srv.dir .. "/ok.sh", OK_SH)
  harness.write_file(srv.dir .. "/flaky.sh", FLAKY_SH)
  harness.write_file(srv.dir .. "/later.sh", "exit 75\n")
  return srv
end

local function session(srv)
  local c = client.open(srv.port)
  c:expect(220)
  local code, text = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  return c
end

-- Send one message; returns the queue id from the 250.
local function send(c, from, rcpts, body, mail_params)
  c:check("MAIL FROM:<" .. from .. ">" .. (mail_params or ""), 250)
  for _, r in ipairs(rcpts) do c:check("RCPT TO:<" .. r[1] .. ">" .. (r[2] or ""), 250) end
  c:check("DATA", 354)
  assert(c:send(body .. "\r\n.\r\n"))
  local text = c:expect(250)
  local id = text:match("queued as (%S+)$")
  assert.truthy(id, text)
  return id
end

local MSG = "Subject: queued\r\nMessage-ID: <q1@e2e.test>\r\n\r\nFrom the queue\r\nline two"

local function wait_done(srv, id)
  assert.truthy(srv:wait_log("event=queue_done id=" .. id), srv:describe())
end

-- Parse the one DSN in DIR/bounces with Python's email package: content
-- type, report-type, and Final-Recipient/Action/Status of each block.
local function parse_dsn(srv)
  -- the DSN is a message of its own: wait until the queue has delivered it
  assert.truthy(srv:wait_log("event=dsn id=%S+ dsn_id=%S+"), srv:describe())
  wait_done(srv, srv:log():match("event=dsn id=%S+ dsn_id=(%S+)"))
  local files = harness.maildir_new(srv.dir .. "/bounces")
  assert.equals(1, #files, srv:describe())
  local py = [[
import email, json, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read())
out = {"type": m.get_content_type(), "report_type": m.get_param("report-type"), "to": m["To"],
       "from_header": m["From"], "parts": [p.get_content_type() for p in m.get_payload()], "blocks": []}
for p in m.get_payload():
    if p.get_content_type() == "message/delivery-status":
        for b in p.get_payload()[1:]:
            out["blocks"].append({k: v for k, v in b.items()})
print(json.dumps(out))
]]
  harness.write_file(srv.dir .. "/dsn.py", py)
  local rc, out = harness.sh("python3 " .. harness.quote(srv.dir .. "/dsn.py") .. " " .. harness.quote(files[1]))
  assert.equals(0, rc, out)
  local json = out:gsub("\n$", "")
  -- a tiny JSON reader is enough: use load on a Lua-ised form
  local lua = json:gsub('"([^"]-)":', '["%1"]='):gsub("%[(%b\"\")%]=", "[%1]="):gsub("%[", "{"):gsub("%]", "}")
  lua = lua:gsub('{("[^"]-")}=', "[%1]=")
  local f = assert(load("return " .. lua:gsub("null", "nil")))
  return f(), harness.read_file(files[1])
end

describe("the queue", function()
  local srv
  after_each(function()
    harness.finish(srv)
    srv = nil
  end)

  it("advertises DSN and checks its parameters", function()
    srv = start()
    local c = session(srv)
    local _, text = c:ehlo("x.test")
    assert.truthy(text:find("\n250.DSN\r?\n"), text)
    c:check("MAIL FROM:<a@src.test> RET=BOGUS", 501)
    c:check("MAIL FROM:<a@src.test> RET=HDRS ENVID=abc+2Bdef", 250)
    c:check("RCPT TO:<x@ok.test> NOTIFY=SOMETIMES", 501)
    c:check("RCPT TO:<x@ok.test> NOTIFY=NEVER,SUCCESS", 501)
    c:check("RCPT TO:<x@ok.test> ORCPT=nosemicolon", 501)
    c:check("RCPT TO:<x@ok.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+40ok.test", 250)
    c:close()
  end)

  it("refuses a recipient whose rcpt hook set something that is not a route with 451", function()
    srv = start()
    local c = session(srv)
    c:check("MAIL FROM:<a@src.test>", 250)
    c:check("RCPT TO:<x@bad.test>", 451)
    assert.truthy(srv:wait_log("event=bad_route"))
    c:close()
  end)

  it("commits before the 250 (the id is in the reply) and delivers through a pipe", function()
    srv = start()
    local c = session(srv)
    local id = send(c, "a@src.test", { { "bob@ok.test" } }, MSG)
    c:close()
    wait_done(srv, id)
    local got = harness.read_file(srv.dir .. "/out/bob@ok.test")
    assert.truthy(got and got:find("From the queue\r\nline two", 1, true), got)
    assert.equals("bob\n", harness.read_file(srv.dir .. "/out/bob@ok.test.arg"))
    assert.equals(0, #harness.list_dir(srv.dir .. "/queue/msg"))
  end)

  it("retries a temporary failure (pipe exit 75) on queue.retry and then delivers", function()
    srv = start()
    local c = session(srv)
    local id = send(c, "a@src.test", { { "x@flaky.test" } }, MSG)
    c:close()
    wait_done(srv, id)
    assert.truthy(srv:log():find("event=deferred id=" .. id .. ".-not yet"), srv:describe())
    assert.truthy(srv:log():find("event=delivered id=" .. id, 1, true))
    assert.truthy(harness.read_file(srv.dir .. "/flaky.out"):find("From the queue", 1, true))
  end)

  it("bounces a permanent failure with one RFC 3464 DSN routed by the rcpt hook", function()
    srv = start()
    local c = session(srv)
    local id = send(c, "sender@src.test",
      { { "gone@fail.test", " ORCPT=rfc822;gone+40fail.test" }, { "bob@ok.test" } }, MSG, " ENVID=env+2B1")
    c:close()
    wait_done(srv, id)
    assert.truthy(srv:wait_log("event=queue_done id=%S+ delivered=1 failed=0"))
    local d, raw = parse_dsn(srv)
    assert.equals("multipart/report", d.type)
    assert.equals("delivery-status", d.report_type)
    assert.equals("<sender@src.test>", d.to)
    assert.same({ "text/plain", "message/delivery-status", "text/rfc822-headers" }, d.parts)
    assert.equals(1, #d.blocks)
    assert.equals("rfc822; gone@fail.test", d.blocks[1]["Final-Recipient"])
    assert.equals("rfc822;gone@fail.test", d.blocks[1]["Original-Recipient"])
    assert.equals("failed", d.blocks[1].Action)
    assert.equals("5.3.0", d.blocks[1].Status)
    assert.truthy(d.blocks[1]["Diagnostic-Code"]:find("user unknown here", 1, true))
    assert.truthy(raw:find("Original-Envelope-Id: env+1", 1, true))
    assert.truthy(raw:find("^Return%-Path: <>\r\n"), raw)
  end)

  it("sends the whole message with RET=FULL and a success report for NOTIFY=SUCCESS", function()
    srv = start()
    local c = session(srv)
    local id = send(c, "sender@src.test", { { "bob@ok.test", " NOTIFY=SUCCESS" } }, MSG, " RET=FULL")
    c:close()
    wait_done(srv, id)
    assert.truthy(srv:wait_log("event=queue_done id=%S+ delivered=1 failed=0"))
    local d, raw = parse_dsn(srv)
    assert.same({ "text/plain", "message/delivery-status", "message/rfc822" }, d.parts)
    assert.equals("delivered", d.blocks[1].Action)
    assert.equals("2.0.0", d.blocks[1].Status)
    assert.truthy(raw:find("From the queue", 1, true))
  end)

  it("sends no DSN for NOTIFY=NEVER, nor to the null sender", function()
    srv = start()
    local c = session(srv)
    local id1 = send(c, "sender@src.test", { { "gone@fail.test", " NOTIFY=NEVER" } }, MSG)
    local id2 = send(c, "", { { "gone@fail.test" } }, MSG)
    c:close()
    wait_done(srv, id1)
    wait_done(srv, id2)
    assert.is_nil(srv:log():find("event=dsn ", 1, true))
    assert.equals(0, #harness.list_dir(srv.dir .. "/bounces/new"))
  end)

  it("expires a message that keeps failing temporarily after queue.lifetime, with a 4.4.7 DSN", function()
    srv = start("0.5")
    local c = session(srv)
    local id = send(c, "sender@src.test", { { "x@tmp.test" } }, MSG)
    c:close()
    wait_done(srv, id)
    local d = parse_dsn(srv)
    assert.equals("failed", d.blocks[1].Action)
    assert.equals("4.4.7", d.blocks[1].Status)
    assert.truthy(d.blocks[1]["Diagnostic-Code"]:find("expired", 1, true))
    assert.truthy(d.blocks[1]["Diagnostic-Code"]:find("try later", 1, true))
  end)

  it("kills a pipe command at its timeout and retries", function()
    srv = start()
    local c = session(srv)
    local id = send(c, "sender@src.test", { { "x@slow.test" } }, MSG)
    c:close()
    assert.truthy(srv:wait_log("event=deferred id=" .. id .. " .-timed out after"), srv:describe())
  end)

  it("keeps recipients inside the configured directory whatever their local part", function()
    srv = start()
    local c = session(srv)
    local id = send(c, "a@src.test", {
      { "\"../../escape\"@mbox.test" }, { "\"/abs\"@md.test" }, { "-rf@ok.test" }, { "\"..\"@md.test" } }, MSG)
    c:close()
    wait_done(srv, id)
    -- "/", "%" and control characters are %-encoded, as are a leading "."
    -- and (in a command argument) a leading "-", as kurir.maildir does
    assert.same({ "\"..%2F..%2Fescape\"" }, harness.list_dir(srv.dir .. "/mbox"), srv:describe())
    local md = harness.list_dir(srv.dir .. "/md")
    table.sort(md)
    assert.same({ "\"%2Fabs\"", "\"..\"" }, md)
    assert.equals("%2Drf\n", harness.read_file(srv.dir .. "/out/-rf@ok.test.arg"))
    assert.falsy(harness.exists(srv.dir .. "/../escape"))
  end)

  it("appends to an mbox while another process writes it under fcntl locks", function()
    srv = start()
    local py = [[
import fcntl, os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.dirname(path), exist_ok=True)
for i in range(n):
    with open(path, "a") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        f.write("From other@x Thu Jan  1 00:00:00 1970\nSubject: other %d\n\nbody %d\n" % (i, i))
        f.flush()
        f.write("more %d\n\n" % i)
        f.flush()
        fcntl.lockf(f, fcntl.LOCK_UN)
]]
    harness.write_file(srv.dir .. "/writer.py", py)
    local path = srv.dir .. "/mbox/box"
    os.execute("python3 " .. harness.quote(srv.dir .. "/writer.py") .. " " .. harness.quote(path) ..
      " 300 >/dev/null 2>&1 &")
    local c = session(srv)
    local ids = {}
    for i = 1, 20 do
      ids[i] = send(c, "a@src.test", { { "box@mbox.test" } }, "Subject: kurir " .. i .. "\r\n\r\nFrom me " .. i)
    end
    c:close()
    for _, id in ipairs(ids) do wait_done(srv, id) end
    local check = [[
import mailbox, sys, time
path = sys.argv[1]
for _ in range(200):
    msgs = list(mailbox.mbox(path))
    if sum(1 for m in msgs if m["Subject"].startswith("other")) == 300: break
    time.sleep(0.05)
k = sorted(m["Subject"] for m in msgs if m["Subject"].startswith("kurir"))
o = [m for m in msgs if m["Subject"].startswith("other")]
assert len(k) == 20, k
assert len(o) == 300, len(o)
for m in msgs:
    if m["Subject"].startswith("kurir"):
        assert m.get_payload().startswith(">From me "), m.get_payload()
    else:
        i = m["Subject"].split()[1]
        assert m.get_payload() == "body %s\nmore %s\n" % (i, i), repr(m.get_payload())
print("ok")
]]
    harness.write_file(srv.dir .. "/check.py", check)
    local rc, out = harness.sh("python3 " .. harness.quote(srv.dir .. "/check.py") .. " " .. harness.quote(path))
    assert.equals(0, rc, out)
  end)

  it("resumes queued messages after a restart", function()
    srv = start()
    local c = session(srv)
    local id = send(c, "a@src.test", { { "x@later.test" } }, MSG)
    c:close()
    assert.truthy(srv:wait_log("event=deferred id=" .. id))
    assert.equals(0, srv:stop())
    -- same queue directory; the route stored with the message now works
    local dir = srv.dir
    harness.write_file(dir .. "/later.sh", OK_SH)
    local srv2 = harness.start { script = SCRIPT, args = { dir } }
    assert.truthy(srv2:wait_log("event=queue_recovered dir=%S+ messages=1"), srv2:describe())
    assert.truthy(srv2:wait_log("event=queue_done id=" .. id .. " delivered=1"), srv2:describe())
    assert.truthy(harness.read_file(dir .. "/out/x@later.test"):find("From the queue", 1, true))
    harness.finish(srv2)
    harness.rmtree(dir)
    srv = nil
  end)

  it("is driven by `kurir queue` while the server runs", function()
    srv = start()
    local c = session(srv)
    local id = send(c, "a@src.test", { { "x@tmp.test" }, { "y@tmp.test" } }, MSG)
    c:close()
    assert.truthy(srv:wait_log("event=deferred id=" .. id .. " rcpt=y@tmp.test"))
    local spool = " --spool " .. harness.quote(srv.dir .. "/queue")
    local kq = harness.quote(harness.bin) .. " queue "
    local rc, out = harness.sh(kq .. "list --json" .. spool)
    assert.equals(0, rc, out)
    assert.truthy(out:find('"id": "' .. id .. '"', 1, true), out)
    assert.truthy(out:find('"address": "x@tmp.test", "status": "deferred"', 1, true), out)
    rc, out = harness.sh(kq .. "hold " .. id .. spool)
    assert.equals(0, rc, out)
    assert.truthy(srv:wait_log("event=queue_control command=hold id=" .. id .. " result=0"))
    rc, out = harness.sh(kq .. "list --json" .. spool)
    assert.equals(0, rc, out)
    assert.truthy(out:find('"status": "held"', 1, true), out)
    rc, out = harness.sh(kq .. "release " .. id .. spool)
    assert.equals(0, rc, out)
    rc, out = harness.sh(kq .. "flush " .. id .. spool)
    assert.equals(0, rc, out)
    assert.truthy(srv:wait_log("event=queue_control command=flush id=" .. id .. " result=0"))
    rc, out = harness.sh(kq .. "show " .. id .. spool)
    assert.equals(0, rc, out)
    assert.truthy(out:find("From the queue", 1, true), out)
    for _, verb in ipairs { "show", "hold", "release", "delete", "flush" } do
      rc, out = harness.sh(kq .. verb .. " 0000000000000000" .. spool)
      assert.equals(1, rc, verb .. ": " .. out)
    end
    rc, out = harness.sh(kq .. "delete " .. id .. spool)
    assert.equals(0, rc, out)
    wait_done(srv, id)
    rc, out = harness.sh(kq .. "list --json" .. spool)
    assert.equals(0, rc, out)
    assert.equals("[]\n", out)
  end)

  it("is read and changed by `kurir queue` with no server running", function()
    srv = start()
    local c = session(srv)
    local id = send(c, "a@src.test", { { "x@tmp.test" } }, MSG)
    c:close()
    assert.truthy(srv:wait_log("event=deferred id=" .. id))
    assert.equals(0, srv:stop())
    local spool = " --spool " .. harness.quote(srv.dir .. "/queue")
    local kq = harness.quote(harness.bin) .. " queue "
    local rc, out = harness.sh(kq .. "list" .. spool)
    assert.equals(0, rc, out)
    assert.truthy(out:find(id, 1, true) and out:find("deferred  <x@tmp.test>", 1, true), out)
    rc, out = harness.sh(kq .. "hold " .. id .. spool)
    assert.equals(0, rc, out)
    rc, out = harness.sh(kq .. "list --json" .. spool)
    assert.equals(0, rc, out)
    assert.truthy(out:find('"held": true', 1, true), out)
    rc, out = harness.sh(kq .. "release " .. id .. spool)
    assert.equals(0, rc, out)
    rc, out = harness.sh(kq .. "flush" .. spool)
    assert.equals(0, rc, out)
    assert.truthy(out:find("no server is running", 1, true), out)
    rc, out = harness.sh(kq .. "delete " .. id .. spool)
    assert.equals(0, rc, out)
    rc, out = harness.sh(kq .. "list --json" .. spool)
    assert.equals(0, rc, out)
    assert.equals("[]\n", out)
    rc, out = harness.sh(kq .. "list --json --spool " .. harness.quote(srv.dir .. "/nowhere"))
    assert.equals(0, rc, out)
    assert.equals("[]\n", out)
    rc, out = harness.sh(kq .. "frobnicate" .. spool)
    assert.equals(2, rc, out)
    rc, out = harness.sh(kq .. "show" .. spool)
    assert.equals(2, rc, out)
    harness.rmtree(srv.dir)
    srv = nil
  end)

  it("refuses bad routes and queue settings at load time with file:line", function()
    local cases = {
      { 'kurir.pipe { "relative/cmd" }', "script.lua:2: kurir.pipe: the command must be an absolute path" },
      { 'kurir.relay { tls = "maybe" }', "script.lua:2: kurir.relay: tls must be" },
      { 'kurir.relay { port = 0 }', "script.lua:2: kurir.relay: port must be an integer 1%-65535" },
      { 'kurir.mbox "box/%{nobody}"', "script.lua:2: kurir.mbox: unknown placeholder %%{nobody}" },
      { 'kurir.lmtp { socket = "run/lmtp" }', "script.lua:2: kurir.lmtp: socket must be an absolute path" },
      { 'kurir.lmtp { socket = "/run/lmtp", port = 24 }', "script.lua:2: kurir.lmtp: socket = cannot be combined" },
      { "kurir.configure { queue = { delay_warning = -1 } }",
        "script.lua:2: queue.delay_warning: expected a number of seconds" },
      { "kurir.configure { queue = { connection_messages = 0 } }",
        "script.lua:2: queue.connection_messages: expected an integer 1%-100000" },
      { 'kurir.deliver("not a function")', "script.lua:2: kurir.deliver: expected a function" },
      { "kurir.configure { queue = { retry = { -1 } } }",
        "script.lua:2: queue.retry%[1%]: expected a positive number" },
      { 'kurir.configure { queue = { dir = "" } }', "script.lua:2: queue.dir: expected a non%-empty string" },
    }
    for _, case in ipairs(cases) do
      local rc, out = harness.run { script = 'local kurir = require "kurir"\n' .. case[1] .. "\n",
        args = { "--check", "{script}" } }
      assert.equals(1, rc, case[1] .. ": " .. out)
      assert.truthy(out:find(case[2]), case[1] .. ": " .. out)
    end
  end)
end)
