-- End to end: SIGKILL while the queue is busy (issue 8). A bounded batch
-- from several client threads; kurir is killed several times and
-- restarted on the same queue directory; every message that got a 250 is
-- delivered exactly once (by Message-ID), nothing partial or unknown
-- appears. The driver is spec/support/crash_queue.py.

local harness = require "harness"

local SCRIPT = [[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure {
  hostname = "mx.e2e.test",
  queue = { dir = dir .. "/queue", retry = { 0.1 } },
  limits = { connections_per_ip = 100 },
}
local box = kurir.mbox(dir .. "/mbox/%{user}")
function kurir.on.rcpt(s, rcpt)
  rcpt.route = box
end
]]

describe("the queue under SIGKILL", function()
  it("delivers every acknowledged message exactly once across kills and restarts", function()
    local dir = harness.tmpdir()
    harness.write_file(dir .. "/script.lua", SCRIPT)
    local port = 0   -- the driver reads the port from the first listening line
    local n = harness.sanitized and 200 or 1000
    local cmd = "CRASH_DEADLINE=" .. (50 * harness.scale) .. " python3 " ..
      harness.quote(harness.root .. "/spec/support/crash_queue.py") .. " " .. harness.quote(harness.bin) .. " " ..
      harness.quote(dir .. "/script.lua") .. " " .. harness.quote(dir) .. " " .. port .. " " .. n .. " 6 4"
    local rc, out = harness.sh(cmd, 60)
    local log = harness.read_file(dir .. "/kurir.log") or ""
    assert.equals(0, rc, out .. "\n" .. log:sub(-3000))
    assert.truthy(out:find("ok\n", 1, true), out)
    assert.falsy(log:find("AddressSanitizer", 1, true), log)
    harness.rmtree(dir)
  end)
end)
