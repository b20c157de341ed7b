-- End to end: PIPELINING (RFC 2920). Whole transactions in one write get
-- every reply, in order; a large burst is answered completely even when the
-- client reads slowly (backpressure, no lost or reordered replies).

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"

local function session(srv)
  local c = client.open(srv.port)
  c:expect(220)
  local code, text, _, ext = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  assert.truthy(ext.PIPELINING)
  return c
end

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("pipelining", function()
  local srv

  lazy_setup(function()
    -- the 20000-NOOP burst is about backpressure, not limits.junk_commands
    srv = harness.start { script = harness.STORE_SCRIPT ..
      "\nkurir.configure { limits = { junk_commands = 0 } }\n", args = { "{dir}" } }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  local function stored(text)
    local id = text:match("^250 2%.0%.0 Ok: queued as (%S+)$")
    assert.truthy(id, text)
    return harness.read_file(srv.dir .. "/" .. id .. ".eml"), id
  end

  it("answers two complete transactions sent in one write, in order", function()
    local c = session(srv)
    local m1 = "Subject: one\r\n\r\nfirst\r\n"
    local m2 = "Subject: two\r\n\r\nsecond\r\n"
    assert(c:send(
      "MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n" ..
      m1 .. ".\r\n" ..
      "MAIL FROM:<d@example.test>\r\nRCPT TO:<e@example.test>\r\nDATA\r\n" ..
      m2 .. ".\r\n" ..
      "QUIT\r\n"))
    c:expect(250, "250 2.1.0 Sender OK")
    c:expect(250, "250 2.1.5 Recipient OK")
    c:expect(250, "250 2.1.5 Recipient OK")
    c:expect(354, "354 End data with <CR><LF>.<CR><LF>")
    local got1, id1 = stored(c:expect(250))
    c:expect(250, "250 2.1.0 Sender OK")
    c:expect(250, "250 2.1.5 Recipient OK")
    c:expect(354, "354 End data with <CR><LF>.<CR><LF>")
    local got2, id2 = stored(c:expect(250))
    c:expect(221, "221 2.0.0 Bye")
    assert.is_true(c:closed(5))
    assert.equals(m1, got1)
    assert.equals(m2, got2)
    assert.are_not.equal(id1, id2)
    assert.equals("b@example.test\nc@example.test\n", harness.read_file(srv.dir .. "/" .. id1 .. ".rcpts"))
    assert.equals("e@example.test\n", harness.read_file(srv.dir .. "/" .. id2 .. ".rcpts"))
  end)

  it("keeps order with a rejected recipient in the group", function()
    local c = session(srv)
    assert(c:send("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<reject@example.test>\r\n" ..
      "RCPT TO:<c@example.test>\r\nDATA\r\nSubject: r\r\n\r\nx\r\n.\r\nNOOP\r\n"))
    c:expect(250, "250 2.1.0 Sender OK")
    c:expect(250, "250 2.1.5 Recipient OK")
    c:expect(550, "550 5.1.1 Recipient rejected")
    c:expect(250, "250 2.1.5 Recipient OK")
    c:expect(354)
    local _, id = stored(c:expect(250))
    c:expect(250, "250 2.0.0 OK")
    assert.equals("b@example.test\nc@example.test\n", harness.read_file(srv.dir .. "/" .. id .. ".rcpts"))
    c:close()
  end)

  it("answers every command of a group once, in order (one write: see the strace spec)", function()
    local c = session(srv)
    assert(c:send("NOOP\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRSET\r\nNOOP\r\n"))
    -- All five replies, in order, none missing or extra: the reply to a
    -- command sent afterwards comes right after them.
    c:expect(250, "250 2.0.0 OK")
    c:expect(250, "250 2.1.0 Sender OK")
    c:expect(250, "250 2.1.5 Recipient OK")
    c:expect(250, "250 2.0.0 OK")
    c:expect(250, "250 2.0.0 OK")
    c:check("XNEXT", 500)
    c:close()
  end)

  it("writes the replies of a pipelined group with one write (seen with strace)", function()
    -- strace is required (make deps installs it; tools/check-test-tools.sh
    -- checks it before the e2e run): this spec is never skipped.
    assert(os.execute("command -v strace >/dev/null 2>&1"), "strace is missing: install strace (make deps)")
    local c = session(srv)
    local dir = harness.tmpdir()
    local q = harness.quote
    os.execute("sh -c " .. q("strace -f -s 4096 -e trace=write,writev,sendto,sendmsg -o " .. q(dir .. "/trace") ..
      " -p " .. srv.pid .. " 2>" .. q(dir .. "/err") .. " & echo $! > " .. q(dir .. "/pid")) .. " >/dev/null 2>&1")
    local spid = harness.wait_for(function()
      local t = harness.read_file(dir .. "/pid")
      return t and t:match("%d+")
    end, 5)
    local attached = harness.wait_for(function()
      local e = harness.read_file(dir .. "/err") or ""
      return e:find("attached", 1, true) or e:find("Operation not permitted", 1, true)
    end, 5)
    local err = harness.read_file(dir .. "/err") or ""
    if not attached or not err:find("attached", 1, true) then
      if spid then os.execute("kill " .. spid .. " 2>/dev/null") end
      harness.rmtree(dir)
      c:close()
      error("strace cannot attach to kurir (pid " .. srv.pid .. "): " .. err)
    end
    assert(c:send("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nNOOP\r\n"))
    c:expect(250, "250 2.1.0 Sender OK")
    c:expect(250, "250 2.1.5 Recipient OK")
    c:expect(250, "250 2.1.5 Recipient OK")
    c:expect(250, "250 2.0.0 OK")
    c:check("RSET", 250)
    os.execute("kill -s INT " .. spid .. " 2>/dev/null")
    harness.wait_for(function() return not os.execute("kill -0 " .. spid .. " 2>/dev/null") end, 5)
    local trace = harness.read_file(dir .. "/trace") or ""
    harness.rmtree(dir)
    c:close()
    local writes = {}
    for line in trace:gmatch("[^\n]+") do
      if line:find("Sender OK", 1, true) or line:find("Recipient OK", 1, true) then writes[#writes + 1] = line end
    end
    assert.equals(1, #writes, trace)
    local w = writes[1]
    local _, recipients = w:gsub("250 2%.1%.5 Recipient OK", "")
    assert.equals(2, recipients, w)
    assert.truthy(w:find("250 2.1.0 Sender OK\\r\\n250 2.1.5 Recipient OK\\r\\n250 2.1.5 Recipient OK\\r\\n" ..
      "250 2.0.0 OK\\r\\n", 1, true), w)
  end)

  it("answers a burst of 20000 commands completely while the client reads slowly", function()
    local c = session(srv)
    local n = 20000
    local burst = string.rep("NOOP\r\n", n)
    local sock = c.sock
    local i = 1
    local deadline = socket.gettime() + 60 * harness.scale
    -- Write without reading until the kernel buffers fill, then read a bit.
    while i <= #burst and socket.gettime() < deadline do
      sock:settimeout(0)
      local last, err, partial = sock:send(burst, i)
      if last then
        i = last + 1
      else
        assert(err == "timeout", err)
        i = partial + 1
        c:fill(socket.gettime() + 0.01)
      end
    end
    assert.equals(#burst + 1, i)
    local count = 0
    while count < n do
      local code, text = c:reply(10)
      assert.equals(250, code, text)
      assert.equals("250 2.0.0 OK", text)
      count = count + 1
    end
    c:check("QUIT", 221)
    c:close()
  end)
end)
