-- End to end: worker processes (-w N / workers = N). A master binds the
-- listeners and forks the workers; it restarts one that dies, replaces
-- them all on SIGHUP (a broken script is refused first), stops them on
-- SIGTERM with exit 0, and the connection limits and kurir.shared
-- dictionaries hold across workers and reloads.

local harness = require "harness"
local client = require "smtp_client"

teardown(harness.cleanup)

-- The greeting names the worker; RCPT answers with a count shared by all
-- workers (kurir.shared); `arg[1]` is a tag that a reload can change.
local SCRIPT = [[
local kurir = require "kurir"
local counts = kurir.shared("counts", "1m")
local tag = arg[1] or "one"
kurir.configure { limits = { connections = tonumber(arg[2] or "1000"), connections_per_ip = 1000 } }
function kurir.on.connect(s)
  return 220, "worker " .. kurir.worker() .. " of " .. select(2, kurir.worker()) .. " tag " .. tag
end
function kurir.on.rcpt(s, rcpt)
  return 250, "2.1.5 count " .. counts:incr("rcpt", 1, 0)
end
function kurir.on.data(s, msg) return 250, "2.0.0 ok" end
-- XBUSY seconds: say so on stderr at once, then spin without yielding, so
-- that this worker accepts nothing meanwhile (see busy())
function kurir.on.command(s, verb, arg)
  if verb ~= "XBUSY" then return end
  io.stderr:write("busy_start worker=" .. kurir.worker() .. " session=" .. s.id .. "\n")
  local t = kurir.now() + tonumber(arg)
  while kurir.now() < t do end
  return 250, "2.0.0 done"
end
]]

local function start(o)
  o = o or {}
  local dir = harness.tmpdir()
  local path = dir .. "/script.lua"
  harness.write_file(path, SCRIPT)
  local srv = harness.start { script_file = path, args = o.args or { "one" }, workers = o.workers or 2 }
  srv.script_path = path
  srv.script_dir = dir
  return srv
end

local function finish(srv)
  harness.finish(srv)
  harness.rmtree(srv.script_dir)
end

-- Count the log lines matching pattern.
local function count(srv, pattern)
  local n = 0
  for _ in srv:log():gmatch(pattern) do n = n + 1 end
  return n
end

-- Ready workers as {id -> pid} for one generation.
local function ready(srv, generation)
  local t = {}
  for id, pid, gen in srv:log():gmatch("event=worker_ready worker=(%d+) pid=(%d+) generation=(%d+)") do
    if tonumber(gen) == generation then t[tonumber(id)] = tonumber(pid) end
  end
  return t
end

local function wait_ready(srv, n, generation)
  return harness.wait_for(function()
    local t = ready(srv, generation)
    local k = 0
    for _ in pairs(t) do k = k + 1 end
    return k >= n and t
  end, 10)
end

-- Keep one worker busy in a hook (a worker in a hook accepts nothing), so
-- that the next connection goes to another worker. Returns the busy
-- worker's id and a function that waits for its reply and closes.
-- Sessions spread over workers by the kernel's choice otherwise, which may
-- well be one worker every time.
local function busy(srv, seconds)
  local c = client.open(srv.port)
  local id = tonumber(c:expect(220):match("worker (%d+)"))
  c:ehlo("client.e2e.test")
  local before = select(2, srv:log():gsub("busy_start", ""))
  c:send("XBUSY " .. (seconds or 0.8) .. "\r\n")
  assert(srv:wait_log(function(log) return select(2, log:gsub("busy_start", "")) > before end, 10),
    srv:describe())
  return id, function()
    c:expect(250)
    c:close()
  end
end

-- One session: greeting (worker id and tag) and the count that RCPT sees.
local function rcpt(port)
  local c = client.open(port)
  local greeting = c:expect(220)
  c:ehlo("client.e2e.test")
  c:check("MAIL FROM:<a@example.test>", 250)
  c:send("RCPT TO:<b@example.test>\r\n")
  local text = c:expect(250)
  c:cmd("QUIT")
  c:close()
  return tonumber(greeting:match("worker (%d+)")), tonumber(text:match("count (%d+)")), greeting:match("tag (%w+)")
end

