-- End to end: the limits a hook runs under: the command timeout still
-- applies after a long hook, the hook's wall-clock limit and CPU budget
-- cannot be escaped with pcall, coroutines or __close handlers. Every wait
-- is bounded: a test whose server hangs is stopped by the harness.

local harness = require "harness"
local client = require "smtp_client"

teardown(harness.cleanup)

local function session(port, name)
  local c = client.open(port)
  c:expect(220)
  local code, text = c:ehlo(name or "client.e2e.test")
  assert.equals(250, code, text)
  return c
end

-- The process answers a fresh connection (its loop is not stuck).
local function answers(port)
  local c = client.connect(port)
  if not c then return false end
  local code = c:reply(3)
  c:close()
  return code == 220
end

describe("hook limits: timeouts", function()
  it("the command timeout still applies after a hook that waited longer than it", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { timeouts = { command = 1, hook = 10 } }
      kurir.on.helo = function(s) kurir.sleep(1.5) end
    ]] }
    local c = session(srv.port)
    local code, text = c:reply(6)
    assert.equals(421, code, "idle session after a long hook was never timed out: " .. tostring(text))
    harness.finish(srv)
  end)

  it("the hook wall-clock limit cannot be swallowed by pcall", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { timeouts = { hook = 0.5, shutdown = 1 } }
      kurir.on.helo = function(s)
        for _ = 1, 1e9 do pcall(kurir.sleep, 0.1) end
      end
    ]] }
    local c = client.open(srv.port)
    c:expect(220)
    local code = c:cmd("EHLO client.e2e.test", 5)
    assert.equals(451, code, "hook kept running past its time limit")
    harness.finish(srv)
  end)
end)

describe("hook limits: CPU budget", function()
  it("covers coroutines the hook creates", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { cpu_budget = 0.2, timeouts = { shutdown = 1 } }
      kurir.on.helo = function(s)
        coroutine.wrap(function() local x = 0 while true do x = x + 1 end end)()
      end
    ]] }
    local c = client.open(srv.port)
    c:expect(220)
    local code = c:cmd("EHLO client.e2e.test", 5)
    assert.equals(451, code, "the loop inside a coroutine ran past the CPU budget")
    assert.is_true(answers(srv.port))
    harness.finish(srv)
  end)

  it("covers __close handlers run when a failed hook is reset", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { cpu_budget = 0.2, timeouts = { shutdown = 1 } }
      kurir.on.helo = function(s)
        local guard <close> = setmetatable({}, {
          __close = function() local x = 0 while true do x = x + 1 end end })
        error("hook fails")
      end
    ]] }
    local c = client.open(srv.port)
    c:expect(220)
    local code = c:cmd("EHLO client.e2e.test", 5)
    assert.equals(451, code, "a __close handler ran without a CPU budget")
    assert.is_true(answers(srv.port))
    harness.finish(srv)
  end)
end)
