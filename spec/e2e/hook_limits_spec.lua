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

-- Each command below runs away in a different place: the script's own
-- coroutines (made while the script loaded, so no task was running when
-- they were created), wrapped functions, __close handlers run by
-- coroutine.close, nested resumes that swallow the error. Every one must
-- end in the hook's error reply and the documented log line.
describe("hook limits: CPU budget in the script's coroutines", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { cpu_budget = 0.2, timeouts = { shutdown = 1 } }
      local function spin() local x = 0 while true do x = x + 1 end end
      local function swallow() while true do pcall(spin) end end
      -- made while the script loads
      local loaded = coroutine.create(spin)
      local loaded_wrap = coroutine.wrap(spin)
      local inner = coroutine.create(swallow)
      local outer = coroutine.wrap(function()
        -- inner's budget error comes back here and is dropped: outer must stop too
        while true do coroutine.resume(inner) end
      end)
      local closing = coroutine.create(function()
        local guard <close> = setmetatable({}, { __close = spin })
        coroutine.yield()
      end)
      coroutine.resume(closing)
      local pong = coroutine.wrap(function() while true do coroutine.yield() end end)
      local spent = 0

      local cases = {
        XPCALL = swallow,
        XLOADED = function()
          local ok, err = coroutine.resume(loaded)
          kurir.log("swallowed", { ok = tostring(ok), err = tostring(err) })
          return 250, "2.0.0 swallowed"
        end,
        XWRAP = function() pcall(loaded_wrap) return 250, "2.0.0 swallowed" end,
        XNESTED = function() pcall(outer) return 250, "2.0.0 swallowed" end,
        XCLOSE = function() pcall(coroutine.close, closing) return 250, "2.0.0 swallowed" end,
        XPINGPONG = function() while true do pong() end end,
        XRUNCLOSE = function()
          -- over budget, then a __close handler that runs away too
          local guard <close> = setmetatable({}, { __close = spin })
          spin()
        end,
        XMEASURE = function()
          local t0 = os.clock()
          while true do spent = os.clock() - t0 end
        end,
        XSPENT = function() return 250, string.format("2.0.0 %.4f", spent) end,
        XPIECES = function()
          -- more CPU than the budget in all, but never that much without waiting
          local t0 = os.clock()
          for _ = 1, 4 do
            local t = os.clock()
            while os.clock() - t < 0.08 do end
            kurir.sleep(0)
          end
          return 250, string.format("2.0.0 %.2f", os.clock() - t0)
        end,
      }
      kurir.on.command = function(s, verb)
        local case = cases[verb]
        if case then return case() end
      end
    ]] }
  end)

  lazy_teardown(function() harness.finish(srv) end)

  local function budget_errors()
    local n = 0
    for line in srv:log():gmatch("[^\n]+") do
      local f = harness.logfmt(line)
      -- a coroutine.wrap'd function adds its caller's position, as Lua's does
      if f.event == "hook_error" and f.hook == "command" and f.error
        and f.error:find("CPU budget of 0.2 s exceeded", 1, true) then
        n = n + 1
      end
    end
    return n
  end

  for _, verb in ipairs { "XPCALL", "XLOADED", "XWRAP", "XNESTED", "XCLOSE", "XPINGPONG", "XRUNCLOSE" } do
    it("stops " .. verb .. " with 451 and the hook_error line; the server goes on", function()
      local before = budget_errors()
      local c = session(srv.port)
      c:check(verb, 451, "451 4.3.0 Temporary server error, try again later", 10)
      assert.truthy(harness.wait_for(function() return budget_errors() == before + 1 end, 5), srv:describe())
      assert.is_nil(srv:log():find("event=swallowed", 1, true), srv:describe())
      c:check("NOOP", 250)
      c:close()
      assert.is_true(answers(srv.port))
    end)
  end

  it("stops a second runaway in the same session (its coroutine is reused)", function()
    local c = session(srv.port)
    for _ = 1, 3 do
      c:check("XMEASURE", 451, "451 4.3.0 Temporary server error, try again later", 10)
    end
    c:close()
  end)

  it("stops a run only past its budget of CPU", function()
    local c = session(srv.port)
    c:check("XMEASURE", 451, nil, 10)
    local code, text = c:cmd("XSPENT")
    assert.equals(250, code, text)
    local spent = tonumber(text:match("(%d+%.%d+)$"))
    -- os.clock counts the whole process: never less than the run's own CPU
    assert.is_true(spent >= 0.2 - 0.002, text)
    c:close()
  end)

  it("counts each resume on its own: a hook that waits between pieces is not stopped", function()
    local c = session(srv.port)
    local code, text = c:cmd("XPIECES", 20)
    assert.equals(250, code, text)
    assert.is_true(tonumber(text:match("(%d+%.%d+)$")) > 0.2, text)
    c:close()
  end)
end)
