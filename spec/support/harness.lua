-- harness.lua - starts the real kurir binary for the end-to-end specs.
--
-- Each server runs in a fresh temporary directory (its cwd), with stdout and
-- stderr in DIR/log. A small sh wrapper records kurir's own PID in DIR/pid
-- and its exit status in DIR/exit, so that stop() signals only the process
-- we started and can report how it exited. Every wait is bounded.
-- Process control is plain io.popen / os.execute with sh; no posix module.

local socket = require "socket"

local harness = {}

-- The sanitizer build is slower: every timeout is scaled by this factor.
harness.scale = (os.getenv("KURIR_SANITIZED") or "") ~= "" and 3 or 1
harness.sanitized = harness.scale ~= 1

local function cwd()
  local p = io.popen("pwd")
  local d = p:read("l")
  p:close()
  return d
end

harness.root = cwd()

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return harness.root .. "/" .. path
end

harness.bin = absolute(os.getenv("KURIR_BIN") or "build/kurir")

-- Single-quote a string for sh.
local function q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end
harness.quote = q

local function sleep(seconds)
  socket.sleep(seconds)
end
harness.sleep = sleep

function harness.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

function harness.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

function harness.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Names in a directory (one level, no dot entries), sorted.
function harness.list_dir(path)
  local names = {}
  local p = io.popen("ls -1A " .. q(path) .. " 2>/dev/null")
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return names
end

-- A fresh private directory under $TMPDIR (or /tmp).
function harness.tmpdir()
  local name = os.tmpname()
  os.remove(name)
  local ok = os.execute("mkdir -m 700 " .. q(name))
  assert(ok, "cannot create temporary directory " .. name)
  return name
end

