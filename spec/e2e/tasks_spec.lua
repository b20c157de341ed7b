-- End to end: Lua tasks outside sessions (SPEC 2.4): kurir.spawn and
-- kurir.every from the main chunk and from hooks, sleeping, resolving
-- (spec/support/dns_server.py) and connecting (spec/support/echo_server.py);
-- an error or a CPU overrun ends only that task; SIGHUP stops the old
-- script's tasks once the new one runs; SIGTERM with tasks waiting exits 0.

local harness = require "harness"
local client = require "smtp_client"

local q = harness.quote

teardown(harness.cleanup)

-- Lines of srv's log with event=<event> (and every field of `with`), parsed.
local function events(srv, event, with)
  local out = {}
  for line in srv:log():gmatch("[^\n]+") do
    local f = harness.logfmt(line)
    if f.event == event then
      local match = true
      for k, v in pairs(with or {}) do
        if f[k] ~= v then match = false end
      end
      if match then out[#out + 1] = f end
    end
  end
  return out
end

-- Wait until srv logged at least n lines of event (matching `with`).
local function wait_events(srv, n, event, with, timeout)
  return harness.wait_for(function()
    local e = events(srv, event, with)
    return #e >= n and e
  end, timeout or 10)
end

local function session(port)
  local c = client.open(port)
  c:expect(220)
  local code, text = c:ehlo("client.tasks.test")
  assert.equals(250, code, text)
  return c
end

describe("kurir.spawn", function()
  local srv

  lazy_setup(function()
    srv = harness.start {
      script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.tasks.test", cpu_budget = 0.2, timeouts = { hook = 0.2 } }

local loaded_spin = coroutine.create(function() while true do end end)

-- at load time: runs once the server runs, with its arguments
assert(kurir.spawn(function(word, n)
  kurir.sleep(0.05)
  kurir.log("spawned", { word = word, n = n })
  -- a task has no hook time limit (timeouts.hook is 0.2 here)
  kurir.sleep(0.4)
  kurir.log("slept_past_hook_limit", {})
end, "hello", 42))

function kurir.on.helo(s, name)
  -- the hook is answered at once; the task runs on, detached
  kurir.spawn(function()
    kurir.sleep(0.3)
    kurir.log("from_hook", { name = name })
  end)
  return 250, "spawned"
end

function kurir.on.command(s, verb, arg)
  if verb == "XERR" then
    kurir.spawn(function() local t = nil; return t.field end)
    kurir.spawn(function() kurir.sleep(0.05); kurir.log("sibling_done", {}) end)
    return 250, "2.0.0 ok"
  elseif verb == "XSPIN" then
    kurir.spawn(function() while true do end end)
    return 250, "2.0.0 spinning"
  elseif verb == "XCO" then
    -- a coroutine made by the task is under the task's budget too
    kurir.spawn(function()
      local co = coroutine.wrap(function() while true do end end)
      local ok, err = pcall(co)
      kurir.log("swallowed", { ok = tostring(ok), err = tostring(err) })
    end)
    return 250, "2.0.0 spinning in a coroutine"
  elseif verb == "XYIELD" then
    kurir.spawn(function() coroutine.yield(1) end)
    return 250, "2.0.0 yielded"
  elseif verb == "XLOADCO" then
    -- a coroutine made while the script loaded, when no task ran
    kurir.spawn(function()
      local ok, err = coroutine.resume(loaded_spin)
      kurir.log("swallowed", { ok = tostring(ok), err = tostring(err) })
    end)
    return 250, "2.0.0 spinning in a load-time coroutine"
  elseif verb == "XEVERY" then
    local runs = 0
    kurir.every(0.05, function()
      runs = runs + 1
      kurir.log("every_run", { n = runs })
      if runs == 1 then while true do end end
    end)
    return 250, "2.0.0 every"
  end
end
]],
    }
  end)

  lazy_teardown(function() harness.finish(srv) end)

  it("runs a function spawned at load time once the server runs, with its arguments", function()
    local e = wait_events(srv, 1, "spawned")
    assert.truthy(e, srv:describe())
    assert.equals("hello", e[1].word)
    assert.equals("42", e[1].n)
  end)

  it("lets a task wait longer than timeouts.hook (the limit is a hook's)", function()
    assert.truthy(wait_events(srv, 1, "slept_past_hook_limit"), srv:describe())
    assert.equals(0, #events(srv, "task_error"), srv:describe())
  end)

  it("runs a task spawned by a hook detached from the session", function()
    local c = client.open(srv.port)
    c:expect(220)
    c:check("HELO one.tasks.test", 250, "250 spawned")
    c:check("QUIT", 221)
    c:close()
    -- the session is over before the task wakes up
    local e = wait_events(srv, 1, "from_hook", { name = "one.tasks.test" })
    assert.truthy(e, srv:describe())
    assert.equals(1, #events(srv, "disconnect"), srv:describe())
  end)

  it("logs a task's error with a traceback; other tasks and sessions go on", function()
    local c = session(srv.port)
    c:check("XERR", 250)
    local e = wait_events(srv, 1, "task_error", { kind = "spawn" })
    assert.truthy(e, srv:describe())
    assert.truthy(e[1].error:find("script.lua:%d+: attempt to index"), e[1].error)
    assert.truthy(e[1].traceback:find("stack traceback", 1, true), e[1].traceback)
    assert.truthy(e[1].task:match("^%d+$"), e[1].task)
    assert.truthy(wait_events(srv, 1, "sibling_done"), srv:describe())
    c:check("NOOP", 250)
    c:close()
  end)

  it("aborts a task over the CPU budget, even inside a coroutine under pcall", function()
    local c = session(srv.port)
    local before = #events(srv, "task_error")
    c:check("XSPIN", 250)
    local e = wait_events(srv, before + 1, "task_error")
    assert.truthy(e, srv:describe())
    assert.truthy(e[before + 1].error:find("CPU budget", 1, true), e[before + 1].error)
    c:check("XCO", 250)
    e = wait_events(srv, before + 2, "task_error")
    assert.truthy(e, srv:describe())
    assert.truthy(e[before + 2].error:find("CPU budget", 1, true), e[before + 2].error)
    assert.equals(0, #events(srv, "swallowed"), srv:describe())
    -- the server still serves
    c:check("NOOP", 250)
    c:close()
  end)

  it("aborts a task spinning in a coroutine made at load time", function()
    local c = session(srv.port)
    local before = #events(srv, "task_error")
    c:check("XLOADCO", 250)
    local e = wait_events(srv, before + 1, "task_error")
    assert.truthy(e, srv:describe())
    assert.equals("CPU budget of 0.2 s exceeded", e[before + 1].error)
    assert.equals("spawn", e[before + 1].kind)
    assert.equals(0, #events(srv, "swallowed"), srv:describe())
    c:check("NOOP", 250)
    c:close()
  end)

  it("aborts a kurir.every run over the CPU budget; the next period runs", function()
    local c = session(srv.port)
    local before = #events(srv, "task_error")
    c:check("XEVERY", 250)
    local e = wait_events(srv, before + 1, "task_error")
    assert.truthy(e, srv:describe())
    assert.equals("CPU budget of 0.2 s exceeded", e[before + 1].error)
    assert.equals("every", e[before + 1].kind)
    assert.truthy(wait_events(srv, 1, "every_run", { n = "2" }), srv:describe())
    c:check("NOOP", 250)
    c:close()
  end)

  it("ends a task that yields outside a waiting function with an error", function()
    local c = session(srv.port)
    c:check("XYIELD", 250)
    local e = wait_events(srv, 1, "task_error", nil, 10)
    assert.truthy(harness.wait_for(function()
      for _, f in ipairs(events(srv, "task_error")) do
        if f.error:find("coroutine.yield", 1, true) then return true end
      end
    end, 10), srv:describe())
    assert.truthy(e)
    c:check("NOOP", 250)
    c:close()
  end)
end)

describe("kurir.every", function()
  it("runs every fraction of a second and never overlaps a run that sleeps past the period", function()
    local srv = harness.start {
      script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.tasks.test" }
local n = 0
kurir.every(0.05, function()
  n = n + 1
  kurir.log("tick", { n = n })
end)
local running, runs = 0, 0
kurir.every(0.02, function()
  running = running + 1
  runs = runs + 1
  if running > 1 then kurir.log("overlap", { running = running }) end
  kurir.sleep(0.1)
  running = running - 1
  kurir.log("slow_done", { runs = runs })
end)
local errs = 0
kurir.every(0.03, function()
  errs = errs + 1
  if errs == 1 then error("first run fails") end
  kurir.log("recovered", { run = errs })
end)
]],
    }
    local ticks = wait_events(srv, 5, "tick")
    assert.truthy(ticks, srv:describe())
    for i = 1, 5 do assert.equals(tostring(i), ticks[i].n) end
    assert.truthy(wait_events(srv, 4, "slow_done"), srv:describe())
    assert.equals(0, #events(srv, "overlap"), srv:describe())
    -- an error ends that run only; the next period runs again
    local e = wait_events(srv, 1, "task_error", { kind = "every" })
    assert.truthy(e, srv:describe())
    assert.truthy(e[1].error:find("first run fails", 1, true), e[1].error)
    assert.truthy(wait_events(srv, 1, "recovered", { run = "2" }), srv:describe())
    harness.finish(srv)
  end)

  it("refuses a bad period or function at load time, naming the script line", function()
    for _, call in ipairs { "kurir.every(0, function() end)", "kurir.every(-1, function() end)",
      "kurir.every(0/0, function() end)", "kurir.every(1)", "kurir.spawn(42)", "kurir.spawn()" } do
      local code, out = harness.run {
        script = "local kurir = require \"kurir\"\n" .. call .. "\n",
        args = { "{script}" },
      }
      assert.is_not.equals(0, code, call .. ": " .. out)
      assert.truthy(out:find("script.lua:2:", 1, true), call .. ": " .. out)
    end
  end)

  it("frees the tasks of a script that fails after spawning them", function()
    local code, out = harness.run {
      script = [[
local kurir = require "kurir"
kurir.spawn(function() kurir.sleep(1) end)
kurir.every(1, function() end)
error("late failure")
]],
      args = { "{script}" },
    }
    assert.is_not.equals(0, code, out)
    assert.truthy(out:find("script.lua:4: late failure", 1, true), out)
    assert.falsy(out:find("Sanitizer", 1, true), out)
  end)
end)

-- The line peer and the DNS zone of the other specs.
local function start_helper(cmd, portfile)
  local dir = harness.tmpdir()
  os.execute(cmd(dir) .. " </dev/null >/dev/null 2>" .. q(dir .. "/log") .. " & echo $! > " ..
    q(dir .. "/pid"))
  local pid = harness.wait_for(function()
    local t = harness.read_file(dir .. "/pid")
    return t and t:match("%d+")
  end, 5)
  assert(pid, "helper did not start")
  local port = portfile and harness.wait_for(function()
    local t = harness.read_file(dir .. "/port")
    return t and tonumber(t:match("%d+"))
  end, 10)
  return {
    port = port,
    stop = function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      harness.rmtree(dir)
    end,
  }
end

describe("tasks that resolve and connect", function()
  it("use kurir.dns and kurir.connect from a spawned task and from every()", function()
    local dns = start_helper(function(dir)
      return "python3 " .. q(harness.root .. "/spec/support/dns_server.py") .. " --port-file " ..
        q(dir .. "/port") .. " --lifetime " .. (120 * harness.scale)
    end, true)
    assert(dns.port, "dns_server.py did not start")
    local echo = start_helper(function(dir)
      return "python3 " .. q(harness.root .. "/spec/support/echo_server.py") .. " 0 120 " .. q(dir .. "/port")
    end, true)
    local echo_port = assert(echo.port, "echo server did not start")
    local srv = harness.start {
      script = [[
local kurir = require "kurir"
kurir.configure {
  hostname = "mx.tasks.test",
  dns = { servers = { "127.0.0.1:" .. arg[1] }, timeout = 0.5, tries = 1 },
}
local echo = tonumber(arg[2])
kurir.spawn(function()
  local mx, err = kurir.dns.mx("mx.test")
  kurir.log("resolved", { host = mx and mx[1] and mx[1].host or tostring(err) })
  local sock, cerr = kurir.connect("127.0.0.1", echo, { timeout = 5 })
  if not sock then kurir.log("connect_failed", { err = cerr }) return end
  sock:send("ping from a task\n")
  local line = sock:receive("l")
  sock:close()
  kurir.log("echoed", { line = line })
end)
local n = 0
kurir.every(0.05, function()
  n = n + 1
  if n > 2 then return end
  local a = kurir.dns.a("a.test")
  -- by name: kurir.connect resolves through kurir.dns
  local sock = assert(kurir.connect("peer.test", echo))
  sock:send("tick " .. n .. "\n")
  kurir.log("every_echo", { line = sock:receive("l"), a = a and a[1] or "none" })
  sock:close()
end)
]],
      args = { dns.port, echo_port },
    }
    local ok, err = pcall(function()
      local r = wait_events(srv, 1, "resolved")
      assert.truthy(r, srv:describe())
      assert.equals("mx1.test", r[1].host, srv:describe())
      local e = wait_events(srv, 1, "echoed")
      assert.truthy(e, srv:describe())
      assert.equals("ping from a task", e[1].line)
      local t = wait_events(srv, 2, "every_echo")
      assert.truthy(t, srv:describe())
      assert.equals("tick 1", t[1].line)
      assert.equals("tick 2", t[2].line)
      assert.equals("192.0.2.1", t[1].a)
      assert.equals(0, #events(srv, "task_error"), srv:describe())
    end)
    harness.finish(srv)
    dns.stop()
    echo.stop()
    assert(ok, err)
  end)
end)

describe("tasks and signals", function()
  local function versioned(v)
    return [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.tasks.test" }
kurir.spawn(function()
  local guard <close> = setmetatable({}, { __close = function() kurir.log("task_closed", { v = "]] .. v .. [[" }) end })
  while true do kurir.sleep(0.05) end
end)
local n = 0
kurir.every(0.03, function()
  n = n + 1
  kurir.log("tick", { v = "]] .. v .. [[", n = n })
end)
]]
  end

  it("SIGHUP stops the old script's tasks once the new script runs and starts the new ones", function()
    local srv = harness.start { script = versioned("v1") }
    assert.truthy(wait_events(srv, 2, "tick", { v = "v1" }), srv:describe())
    harness.write_file(srv.script, versioned("v2"))
    assert.is_true(srv:signal("HUP"))
    assert.truthy(wait_events(srv, 1, "task_closed", { v = "v1" }), srv:describe())
    assert.truthy(wait_events(srv, 1, "tasks_stopped", { tasks = "2", generation = "0" }), srv:describe())
    assert.truthy(wait_events(srv, 1, "tick", { v = "v2" }), srv:describe())
    local v1 = #events(srv, "tick", { v = "v1" })
    assert.truthy(wait_events(srv, 4, "tick", { v = "v2" }), srv:describe())
    assert.equals(v1, #events(srv, "tick", { v = "v1" }), "the old every() still runs\n" .. srv:describe())
    assert.equals(0, #events(srv, "task_closed", { v = "v2" }), srv:describe())

    -- a broken new script keeps the running one's tasks
    harness.write_file(srv.script, "local kurir = require \"kurir\"\nkurir.spawn(function() end)\nnot lua\n")
    assert.is_true(srv:signal("HUP"))
    assert.truthy(wait_events(srv, 1, "reload_failed"), srv:describe())
    local v2 = #events(srv, "tick", { v = "v2" })
    assert.truthy(wait_events(srv, v2 + 2, "tick", { v = "v2" }), srv:describe())
    assert.equals(0, #events(srv, "task_closed", { v = "v2" }), srv:describe())
    harness.finish(srv)
  end)

  it("SIGTERM with tasks waiting (sleep, socket, every) exits 0 and stops them first", function()
    local echo = start_helper(function(dir)
      return "python3 " .. q(harness.root .. "/spec/support/echo_server.py") .. " 0 120 " .. q(dir .. "/port")
    end, true)
    local echo_port = assert(echo.port, "echo server did not start")
    local srv = harness.start {
      script = versioned("v1") .. [[
kurir.spawn(function()
  local sock = assert(kurir.connect("127.0.0.1", ]] .. echo_port .. [[, { timeout = 60 }))
  sock:send("SILENT\n")
  kurir.log("receiving", {})
  sock:receive("l")
end)
]],
    }
    assert.truthy(wait_events(srv, 1, "receiving"), srv:describe())
    assert.truthy(wait_events(srv, 1, "tick"), srv:describe())
    local c = session(srv.port)
    assert.is_true(srv:signal("TERM"))
    assert.truthy(wait_events(srv, 1, "task_closed", { v = "v1" }), srv:describe())
    assert.truthy(wait_events(srv, 1, "tasks_stopped", { tasks = "3" }), srv:describe())
    c:close()
    assert.equals(0, srv:exit_code(10), srv:describe())
    harness.assert_clean(srv)
    echo.stop()
  end)
end)
