-- End to end: limits (SPEC 3). Each limit is answered with its reply from
-- core/proto/reply.h and the session stays in step (or is closed with 421).

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"

local HOST = "mx.e2e.test"

local function script(limits, timeouts)
  return [[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure {
  hostname = "mx.e2e.test",
  limits = ]] .. limits .. [[,
  timeouts = ]] .. (timeouts or "{}") .. [[,
}
function kurir.on.data(s, msg)
  local f = assert(io.open(dir .. "/" .. msg.id .. ".rcpts", "wb"))
  for _, r in ipairs(msg.rcpts) do f:write(r.address, "\n") end
  f:close()
  return 250, "2.0.0 Ok: queued as " .. msg.id
end
]]
end

local function session(port, opts)
  local c = client.open(port, nil, opts)
  c:expect(220, "220 " .. HOST .. " ESMTP kurir")
  local code, text = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  return c
end

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("limits", function()
  local srv

  lazy_setup(function()
    srv = harness.start {
      script = script("{ recipients = 3, errors = 3, line_length = 512, text_line_length = 100 }"),
      args = { "{dir}" },
    }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  it("answers an over-long command line with 500 5.5.6 and the next command works", function()
    local c = session(srv.port)
    c:check("NOOP " .. string.rep("x", 600), 500, "500 5.5.6 Line too long")
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
  end)

  it("counts line_length with the CRLF: 512 bytes pass, 513 do not", function()
    local c = session(srv.port)
    c:check("NOOP " .. string.rep("x", 512 - 7), 250, "250 2.0.0 OK")
    c:check("NOOP " .. string.rep("x", 512 - 6), 500, "500 5.5.6 Line too long")
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
  end)

  it("skips a 100 KB line to its CRLF, answers once and stays in step", function()
    local c = session(srv.port)
    assert(c:send("MAIL FROM:<" .. string.rep("a", 100000) .. "@example.test>\r\nNOOP\r\n"))
    c:expect(500, "500 5.5.6 Line too long")
    c:expect(250, "250 2.0.0 OK")
    c:in_step()
    c:check("MAIL FROM:<a@example.test>", 250, "250 2.1.0 Sender OK")
    c:close()
  end)

  it("refuses recipients past limits.recipients with 452 4.5.3", function()
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    for i = 1, 3 do c:check("RCPT TO:<r" .. i .. "@example.test>", 250, "250 2.1.5 Recipient OK") end
    c:check("RCPT TO:<r4@example.test>", 452, "452 4.5.3 Too many recipients")
    c:check("RCPT TO:<r5@example.test>", 452, "452 4.5.3 Too many recipients")
    c:check("DATA", 354)
    assert(c:send("Subject: x\r\n\r\nx\r\n.\r\n"))
    local text = c:expect(250)
    local id = text:match("queued as (%S+)$")
    assert.equals("r1@example.test\nr2@example.test\nr3@example.test\n",
      harness.read_file(srv.dir .. "/" .. id .. ".rcpts"))
    c:close()
  end)

  it("closes with 421 4.7.0 once the session made more than limits.errors errors", function()
    local c = session(srv.port)
    for i = 1, 3 do c:check("BAD" .. i, 500, "500 5.5.1 Command unrecognized") end
    assert(c:send("BAD4\r\n"))
    local last
    for _ = 1, 3 do
      local code, text = c:reply(5)
      if not code then break end
      last = text
      if code == 421 then break end
      assert.equals("500 5.5.1 Command unrecognized", text)
    end
    assert.equals("421 4.7.0 " .. HOST .. " Too many errors, closing connection", last)
    assert.is_true(c:closed(5))
  end)

  it("refuses a data line longer than limits.text_line_length with 554 5.6.0", function()
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: x\r\n\r\n" .. string.rep("y", 100) .. "\r\n" .. string.rep("z", 150) .. "\r\n.\r\n"))
    c:expect(554, "554 5.6.0 Message contains a line longer than the limit")
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: x\r\n\r\n" .. string.rep("y", 100) .. "\r\n.\r\n"))
    c:expect(250)
    c:close()
  end)
end)

describe("connection limits", function()
  it("greets the connection past connections_per_ip with 421 and closes it", function()
    local srv = harness.start { script = script("{ connections_per_ip = 2 }"), args = { "{dir}" } }
    local a = session(srv.port)
    local b = session(srv.port)
    local c = client.open(srv.port)
    local code, text = c:reply()
    assert.equals(421, code, text)
    assert.truthy(text:match("^421 .*Too many connections, try again later$"), text)
    assert.truthy(text:find(HOST, 1, true), text)
    assert.is_true(c:closed(5))
    -- Another client address is not limited by the first one's count.
    local other = client.connect(srv.port, "127.0.0.1", { bind = "127.0.0.2" })
    if other then
      other:expect(220, "220 " .. HOST .. " ESMTP kurir")
      other:close()
    end
    -- A slot frees up when a session ends.
    a:check("QUIT", 221)
    assert.is_true(a:closed(5))
    local ok = harness.wait_for(function()
      local d = client.open(srv.port)
      local dc = d:reply()
      d:close()
      return dc == 220
    end, 5, 0.1)
    assert.is_true(ok)
    b:close()
    harness.finish(srv)
  end)

  it("greets the connection past connections (total) with 421", function()
    local srv = harness.start { script = script("{ connections = 2 }"), args = { "{dir}" } }
    local a = session(srv.port)
    local b = client.connect(srv.port, "127.0.0.1", { bind = "127.0.0.2" }) or client.open(srv.port)
    b:expect(220)
    local c = client.connect(srv.port, "127.0.0.1", { bind = "127.0.0.3" }) or client.open(srv.port)
    local code, text = c:reply()
    assert.equals(421, code, text)
    assert.truthy(text:match("^421 .*Too many connections, try again later$"), text)
    assert.is_true(c:closed(5))
    a:close()
    b:close()
    harness.finish(srv)
  end)
end)

-- One process (no master): the counts are its own (core/proto/key_count.c).
-- A reload changes the limits for the next accept; the sessions opened
-- before it still count, and release what they took when they leave.
describe("connection limits across a reload (one process)", function()
  local function count(srv, pattern)
    local n = 0
    for line in srv:log():gmatch("[^\n]+") do
      if line:find(pattern, 1, true) then n = n + 1 end
    end
    return n
  end

  local function reload(srv, limits)
    local before = count(srv, "event=reload")
    harness.write_file(srv.script, script(limits))
    assert.is_true(srv:signal("HUP"))
    assert.truthy(harness.wait_for(function() return count(srv, "event=reload") > before end, 10),
      srv:describe())
  end

  -- close c and wait for the server's session_end of it
  local function leave(srv, c)
    local before = count(srv, "event=session_end")
    c:check("QUIT", 221)
    assert.is_true(c:closed(5))
    assert.truthy(harness.wait_for(function() return count(srv, "event=session_end") > before end, 10),
      srv:describe())
  end

  local function refused(port)
    local c = client.open(port)
    local code, text = c:reply()
    assert.equals(421, code, text)
    assert.truthy(text:match("^421 .*Too many connections, try again later$"), text)
    assert.is_true(c:closed(5))
  end

  it("counts the sessions of the old script against the new connections_per_ip and frees them", function()
    local srv = harness.start { script = script("{ connections_per_ip = 2 }"), args = { "{dir}" } }
    local a, b = session(srv.port), session(srv.port)
    refused(srv.port)

    reload(srv, "{ connections_per_ip = 3 }")
    local c = session(srv.port)   -- a and b (old script) count: this is the third
    refused(srv.port)
    leave(srv, a)                 -- a session of the old script releases its count
    local d = session(srv.port)
    refused(srv.port)

    reload(srv, "{ connections_per_ip = 1 }")
    refused(srv.port)             -- b, c, d hold 3 against a limit of 1
    leave(srv, b)
    leave(srv, c)
    refused(srv.port)             -- d still counts
    leave(srv, d)
    local e = session(srv.port)   -- every count released: one is allowed again
    refused(srv.port)
    e:close()
    harness.finish(srv)
  end)

  it("counts the old script's sessions against a lowered connections (total)", function()
    local srv = harness.start { script = script("{ connections = 3 }"), args = { "{dir}" } }
    local a, b = session(srv.port), session(srv.port)
    reload(srv, "{ connections = 2 }")
    refused(srv.port)
    leave(srv, a)
    local c = session(srv.port)
    refused(srv.port)
    b:close()
    c:close()
    harness.finish(srv)
  end)
end)

describe("timeouts", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = script("{}", "{ command = 1, data = 1 }"), args = { "{dir}" } }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  it("closes an idle session with 421 4.4.2 after timeouts.command", function()
    local c = session(srv.port)
    local t0 = socket.gettime()
    c:expect(421, "421 4.4.2 " .. HOST .. " Timeout, closing connection", 5)
    local dt = socket.gettime() - t0
    assert.is_true(dt >= 0.8, "timed out after " .. dt .. " s")
    assert.is_true(dt < 4 * harness.scale, "timed out after " .. dt .. " s")
    assert.is_true(c:closed(5))
  end)

  it("does not extend the command timeout for a client trickling bytes", function()
    local c = session(srv.port)
    local t0 = socket.gettime()
    local cmd = "NOOP" .. string.rep(" x", 40)
    local i = 1
    while not c:readable(0.2) and i <= #cmd and socket.gettime() - t0 < 10 * harness.scale do
      c:send(cmd:sub(i, i))
      i = i + 1
    end
    c:expect(421, "421 4.4.2 " .. HOST .. " Timeout, closing connection", 5)
    local dt = socket.gettime() - t0
    assert.is_true(dt < 4 * harness.scale, "timed out after " .. dt .. " s")
    assert.is_true(c:closed(5))
  end)

  it("closes a session idle inside DATA after timeouts.data", function()
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    c:send("Subject: slow\r\n")
    local code, text = c:reply(5)
    assert.equals(421, code, text)
    assert.truthy(text:match("^421 4%.4%.2 "), text)
    assert.is_true(c:closed(5))
  end)
end)