describe("workers", function()
  it("-w 2 serves with two worker processes behind one master", function()
    local srv = start()
    local t = assert(wait_ready(srv, 2, 1), srv:describe())
    assert.are_not.equal(t[0], t[1])
    assert.equals(1, count(srv, "event=master pid=%d+ workers=2"))
    local seen = {}
    for _ = 1, 40 do
      local id, n = rcpt(srv.port)
      assert.is_number(n)
      seen[id] = true
      if seen[0] and seen[1] then break end
    end
    finish(srv)
  end)

  it("kurir.worker() is 0 of 1 in a single process", function()
    local srv = start { workers = 1 }
    local id, n = rcpt(srv.port)
    assert.equals(0, id)
    assert.equals(1, n)
    local c = client.open(srv.port)
    local text = c:expect(220)
    assert.truthy(text:find("worker 0 of 1", 1, true), text)
    c:close()
    finish(srv)
  end)

  it("restarts a worker killed with SIGKILL, and logs it", function()
    local srv = start()
    local t = assert(wait_ready(srv, 2, 1), srv:describe())
    assert(os.execute("kill -9 " .. t[0]))
    assert(srv:wait_log("event=worker_died worker=0 pid=" .. t[0] .. " signal=Killed restart_in=[%d.]+"),
      srv:describe())
    local again = harness.wait_for(function()
      for id, pid in srv:log():gmatch("event=worker_ready worker=(%d+) pid=(%d+)") do
        if id == "0" and tonumber(pid) ~= t[0] then return tonumber(pid) end
      end
    end, 10)
    assert(again, srv:describe())
    assert(os.execute("kill -0 " .. again .. " 2>/dev/null"))
    local _, n = rcpt(srv.port)
    assert.is_number(n)
    finish(srv)
  end)

  it("SIGHUP replaces every worker with the new script; established sessions finish", function()
    local srv = start()
    local old = assert(wait_ready(srv, 2, 1), srv:describe())
    local held = client.open(srv.port)
    held:expect(220)
    held:ehlo("client.e2e.test")
    harness.write_file(srv.script_path, (SCRIPT:gsub('arg%[1%] or "one"', '"two"')))
    assert.is_true(srv:signal("HUP"))
    assert(srv:wait_log("event=reload script=[^ ]+ generation=2 workers=2"), srv:describe())
    local new = assert(wait_ready(srv, 2, 2), srv:describe())
    assert.are_not.equal(old[0], new[0])
    -- an old worker may take a session or two before it hears it is retired
    assert(harness.wait_for(function() return select(3, rcpt(srv.port)) == "two" end, 10))
    assert(srv:wait_log("event=retire worker=%d sessions=[12]"), srv:describe())
    -- the session held by a retired worker goes on undisturbed
    held:check("MAIL FROM:<a@example.test>", 250)
    held:check("RCPT TO:<b@example.test>", 250)
    held:cmd("QUIT")
    held:close()
    assert(harness.wait_for(function() return count(srv, "event=worker_exited") >= 2 end, 10), srv:describe())
    finish(srv)
  end)

  it("SIGHUP with a broken script is refused in the master; no worker changes", function()
    local srv = start()
    assert(wait_ready(srv, 2, 1), srv:describe())
    harness.write_file(srv.script_path, "local x = \n")
    assert.is_true(srv:signal("HUP"))
    assert(srv:wait_log("event=reload_failed script=[^ ]+ error="), srv:describe())
    local _, n, tag = rcpt(srv.port)
    assert.is_number(n)
    assert.equals("one", tag)
    assert.equals(0, count(srv, "event=worker_exited"))
    assert.equals(0, count(srv, "generation=2"))
    finish(srv)
  end)

  it("SIGTERM stops every worker and the master exits 0", function()
    local srv = start()
    local t = assert(wait_ready(srv, 2, 1), srv:describe())
    assert.is_true(srv:signal("TERM"))
    assert.equals(0, srv:exit_code(10))
    assert.equals(2, count(srv, "event=worker_exited worker=%d pid=%d+ status=0"))
    for _, pid in pairs(t) do
      assert.is_false(os.execute("kill -0 " .. pid .. " 2>/dev/null") == true)
    end
    harness.assert_clean(srv)
    harness.rmtree(srv.script_dir)
  end)

  it("a script that fails in the master exits 1 before any worker starts", function()
    local rc, out = harness.run { script = "local kurir = require 'kurir'\nkurir.configure { workers = 0 }\n",
      args = { "-l", "127.0.0.1:0", "{script}" } }
    assert.equals(1, rc)
    assert.truthy(out:find("script.lua:2:", 1, true), out)
    assert.truthy(out:find("workers", 1, true), out)
  end)

  it("-w needs a number from 1 to 64", function()
    for _, bad in ipairs { "0", "65", "x", "" } do
      local rc, out = harness.run { args = { "-w", bad, "--check", "{script}" }, script = "" }
      assert.equals(2, rc, bad)
      assert.truthy(out:find("-w needs a number of workers", 1, true), out)
    end
  end)

  it("counts connections across workers: the limit is global", function()
    local srv = start { args = { "one", "3" } }
    assert(wait_ready(srv, 2, 1), srv:describe())
    -- hold 3 sessions that span both workers (the kernel picks the worker)
    local held, spans
    for _ = 1, 30 do
      held = {}
      local seen = {}
      for i = 1, 3 do
        local c = client.open(srv.port)
        local text = c:expect(220)
        held[i] = c
        seen[tonumber(text:match("worker (%d)"))] = true
      end
      spans = seen[0] and seen[1]
      if spans then break end
      for _, c in ipairs(held) do c:cmd("QUIT") c:close() end
      -- wait until the workers have released them
      assert(harness.wait_for(function()
        local _, d = srv:log():gsub("event=disconnect", "")
        local _, n = srv:log():gsub("event=connect ", "")
        return d == n
      end, 10))
    end
    assert.is_true(spans, "3 sessions never spanned both workers")
    local c = client.open(srv.port)
    local code, text = c:reply()
    assert.equals(421, code, text)
    c:close()
    assert(srv:wait_log("event=refused worker=%d remote_ip=127%.0%.0%.1 reason=\"connection limit\""), srv:describe())
    -- one leaves: one more fits
    held[1]:cmd("QUIT")
    held[1]:close()
    local ok = harness.wait_for(function()
      local d = client.open(srv.port)
      local dc = d:reply()
      d:close()
      return dc == 220
    end, 10, 0.1)
    assert.is_true(ok)
    for i = 2, 3 do held[i]:close() end
    finish(srv)
  end)

  it("kurir.shared: two workers and a reload share one count", function()
    local srv = start()
    assert(wait_ready(srv, 2, 1), srv:describe())
    local seen, last = {}, 0
    for _ = 1, 2 do
      local busy_id, done = busy(srv)
      local id, n = rcpt(srv.port)   -- the other worker: the busy one accepts nothing
      done()
      assert.are_not.equal(busy_id, id)
      assert.equals(last + 1, n)
      last = n
      seen[id] = true
      seen[busy_id] = true
    end
    assert.is_true(seen[0] and seen[1], "sessions never reached both workers")
    assert.is_true(srv:signal("HUP"))
    assert(wait_ready(srv, 2, 2), srv:describe())
    local _, n = rcpt(srv.port)
    assert.equals(last + 1, n)
    finish(srv)
  end)

  it("kurir.shared: get/set/add/incr/delete/ttl/stats from a hook, and clear errors", function()
    local dir = harness.tmpdir()
    local path = dir .. "/script.lua"
    harness.write_file(path, [=[
local kurir = require "kurir"
local d = kurir.shared("t", 65536)
assert(kurir.shared("t", "64k") ~= nil)
local ok, err = pcall(kurir.shared, "t", "128k")
assert(not ok and err:find("a new size needs a restart", 1, true), err)
ok, err = pcall(kurir.shared, "u", "1k")
assert(not ok and err:find("size must be from", 1, true), err)
ok, err = pcall(kurir.shared, "u", "lots")
assert(not ok and err:find("expected a size", 1, true), err)
function kurir.on.rcpt(s, rcpt)
  assert(d:set("s", "a\0b") == true)
  assert(d:get("s") == "a\0b")
  assert(d:set("i", 7) and math.type(d:get("i")) == "integer")
  assert(d:set("f", 1.5) and d:get("f") == 1.5)
  assert(d:set("b", false) and d:get("b") == false)
  local v, e = d:add("s", "x")
  assert(v == nil and e == "exists")
  assert(d:incr("i", 3) == 10)
  v, e = d:incr("s", 1)
  assert(v == nil and e == "not a number")
  v, e = d:incr("none")
  assert(v == nil and e == "not found")
  assert(d:incr("none", 2, 40, 100) == 42)
  local t = d:ttl("none")
  assert(t > 99 and t <= 100, t)
  assert(d:ttl("i") == 0)
  assert(d:delete("i") and d:get("i") == nil)
  assert(d:stats().count == 4)
  local okk, er = pcall(d.set, d, "k", {})
  assert(not okk and er:find("expected a string, number or boolean", 1, true), er)
  okk, er = pcall(d.set, d, "k", 1, -1)
  assert(not okk and er:find("seconds", 1, true), er)
  return 250, "2.1.5 all good"
end
]=])
    local srv = harness.start { script_file = path }
    local c = client.open(srv.port)
    c:expect(220)
    c:ehlo("client.e2e.test")
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 all good")
    c:cmd("QUIT")
    c:close()
    harness.finish(srv)
    harness.rmtree(dir)
  end)

  it("kurir.every runs in every worker; kurir.worker() picks one; a reload stops the old tasks", function()
    local dir = harness.tmpdir()
    local path = dir .. "/script.lua"
    harness.write_file(path, [=[
local kurir = require "kurir"
local tag = arg[1]
kurir.every(0.05, function() kurir.log("tick", { worker = kurir.worker(), tag = tag }) end)
if kurir.worker() == 0 then
  kurir.every(0.05, function() kurir.log("only0", { worker = kurir.worker(), tag = tag }) end)
end
]=])
    local srv = harness.start { script_file = path, args = { "one" }, workers = 2 }
    assert(srv:wait_log(function(log)
      return log:find("event=tick tag=one worker=0", 1, true) and log:find("event=tick tag=one worker=1", 1, true)
    end), srv:describe())
    assert(srv:wait_log("event=only0 tag=one worker=0"), srv:describe())
    assert.is_nil(srv:log():find("event=only0 tag=one worker=1", 1, true))
    -- the master checks the script but runs none of its tasks
    assert.is_nil(srv:log():find("event=tick tag=one worker=nil", 1, true))
    harness.write_file(path, (harness.read_file(path):gsub("local tag = arg%[1%]", 'local tag = "two"')))
    assert.is_true(srv:signal("HUP"))
    assert(wait_ready(srv, 2, 2), srv:describe())
    assert(srv:wait_log(function(log) return select(2, log:gsub("event=retire", "")) == 2 end), srv:describe())
    assert(srv:wait_log("event=tick tag=two worker=1"), srv:describe())
    -- once both old workers retired, no tick of the old script follows
    local log = srv:log()
    local _, last_retire = log:find(".*event=retire[^\n]*\n")
    assert(srv:wait_log(function(l) return #l > #log + 200 end), srv:describe())
    local later = srv:log():sub(last_retire + 1)
    assert.is_nil(later:find("tag=one", 1, true), later)
    harness.finish(srv)
    harness.rmtree(dir)
  end)

  it("scripts/examples/ratelimit.lua holds one count for two workers", function()
    local srv = harness.start { script_file = "scripts/examples/ratelimit.lua", args = { "3" }, workers = 2 }
    assert(wait_ready(srv, 2, 1), srv:describe())
    local accepted = 0
    for _ = 1, 6 do
      local c = client.open(srv.port)
      c:expect(220)
      c:ehlo("client.e2e.test")
      local code = c:cmd("MAIL FROM:<a@example.test>")
      if code == 250 then accepted = accepted + 1 else assert.equals(450, code) end
      c:cmd("QUIT")
      c:close()
    end
    assert.equals(3, accepted)
    assert.equals(3, select(2, srv:log():gsub("event=ratelimited", "")))
    harness.finish(srv)
  end)

  it("the queue has one owner: messages accepted by any worker are delivered exactly once", function()
    local dir = harness.tmpdir()
    harness.write_file(dir .. "/ok.sh", 'mkdir -p "$(dirname "$0")/out"\n' ..
      'cat >> "$(dirname "$0")/out/$RECIPIENT"\n')
    local srv = harness.start { workers = 2, args = { dir }, script = [==[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure { hostname = "mx.w.test", queue = { dir = dir .. "/queue", retry = { 0.2 } } }
local route = kurir.pipe { "/bin/sh", dir .. "/ok.sh" }
function kurir.on.connect(s) return 220, "worker " .. kurir.worker() end
function kurir.on.rcpt(s, rcpt) rcpt.route = route end
function kurir.on.command(s, verb, arg)
  if verb ~= "XBUSY" then return end
  io.stderr:write("busy_start worker=" .. kurir.worker() .. "\n")
  local t = kurir.now() + tonumber(arg)
  while kurir.now() < t do end
  return 250, "2.0.0 done"
end
]==] }
    -- messages on new connections; every other one while a worker is kept
    -- busy, so that both workers accept some
    local seen, sent = {}, 0
    for i = 1, 10 do
      local done
      if i % 2 == 0 then
        done = select(2, busy(srv, 0.5))
      end
      local c = client.connect(srv.port)
      local _, text = c:reply()
      seen[text:match("worker (%d)")] = true
      c:check("EHLO c.test", 250)
      c:check("MAIL FROM:<a@w.test>", 250)
      c:check("RCPT TO:<r" .. i .. "@w.test>", 250)
      c:check("DATA", 354)
      c:check("Subject: " .. i .. "\r\n\r\nbody " .. i .. "\r\n.", 250)
      c:check("QUIT", 221)
      c:close()
      if done then done() end
      sent = i
    end
    assert.truthy(seen["0"] and seen["1"], "one worker took every connection:\n" .. srv:describe())
    local done = harness.wait_for(function()
      for i = 1, sent do
        if not harness.read_file(dir .. "/out/r" .. i .. "@w.test") then return false end
      end
      return true
    end, 20)
    assert.truthy(done, srv:describe())
    -- let a second delivery show itself: the queue must drain (every
    -- message done), then each file holds its message once
    assert(srv:wait_log(function(log)
      local _, n = log:gsub("event=queue_done", "")
      return n >= sent
    end, 20), srv:describe())
    for i = 1, sent do
      local body = harness.read_file(dir .. "/out/r" .. i .. "@w.test")
      local _, n = body:gsub("body " .. i .. "\r?\n", "")
      assert.equals(1, n, "r" .. i .. " delivered " .. n .. " times")
    end
    finish(srv)
  end)

  it("log lines from several workers never interleave; a line over PIPE_BUF is cut with a marker", function()
    local dir = harness.tmpdir()
    local path = dir .. "/script.lua"
    harness.write_file(path, [[
local kurir = require "kurir"
kurir.configure { limits = { recipients = 1000 } }
function kurir.on.rcpt(s, rcpt)
  s:log("long", { pad = string.rep(kurir.worker() == 0 and "a" or "b", 3000) })
  if rcpt.user == "huge" then s:log("huge", { pad = string.rep("h", 10000) }) end
end
]])
    local srv = harness.start { script_file = path, workers = 2 }
    assert(wait_ready(srv, 2, 1), srv:describe())
    -- two clients at once, so that both workers log at the same time
    local conns = {}
    for i = 1, 2 do
      conns[i] = client.open(srv.port)
      conns[i]:expect(220)
      conns[i]:ehlo("client.e2e.test")
      conns[i]:check("MAIL FROM:<a@example.test>", 250)
    end
    local rcpts = {}
    for _ = 1, 50 do rcpts[#rcpts + 1] = "RCPT TO:<x@example.test>\r\n" end
    local burst = table.concat(rcpts)
    for _ = 1, 4 do
      for i = 1, 2 do assert(conns[i]:send(burst)) end
      for i = 1, 2 do for _ = 1, 50 do conns[i]:expect(250) end end
    end
    conns[1]:check("RCPT TO:<huge@example.test>", 250)
    for i = 1, 2 do conns[i]:cmd("QUIT") conns[i]:close() end
    assert(srv:wait_log("event=huge"), srv:describe())
    local long = 0
    for line in srv:log():gmatch("[^\n]*") do
      if line ~= "" then
        assert.truthy(line:match("^time=%S+ level=%a+ "), "not a whole line: " .. line:sub(1, 200))
        if line:find("event=long", 1, true) then
          long = long + 1
          assert.truthy(line:match(" pad=a+$") or line:match(" pad=b+$"), "mixed line")
        end
        if line:find("event=huge", 1, true) then
          assert.truthy(line:match(" log_line_cut=1$"), line:sub(-100))
          assert.is_true(#line + 1 <= 4096)
        end
      end
    end
    assert.equals(401, long)   -- 400 and the huge one's
    harness.finish(srv)
    harness.rmtree(dir)
  end)
end)
