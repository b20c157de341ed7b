-- End to end: 10,000 concurrent wait-for-message requests on one mock
-- server. Each is a suspended HTTP connection plus one timer: no thread,
-- no polling. All are answered by the one message they wait for, or by
-- their timeout, and SMTP is served meanwhile.

local harness = require "harness"
local http = require "http_client"
local send = require "mail_send"
local client = require "smtp_client"

teardown(harness.cleanup)

local N = 10000

local function rss_kib(pid)
  local status = harness.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(status:match("VmRSS:%s*(%d+)"))
end

local function waits(port)
  local r = http.get(port, "/api/v1/info")
  return r.json and math.tointeger(r.json.waits)
end

describe("10,000 concurrent waits", function()
  local srv, port

  lazy_setup(function()
    srv = harness.start {
      script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" }, max_files = N * 2 + 200,
      listen = { "127.0.0.1:0", "http://127.0.0.1:0" },
    }
    port = http.port_of(srv)
  end)
  lazy_teardown(function() harness.finish(srv) end)

  local function run_waiters(path, deadline)
    local out = srv.dir .. "/waiters.out"
    os.remove(out)
    local cmd = "ulimit -n " .. (N + 500) .. "; exec timeout " .. (deadline + 30) .. " python3 " ..
      harness.quote(harness.root .. "/spec/support/many_waits.py") .. " " .. port .. " " .. N .. " " ..
      harness.quote(path) .. " " .. deadline .. " > " .. harness.quote(out) .. " 2>&1"
    os.execute("sh -c " .. harness.quote(cmd) .. " </dev/null >/dev/null 2>&1 &")
    return out
  end

  local function result(out, timeout)
    local text = harness.wait_for(function()
      local t = harness.read_file(out) or ""
      return t:match("\n(%S+=%d+[^\n]*)\n") or t:match("^sent\n(%S+=%d+[^\n]*)")
    end, timeout)
    local counts = {}
    for k, v in (text or ""):gmatch("(%S+)=(%d+)") do counts[k] = tonumber(v) end
    return counts, harness.read_file(out)
  end

  it("answers all of them with the one message they wait for", function()
    local base = rss_kib(srv.pid)
    local out = run_waiters("/api/v1/wait?mailbox=many&timeout=" .. 120 * harness.scale, 120 * harness.scale)
    assert.truthy(harness.wait_for(function() return waits(port) == N end, 60), "waits: " .. tostring(waits(port)))
    local loaded = rss_kib(srv.pid)
    -- SMTP is served while they wait
    local c = client.open(srv.port)
    c:expect(220)
    c:check("NOOP", 250)
    c:check("QUIT", 221)
    c:close()
    send.message(srv.port, { to = { "x+many@example.test" }, data = "Subject: for all\r\n\r\nx\r\n" })
    local counts, text = result(out, 60)
    assert.equals(N, counts["200"], text)
    io.stderr:write(string.format("\n[10k waits] RSS %d KiB idle, %d KiB with %d waits open (%.1f KiB per wait)\n",
      base, loaded, N, (loaded - base) / N))
    assert.truthy(harness.wait_for(function() return waits(port) == 0 end, 10))
  end)

  it("answers all of them 408 at their timeout", function()
    local out = run_waiters("/api/v1/wait?mailbox=nobody&timeout=" .. 5 * harness.scale, 60 * harness.scale)
    local counts, text = result(out, 90)
    assert.equals(N, counts["408"], text)
    assert.equals(200, http.get(port, "/api/v1/info").status)
  end)
end)
