-- End to end: privilege drop (issue 6 section 5). kurir started as root
-- with user = "nobody" binds, reads its TLS key, then runs as nobody: the
-- process's Uid/Gid/Groups lines in /proc/PID/status and the owner and
-- modes of the Maildir it writes prove it; SIGHUP still reloads, and a key
-- only root can read makes the reload fail cleanly (the old configuration
-- keeps serving). Without user, root is refused on a port below 1024
-- unless run_as_root = true, and allowed with a warning elsewhere.

local harness = require "harness"
local client = require "smtp_client"
local certs = require "certs"

local q = harness.quote

teardown(harness.cleanup)

local function is_root()
  local id = io.popen("id -u")
  local uid = id:read("l")
  id:close()
  return uid == "0"
end

local ROOT = is_root()

local function proc_ids(pid)
  local status = harness.read_file("/proc/" .. pid .. "/status") or ""
  return {
    uid = status:match("\nUid:%s*([%d%s]-)\n"),
    gid = status:match("\nGid:%s*([%d%s]-)\n"),
    groups = status:match("\nGroups:%s*([%d ]-)%s*\n"),
  }
end

local function stat(path)
  local p = io.popen("stat -c '%u %g %a' " .. q(path) .. " 2>/dev/null")
  local out = p:read("l")
  p:close()
  return out
end

local function nobody_ids()
  local p = io.popen("id -u nobody; getent group nogroup | cut -d: -f3")
  local uid, gid = p:read("l"), p:read("l")
  p:close()
  return uid, gid
end

-- A directory nobody can read (the script) and, below it, one it owns
-- (the Maildir parent).
local function shared_dir()
  local dir = harness.tmpdir()
  assert(os.execute("chmod 755 " .. q(dir) .. " && mkdir " .. q(dir .. "/out") .. " && chown nobody:nogroup " ..
    q(dir .. "/out")))
  return dir
end

local function deliver(port, subject)
  local c = client.open(port)
  c:expect(220)
  c:ehlo("priv.e2e.test")
  c:check("MAIL FROM:<a@example.test>", 250)
  c:check("RCPT TO:<b@example.test>", 250)
  c:check("DATA", 354)
  assert(c:send("Subject: " .. subject .. "\r\n\r\nhello\r\n.\r\n"))
  local code, text = c:reply(10)
  c:check("QUIT", 221)
  c:close()
  return code, text
end

local DROP_SCRIPT = [[
local kurir = require "kurir"
local out, tls = arg[1], arg[2]
kurir.configure { user = "nobody", group = "nogroup",
                  tls = tls and { cert = tls .. "/server.pem", key = tls .. "/server.key" } or nil }
function kurir.on.data(s, msg)
  local name, err = msg:store_maildir(out .. "/Maildir")
  if not name then return 451, "4.3.0 " .. err end
  return 250, "2.0.0 stored"
end
]]