-- timeouts.data and timeouts.command differ here, so that a test can tell
-- which deadline the server applied.
describe("timeouts: data = 1 s while command = 4 s", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = script("{}", "{ command = 4, data = 1 }"), args = { "{dir}" } }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  local function in_data()
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    return c
  end

  it("a client that stops sending inside DATA is closed after timeouts.data, not timeouts.command", function()
    local c = in_data()
    assert(c:send("Subject: stops\r\n"))
    local t0 = socket.gettime()
    local code, text = c:reply(10)
    local dt = socket.gettime() - t0
    assert.equals(421, code, text)
    assert.truthy(text:match("^421 4%.4%.2 "), text)
    assert.is_true(dt >= 0.8, "timed out after " .. dt .. " s")
    assert.is_true(dt < 3, "timed out after " .. dt .. " s: the command timeout (4 s), not the data one (1 s)")
    assert.is_true(c:closed(5))
  end)

  it("a client that keeps sending inside DATA is not cut off at timeouts.data", function()
    local c = in_data()
    local t0 = socket.gettime()
    local line = "Subject: steady\r\n"
    local sent = 0
    -- a 1000-byte line every 0.3 s for 5 s: past both deadlines, were the
    -- data deadline not renewed by what arrives
    while socket.gettime() - t0 < 5 and sent < 30 do
      assert(c:send(line), "the server closed the connection after " .. (socket.gettime() - t0) .. " s")
      assert.is_false(c:readable(0.3), "answered mid-message: " .. c.buf)
      line = string.rep("x", 998) .. "\r\n"
      sent = sent + 1
    end
    assert(c:send(".\r\n"))
    c:expect(250)
    c:close()
  end)