function harness.rmtree(path)
  if path and path:match("^/tmp/") or (path and os.getenv("TMPDIR") and
      path:sub(1, #os.getenv("TMPDIR")) == os.getenv("TMPDIR")) then
    os.execute("rm -rf " .. q(path))
  end
end

-- True when something listens on TCP port (from /proc/net/tcp{,6}); nil
-- when /proc cannot be read.
local function proc_listening(port)
  local hex = string.format(":%04X", port)
  local seen = false
  for _, f in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local data = harness.read_file(f)
    if data then
      seen = true
      for line in data:gmatch("[^\n]+") do
        local localaddr, st = line:match("^%s*%d+:%s+(%x+:%x+)%s+%x+:%x+%s+(%x+)")
        if localaddr and st == "0A" and localaddr:sub(-5) == hex then return true end
      end
    end
  end
  if not seen then return nil end
  return false
end
harness.listening = proc_listening

-- A TCP port on host that refuses connections for as long as the returned
-- socket stays open (bound, never listening: the kernel answers RST, and
-- nobody else can take the port). Returns port, socket; close it after.
function harness.closed_port(host)
  host = host or "127.0.0.1"
  local s = host:find(":", 1, true) and assert(socket.tcp6()) or assert(socket.tcp())
  assert(s:bind(host, 0))
  local _, port = s:getsockname()
  return tonumber(port), s
end

-- Poll fn every step seconds until it returns a true value or timeout
-- seconds (scaled) pass. Returns fn's value or nil.
function harness.wait_for(fn, timeout, step)
  local deadline = socket.gettime() + (timeout or 10) * harness.scale
  step = step or 0.05
  repeat
    local v = fn()
    if v then return v end
    sleep(step)
  until socket.gettime() > deadline
  return fn()
end

local function substitute(s, dir)
  return (tostring(s):gsub("{dir}", function() return dir end))
end

local Server = {}
Server.__index = Server

-- Every server started and not yet stopped, so that cleanup() can stop
-- the ones a failing test left behind.
local started = {}

function Server:log()
  return harness.read_file(self.dir .. "/log") or ""
end

-- Wait until the log matches pattern (a Lua pattern, or a function taking
-- the log text). Returns the match or nil after timeout seconds (scaled).
function Server:wait_log(pattern, timeout)
  return harness.wait_for(function()
    local text = self:log()
    if type(pattern) == "function" then return pattern(text) end
    return text:match(pattern)
  end, timeout or 10)
end

function Server:exit_code(timeout)
  local v = harness.wait_for(function()
    local t = harness.read_file(self.dir .. "/exit")
    return t and t:match("%d+")
  end, timeout or 0)
  return v and tonumber(v)
end

function Server:running()
  if self:exit_code(0) then return false end
  return os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == true
end

function Server:signal(name)
  if not self:running() then return false end
  return os.execute("kill -s " .. name .. " " .. self.pid) == true
end

-- SIGTERM, wait up to 10 s (scaled), then SIGKILL. Returns the exit status.
function Server:stop()
  if self.stopped ~= nil then return self.stopped end
  local code = self:exit_code(0)
  if not code then
    self:signal("TERM")
    code = self:exit_code(10)
    if not code then
      self:signal("KILL")
      code = self:exit_code(5)
    end
  end
  self.stopped = code or -1
  started[self] = nil
  return self.stopped
end

-- Stop every server still running (for teardown after failed tests).
function harness.cleanup()
  local smtp_client = package.loaded["smtp_client"]
  if smtp_client then smtp_client.close_all() end
  local list = {}
  for srv in pairs(started) do list[#list + 1] = srv end
  for _, srv in ipairs(list) do srv:stop() end
end

-- Everything printed to the log by kurir, for failure messages.
function Server:describe()
  return "kurir log (" .. self.dir .. "):\n" .. self:log()
end

-- Start kurir in the background and wait until it listens.
--   o.script       Lua source, written to DIR/script.lua
--   o.script_file  an existing script instead (path relative to the repo)
--   o.args         script arguments; "{dir}" is replaced by DIR
--   o.listen       listener strings (default: { "127.0.0.1:0" }, an
--                  ephemeral port); false for no -l option at all (the
--                  script's own listeners)
--   o.extra        further kurir options (before the script)
--   o.env          environment variables for kurir
--   o.cwd          working directory (default DIR)
--   o.max_files    open-file limit (ulimit -n) for kurir
--   o.workers      -w N (default 1: one process, as most specs expect);
--                  false for no -w option (the script's or the default)
-- The ports actually bound are read from kurir's `listening` log lines
-- (SPEC 1), so port 0 needs no guessing and no bind-close-reuse race:
--   server.ports[i]      the port of the i-th listener, in the order given
--   server.addresses[i]  its address as logged ("127.0.0.1:41234",
--                        "[::1]:40001", "smtps://127.0.0.1:40002")
--   server.port          server.ports[1]
function harness.start(o)
  o = o or {}
  local self = setmetatable({}, Server)
  self.dir = harness.tmpdir()
  local script
  if o.script then
    script = self.dir .. "/script.lua"
    harness.write_file(script, o.script)
  elseif o.script_file then
    script = absolute(o.script_file)
  end
  self.script = script

  local listen = o.listen
  if listen == nil then listen = { "127.0.0.1:0" } end
  local argv = { q(harness.bin) }
  for _, l in ipairs(listen or {}) do
    argv[#argv + 1] = "-l"
    argv[#argv + 1] = q(l)
  end
  local workers = o.workers
  if workers == nil then workers = 1 end
  if workers then
    argv[#argv + 1] = "-w"
    argv[#argv + 1] = tostring(math.tointeger(workers))
  end
  for _, x in ipairs(o.extra or {}) do argv[#argv + 1] = q(substitute(x, self.dir)) end
  if script then argv[#argv + 1] = q(script) end
  for _, a in ipairs(o.args or {}) do argv[#argv + 1] = q(substitute(a, self.dir)) end

  local env = {}
  for k, v in pairs(o.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
  local envs = #env > 0 and ("env " .. table.concat(env, " ") .. " ") or ""

  self.listen = listen or {}
  local d = q(self.dir)
  local ulimit = o.max_files and ("ulimit -n " .. math.tointeger(o.max_files) .. "; ") or ""
  local inner = "cd " .. q(o.cwd and substitute(o.cwd, self.dir) or self.dir) .. " && { " .. ulimit ..
    envs .. table.concat(argv, " ") .. " </dev/null >" .. d .. "/log 2>&1 & p=$!; echo $p > " ..
    d .. "/pid.tmp; mv " .. d .. "/pid.tmp " .. d .. "/pid; wait $p; echo $? > " .. d ..
    "/exit.tmp; mv " .. d .. "/exit.tmp " .. d .. "/exit; }"
  self.command = inner
  local ok = os.execute("sh -c " .. q(inner) .. " </dev/null >/dev/null 2>&1 &")
  assert(ok, "cannot start kurir wrapper")
  local pid = harness.wait_for(function()
    local t = harness.read_file(self.dir .. "/pid")
    return t and t:match("%d+")
  end, 10)
  assert(pid, "kurir did not start: " .. inner)
  self.pid = tonumber(pid)
  started[self] = true

  -- Every listener is bound before the first `listening` line is written,
  -- and all of them are logged together; with -l we know how many to expect.
  local want = #self.listen > 0 and #self.listen or 1
  local up = harness.wait_for(function()
    local lines = harness.log_lines(self, { event = "listening" })
    if #lines >= want then return lines end
    if self:exit_code(0) then return "exited" end
  end, 10)
  if type(up) ~= "table" then
    local log = self:log()
    self:stop()
    error("kurir did not log `listening` (" .. tostring(up or "timeout") .. "); command: " ..
      inner .. "\nlog:\n" .. log, 2)
  end
  self.ports, self.addresses = {}, {}
  for i, l in ipairs(up) do
    self.addresses[i] = l.fields.address
    self.ports[i] = tonumber(l.fields.port or l.fields.address:match(":(%d+)$"))
  end
  self.port = self.ports[1]
  return self
end

-- Assert that the server log shows no sanitizer report.
function harness.assert_clean(server)
  local log = server:log()
  assert(not log:find("ERROR: AddressSanitizer", 1, true), "AddressSanitizer report:\n" .. log)
  assert(not log:find("LeakSanitizer", 1, true), "LeakSanitizer report:\n" .. log)
  if harness.sanitized then
    assert(not log:find("runtime error:", 1, true), "UBSan report:\n" .. log)
  end
end

-- Stop a server, assert a clean exit (0) and a clean log, remove its dir.
function harness.finish(server)
  if not server then return end
  local smtp_client = package.loaded["smtp_client"]
  if smtp_client and server.port then smtp_client.close_all(server.port) end
  local code = server:stop()
  harness.assert_clean(server)
  assert(code == 0, "kurir exited with " .. tostring(code) .. " after SIGTERM\n" .. server:describe())
  harness.rmtree(server.dir)
end

-- Run kurir in the foreground (bounded by `timeout 20`). Returns the exit
-- code and the combined stdout+stderr.
--   o.args   kurir's whole argument list ("{dir}" -> a temp dir)
--   o.script Lua source written to DIR/script.lua; "{script}" in args names it
function harness.run(o)
  o = o or {}
  local dir = harness.tmpdir()
  local script = dir .. "/script.lua"
  if o.script then harness.write_file(script, o.script) end
  local argv = {}
  for _, a in ipairs(o.args or {}) do
    local s = tostring(a):gsub("{script}", function() return script end)
    argv[#argv + 1] = q(substitute(s, dir))
  end
  local cmd = "cd " .. q(o.cwd or dir) .. " && timeout " .. (20 * harness.scale) .. " " ..
    q(harness.bin) .. " " .. table.concat(argv, " ") .. " </dev/null >" .. q(dir .. "/out") ..
    " 2>&1; echo $? > " .. q(dir .. "/rc")
  os.execute(cmd)
  local rc = tonumber((harness.read_file(dir .. "/rc") or ""):match("%d+"))
  local out = harness.read_file(dir .. "/out") or ""
  harness.rmtree(dir)
  return rc, out, script
end

-- Run a shell command (bounded by `timeout`), return exit code and output.
function harness.sh(cmd, seconds)
  local dir = harness.tmpdir()
  os.execute("timeout " .. ((seconds or 30) * harness.scale) .. " sh -c " .. q(cmd) ..
    " </dev/null >" .. q(dir .. "/out") .. " 2>&1; echo $? > " .. q(dir .. "/rc"))
  local rc = tonumber((harness.read_file(dir .. "/rc") or ""):match("%d+"))
  local out = harness.read_file(dir .. "/out") or ""
  harness.rmtree(dir)
  return rc, out
end

-- A site script that stores msg:raw() in DIR/<queue id>.eml (arg[1] = DIR,
-- arg[2] = message_size, arg[3] = bare_lf) and answers "queued as <id>";
-- recipients whose local part is "reject" are refused (false).
harness.STORE_SCRIPT = [==[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure {
  hostname = "mx.e2e.test",
  limits = { message_size = tonumber(arg[2] or "33554432"), bare_lf = arg[3] or "reject" },
}
function kurir.on.rcpt(s, rcpt)
  if rcpt.user == "reject" then return false end
end
function kurir.on.data(s, msg)
  local f = assert(io.open(dir .. "/" .. msg.id .. ".eml", "wb"))
  f:write(msg:raw())
  f:close()
  local r = assert(io.open(dir .. "/" .. msg.id .. ".rcpts", "wb"))
  for _, x in ipairs(msg.rcpts) do r:write(x.address, "\n") end
  r:close()
  return 250, "2.0.0 Ok: queued as " .. msg.id
end
]==]

-- Parse one logfmt line into a table of fields (first value of a key
-- wins) and a table of how often each key occurs. Quoted values may
-- contain backslash escapes.
function harness.logfmt(line)
  local fields, count = {}, {}
  local i, n = 1, #line
  while i <= n do
    local ks, ke, key = line:find("^%s*([^%s=\"]+)=", i)
    if not ks then break end
    i = ke + 1
    local v
    if line:sub(i, i) == '"' then
      local parts = {}
      i = i + 1
      while i <= n do
        local ch = line:sub(i, i)
        if ch == "\\" then
          local e = line:sub(i + 1, i + 1)
          parts[#parts + 1] = ({ n = "\n", r = "\r", t = "\t" })[e] or e
          i = i + 2
        elseif ch == '"' then
          i = i + 1
          break
        else
          parts[#parts + 1] = ch
          i = i + 1
        end
      end
      v = table.concat(parts)
    else
      local _, e = line:find("^%S*", i)
      v = line:sub(i, e)
      i = e + 1
    end
    if fields[key] == nil then fields[key] = v end
    count[key] = (count[key] or 0) + 1
  end
  return fields, count
end

-- The log lines of a server whose fields match all of `want`, parsed.
function harness.log_lines(server, want)
  local out = {}
  for line in server:log():gmatch("[^\n]+") do
    local f, count = harness.logfmt(line)
    local ok = true
    for k, v in pairs(want or {}) do
      if f[k] ~= v then ok = false break end
    end
    if ok then out[#out + 1] = { fields = f, count = count, line = line } end
  end
  return out
end

-- Split a delivered message into the local delivery prefix (Return-Path,
-- Delivered-To lines) and the rest, skipping one Received trace field
-- (RFC 5321 4.4) right after them. Returns prefix, received, rest.
function harness.split_delivery(data)
  local prefix = data:match("^Return%-Path: [^\r\n]*\r\n")
  if not prefix then return nil, nil, data end
  local pos = #prefix + 1
  while true do
    local dt = data:match("^Delivered%-To: [^\r\n]*\r\n", pos)
    if not dt then break end
    pos = pos + #dt
  end
  prefix = data:sub(1, pos - 1)
  local received = ""
  local first = data:match("^Received:[^\r\n]*\r\n", pos)
  if first then
    local rpos = pos + #first
    while true do
      local cont = data:match("^[ \t][^\r\n]*\r\n", rpos)
      if not cont then break end
      rpos = rpos + #cont
    end
    received = data:sub(pos, rpos - 1)
    pos = rpos
  end
  return prefix, received, data:sub(pos)
end

-- Every file in a Maildir's new/ (full paths), sorted.
function harness.maildir_new(dir)
  local files = {}
  for _, n in ipairs(harness.list_dir(dir .. "/new")) do files[#files + 1] = dir .. "/new/" .. n end
  return files
end

-- How many log lines match a Lua pattern (one count per line).
function harness.count_log(server, pattern)
  local n = 0
  for line in server:log():gmatch("[^\n]+") do
    if line:find(pattern) then n = n + 1 end
  end
  return n
end

-- Wait until at least n log lines match pattern; returns the count reached
-- or nil after timeout seconds (scaled).
function harness.wait_count(server, pattern, n, timeout)
  return harness.wait_for(function()
    local c = harness.count_log(server, pattern)
    return c >= n and c
  end, timeout or 10)
end

-- The server's session id for a connected smtp_client (found by the
-- client's local port in the connect event); waits for that event.
function harness.session_id(server, c)
  local _, port = c.sock:getsockname()
  return harness.wait_for(function()
    local l = harness.log_lines(server, { event = "connect", remote_port = tostring(port) })[1]
    return l and l.fields.session
  end, 10)
end

-- Wait until a session is freed (event=session_end): after that line none
-- of its hooks, timers or waits can run. Returns true, or nil on timeout.
function harness.wait_session_end(server, id, timeout)
  return harness.wait_for(function()
    return #harness.log_lines(server, { event = "session_end", session = id }) > 0
  end, timeout or 10)
end

-- The kernel's send and receive queue sizes (bytes) of the IPv4 TCP
-- socket bound to local_port and connected to remote_port on this host,
-- from /proc/net/tcp; nil when there is no such socket.
function harness.tcp_queues(local_port, remote_port)
  local want = string.format(":%04X %%x+:%04X ", local_port, remote_port)
  for line in (harness.read_file("/proc/net/tcp") or ""):gmatch("[^\n]+") do
    if line:find(want) then
      local tx, rx = line:match("^%s*%d+:%s+%x+:%x+%s+%x+:%x+%s+%x+%s+(%x+):(%x+)")
      if tx then return tonumber(tx, 16), tonumber(rx, 16) end
    end
  end
  return nil
end

return harness