describe("privilege drop", function()
  it("runs as user/group after binding, writes files it owns with 0700/0600, reloads on SIGHUP", function()
    if not ROOT then return pending("needs root (CI and the dev machine run the tests as root)") end
    local dir = shared_dir()
    harness.write_file(dir .. "/script.lua", DROP_SCRIPT)
    local srv = harness.start { script_file = dir .. "/script.lua", args = { dir .. "/out" } }
    assert.truthy(srv:wait_log("event=privileges_dropped[^\n]*user=nobody"), srv:describe())
    local uid, gid = nobody_ids()
    local ids = proc_ids(srv.pid)
    assert.equals(("%s\t%s\t%s\t%s"):format(uid, uid, uid, uid), ids.uid)
    assert.equals(("%s\t%s\t%s\t%s"):format(gid, gid, gid, gid), ids.gid)
    assert.equals(gid, ids.groups)

    local code, text = deliver(srv.port, "one")
    assert.equals(250, code, text .. "\n" .. srv:describe())
    local files = harness.maildir_new(dir .. "/out/Maildir")
    assert.equals(1, #files)
    assert.equals(uid .. " " .. gid .. " 700", stat(dir .. "/out/Maildir"))
    assert.equals(uid .. " " .. gid .. " 700", stat(dir .. "/out/Maildir/new"))
    assert.equals(uid .. " " .. gid .. " 600", stat(files[1]))

    assert.is_true(srv:signal("HUP"))
    assert.truthy(srv:wait_log("event=reload script="), srv:describe())
    code, text = deliver(srv.port, "two")
    assert.equals(250, code, text)
    assert.equals(2, #harness.maildir_new(dir .. "/out/Maildir"))
    harness.finish(srv)
    harness.rmtree(dir)
  end)

  it("reads a root-only TLS key before the drop; a reload cannot and keeps the old configuration", function()
    if not ROOT then return pending("needs root") end
    local dir = shared_dir()
    local c = certs.make(dir .. "/tls")
    assert.equals(dir .. "/tls/server.pem", c.cert)
    assert.equals(dir .. "/tls/server.key", c.key)
    assert(os.execute("chmod 755 " .. q(dir .. "/tls") .. " && chmod 644 " .. q(c.cert) .. " && chmod 600 " ..
      q(c.key)))
    harness.write_file(dir .. "/script.lua", DROP_SCRIPT)
    local srv = harness.start { script_file = dir .. "/script.lua", args = { dir .. "/out", dir .. "/tls" } }
    assert.truthy(srv:wait_log("event=privileges_dropped"), srv:describe())
    assert.is_true(srv:signal("HUP"))
    assert.truthy(srv:wait_log("event=reload_failed[^\n]*server%.key"), srv:describe())
    -- the old engine, key included, still serves
    local conn = client.open(srv.port)
    conn:expect(220)
    local _, ehlo = conn:ehlo("priv.e2e.test")
    assert.truthy(ehlo:find("STARTTLS", 1, true), ehlo)
    conn:check("STARTTLS", 220)
    conn:close()
    assert.equals(250, (deliver(srv.port, "after failed reload")))
    harness.finish(srv)
    harness.rmtree(dir)
  end)

  it("refuses to stay root on a port below 1024 unless run_as_root = true", function()
    if not ROOT then return pending("needs root") end
    local low = "127.0.0.1:" .. (600 + math.random(0, 300))
    local rc, out = harness.run { args = { "-l", low, "{script}" }, script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.priv.test" }
]] }
    assert.equals(1, rc, out)
    assert.truthy(out:find("refusing to run as root with a listener on a port below 1024", 1, true), out)
    assert.truthy(out:find("CAP_NET_BIND_SERVICE", 1, true), out)

    local dir = harness.tmpdir()
    harness.write_file(dir .. "/root.lua", [[
local kurir = require "kurir"
kurir.configure { run_as_root = true }
]])
    local srv = harness.start { listen = { low }, script_file = dir .. "/root.lua" }
    assert.truthy(srv:wait_log("level=info event=running_as_root[^\n]*run_as_root"), srv:describe())
    assert.truthy(proc_ids(srv.pid).uid:match("^0\t0"))
    harness.finish(srv)
    harness.rmtree(dir)
  end)

  it("allows root without user on an unprivileged port (make run, tests) with a warning", function()
    if not ROOT then return pending("needs root") end
    local srv = harness.start { script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" } }
    assert.truthy(srv:wait_log("level=warn event=running_as_root"), srv:describe())
    harness.finish(srv)
  end)
end)

describe("user and group settings", function()
  it("are checked", function()
    local cases = {
      { 'kurir.configure { group = "nogroup" }', "group: needs user as well" },
      { 'kurir.configure { user = "no-such-user-kurir" }', 'user = "no-such-user-kurir": no such user' },
      { 'kurir.configure { user = "nobody", group = "no-such-group-kurir" }',
        'group = "no-such-group-kurir": no such group' },
      { 'kurir.configure { user = "a b" }', "user: expected a user or group name or a numeric id" },
      { 'kurir.configure { user = "nobody", run_as_root = true }', "cannot be combined with user" },
      { 'kurir.configure { user = "root" }', "is root; leave user out and set run_as_root = true" },
    }
    for _, case in ipairs(cases) do
      local rc, out = harness.run { args = { "-l", "127.0.0.1:0", "{script}" },
        script = 'local kurir = require "kurir"\n' .. case[1] .. "\n" }
      assert.equals(1, rc, case[1] .. "\n" .. out)
      assert.truthy(out:find(case[2], 1, true), case[1] .. "\n" .. out)
    end
  end)
end)
