-- End to end: a smoke test of the load generator (bench/loadgen.c, built
-- next to kurir) against kurir: a few hundred messages in each mode, every
-- one answered 250, and the counts it reports add up. Not a benchmark.

local harness = require "harness"

teardown(harness.cleanup)

local LOADGEN = harness.bin:gsub("kurir$", "loadgen")

local SCRIPT = [[
local kurir = require "kurir"
kurir.configure { tls = { self_signed = true },
                  limits = { connections = 10000, connections_per_ip = 10000 } }
function kurir.on.rcpt(s, rcpt) if rcpt.domain ~= "example.test" then return false end end
function kurir.on.data(s, msg) return 250, "2.0.0 taken" end
]]

-- Run loadgen with args; returns its key=value results as a table.
local function loadgen(args)
  local rc, out = harness.sh(harness.quote(LOADGEN) .. " " .. args .. " </dev/null", 60)
  local t = {}
  for k, v in out:gmatch("(%S+)=(%S+)") do t[k] = tonumber(v) or v end
  t.rc, t.out = rc, out
  return t
end

describe("bench/loadgen", function()
  local srv, smtps

  setup(function()
    local dir = harness.tmpdir()
    harness.write_file(dir .. "/loadgen.lua", SCRIPT)
    srv = harness.start { script_file = dir .. "/loadgen.lua",
      listen = { "127.0.0.1:0", "smtps://127.0.0.1:0" }, workers = 2 }
    srv.script_dir = dir
    smtps = srv.ports[2]
  end)

  teardown(function()
    harness.finish(srv)
    harness.rmtree(srv.script_dir)
  end)

  local modes = {
    { "lock-step sessions", "-c 10 -n 300" },
    { "pipelined transactions with DATA", "-c 4 -n 400 -p 25" },
    { "pipelined BDAT (CHUNKING)", "-c 4 -n 400 -p 25 -B" },
    { "a new connection per message", "-c 10 -n 200 -r 1" },
    { "STARTTLS, a connection per message", "-c 5 -n 100 -r 1 -T starttls" },
    { "large messages", "-c 2 -n 4 -s 3m -B" },
  }
  for _, m in ipairs(modes) do
    it(m[1], function()
      local r = loadgen(m[2] .. " -t 30 127.0.0.1:" .. srv.port)
      assert.equals(0, r.rc, r.out)
      assert.equals(tonumber(m[2]:match("-n (%d+)")), r.messages, r.out)
      assert.equals(0, r.failed, r.out)
      assert.equals(0, r.errors, r.out)
    end)
  end

  it("implicit TLS, with session resumption from the server's tickets", function()
    local r = loadgen("-c 2 -n 60 -r 1 -T smtps -t 30 127.0.0.1:" .. smtps)
    assert.equals(0, r.rc, r.out)
    assert.equals(60, r.messages)
    assert.is_true(r.handshakes >= 60, r.out)   -- a session may start as the last message ends
    assert.is_true(r.resumed > 0, r.out)
  end)

  it("TLS sessions resume on any worker: the workers share their ticket keys", function()
    -- one session at a time: each but the first presents the ticket of
    -- the one before, whichever of the two workers issued it
    local r = loadgen("-c 1 -n 20 -r 1 -T smtps -t 30 127.0.0.1:" .. smtps)
    assert.equals(0, r.rc, r.out)
    assert.equals(20, r.handshakes)
    assert.is_true(r.resumed >= 19, r.out)
  end)

  it("holds idle sessions and says how many it opened", function()
    local r = loadgen("-i 100 -t 30 127.0.0.1:" .. srv.port)
    assert.equals(0, r.rc, r.out)
    assert.truthy(r.out:find("ready opened=100 failed=0", 1, true), r.out)
  end)

  it("reports a refused recipient as an error and exits 1", function()
    local dir = harness.tmpdir()
    harness.write_file(dir .. "/x.lua", [[
local kurir = require "kurir"
function kurir.on.rcpt() return 550, "5.1.1 no" end
]])
    local other = harness.start { script_file = dir .. "/x.lua" }
    local r = loadgen("-c 1 -n 3 -t 10 127.0.0.1:" .. other.port)
    assert.equals(1, r.rc, r.out)
    assert.truthy(r.out:find("unexpected reply 550", 1, true), r.out)
    harness.finish(other)
    harness.rmtree(dir)
  end)
end)