end)

describe("limits: out of file descriptors", function()
  it("pauses accepting instead of spinning, and serves again once descriptors are free", function()
    local srv = harness.start {
      script = "local kurir = require 'kurir'\n" ..
        "kurir.configure { limits = { connections = 1000, connections_per_ip = 1000 } }\n" ..
        "function kurir.on.data() return 250 end\n",
      max_files = 40,
    }
    local held = {}
    for _ = 1, 60 do
      local s = socket.tcp()
      s:settimeout(2)
      if s:connect("127.0.0.1", srv.port) then held[#held + 1] = s else s:close() end
    end
    assert.truthy(srv:wait_log("event=accept_paused", 10), "accepting was paused:\n" .. srv:log())
    harness.sleep(1)   -- the behaviour under test is a rate: pause lines per second
    local _, paused = srv:log():gsub("event=accept_paused", "")
    local _, errors = srv:log():gsub("event=accept ", "")
    -- a paused listener retries four times a second; a spinning one logs thousands of lines
    assert.truthy(paused < 40 and errors == 0, paused .. " pause lines, " .. errors .. " accept errors")
    for _, s in ipairs(held) do s:close() end
    local c = harness.wait_for(function()
      local x = client.connect(srv.port)
      if not x then return nil end
      local code = x:reply(3)
      if code == 220 then return x end
      x:close()
    end, 10)
    assert(c, "no greeting after the descriptors were freed")
    c:check("EHLO client.test", 250)
    c:close()
    srv:stop()
    harness.assert_clean(srv)
    assert.equals(0, srv.stopped)
  end)
end)
