-- End to end: the developer mock server (scripts/mock.lua, and `kurir`
-- with no script). Each message lands once in the Maildir's new/, with
-- Return-Path and Delivered-To first and the sent bytes after them, and one
-- log line (event=stored) carries the queue id of the 250.

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"

local function send_one(port, from, to, wire)
  local c = client.open(port)
  local greeting = c:expect(220)
  assert.truthy(greeting:match("^220 %S+ ESMTP kurir$"), greeting)
  local code, text, _, ext = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  c:check("MAIL FROM:<" .. from .. ">", 250, "250 2.1.0 Sender OK")
  c:check("RCPT TO:<" .. to .. ">", 250, "250 2.1.5 Recipient OK")
  c:check("DATA", 354)
  assert(c:send(wire .. ".\r\n"))
  local reply = c:expect(250)
  c:check("QUIT", 221)
  c:close()
  return reply, ext
end

local function stored_lines(log)
  local lines = {}
  for line in log:gmatch("[^\n]+") do
    if line:find("event=stored", 1, true) then lines[#lines + 1] = line end
  end
  return lines
end

-- The queue id of a reply: a word of it that also appears as a value in
-- the log line.
local function id_in(reply, line)
  for word in reply:gmatch("[%w%.%-_]+") do
    if #word >= 4 and not word:match("^%d%.%d%.%d$") and
        (line:find("=" .. word .. " ", 1, true) or line:sub(-#word - 1) == "=" .. word or
         line:find("=\"" .. word .. "\"", 1, true)) then
      return word
    end
  end
end

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("mock server (scripts/mock.lua)", function()
  local srv, maildir

  lazy_setup(function()
    srv = harness.start { script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" } }
    maildir = srv.dir .. "/mail"
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  it("stores a message once in new/ with Return-Path and Delivered-To first", function()
    local before = #harness.maildir_new(maildir)
    local sent = "From: b@example.test\r\nTo: a@example.test\r\nSubject: mock one\r\n\r\nhello\r\n.dot line\r\n"
    local wire = sent:gsub("\r\n%.", "\r\n..")
    local reply, ext = send_one(srv.port, "b@example.test", "a@example.test", wire)
    assert.equals("33554432", ext.SIZE)
    local files = harness.maildir_new(maildir)
    assert.equals(before + 1, #files)
    assert.same({}, harness.list_dir(maildir .. "/tmp"))
    local found
    for _, f in ipairs(files) do
      local data = harness.read_file(f)
      if data:find("Subject: mock one", 1, true) then
        assert.is_nil(found, "message stored twice")
        found = data
      end
    end
    assert.truthy(found)
    local prefix, received, rest = harness.split_delivery(found)
    assert.equals("Return-Path: <b@example.test>\r\nDelivered-To: a@example.test\r\n", prefix)
    assert.equals(sent, rest)
    assert.truthy(received == "" or received:find(reply:match("(%S+)$"), 1, true), received)

    local lines = harness.wait_for(function()
      local l = {}
      for _, line in ipairs(stored_lines(srv:log())) do
        if line:find("mock one", 1, true) then l[#l + 1] = line end
      end
      return #l > 0 and l
    end, 5)
    assert.truthy(lines, srv:describe())
    assert.equals(1, #lines)
    assert.truthy(id_in(reply, lines[1]), "queue id of '" .. reply .. "' not in log line: " .. lines[1])
    local f = harness.logfmt(lines[1])
    assert.equals("stored", f.event)
    assert.truthy(reply:find(f.id, 1, true), f.id .. " / " .. reply)
    assert.equals("b@example.test", f.from)
    assert.equals("a@example.test", f.to)
    assert.equals("mock one", f.subject)
    assert.equals(tostring(#sent), f.size)
  end)

  it("stores the null sender as Return-Path: <>", function()
    local sent = "Subject: bounce\r\n\r\nbounced\r\n"
    send_one(srv.port, "", "a@example.test", sent)
    local found
    for _, f in ipairs(harness.maildir_new(maildir)) do
      local data = harness.read_file(f)
      if data:find("Subject: bounce", 1, true) then found = data end
    end
    local prefix, _, rest = harness.split_delivery(found)
    assert.equals("Return-Path: <>\r\nDelivered-To: a@example.test\r\n", prefix)
    assert.equals(sent, rest)
  end)

  it("logs one stored line per message", function()
    local before = #stored_lines(srv:log())
    local ended = harness.count_log(srv, "event=session_end")
    for i = 1, 3 do
      send_one(srv.port, "b@example.test", "a@example.test", "Subject: n" .. i .. "\r\n\r\nx\r\n")
    end
    -- the three sessions are over: none of them can log another line
    assert.truthy(harness.wait_count(srv, "event=session_end", ended + 3, 5), srv:describe())
    assert.equals(before + 3, #stored_lines(srv:log()))
  end)
end)

describe("mock --maildir", function()
  it("creates the Maildir (cur/ new/ tmp/, parents too) at start, before any message", function()
    local srv = harness.start { script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/deep/er/mail" } }
    -- listening is logged after the script ran: the Maildir is there now
    assert.same({ "cur", "new", "tmp" }, harness.list_dir(srv.dir .. "/deep/er/mail"))
    assert.same({}, harness.list_dir(srv.dir .. "/deep/er/mail/new"))
    harness.finish(srv)
  end)

  it("a --maildir that cannot be created stops the start, naming it", function()
    -- {script} is a file (harness.run writes it), so no directory fits under it
    local rc, out = harness.run { script = "-- a file, not a directory\n",
      args = { harness.root .. "/scripts/mock.lua", "--maildir", "{script}/mail" } }
    assert.equals(1, rc, out)
    assert.truthy(out:find("script.lua/mail: Not a directory", 1, true), out)
  end)
end)

describe("kurir with no script", function()
  it("runs the built-in mock on the -l listener, storing into ./mail", function()
    local srv = harness.start {}
    local sent = "Subject: builtin mock\r\n\r\nhi\r\n"
    local reply = send_one(srv.port, "b@example.test", "a@example.test", sent)
    local files = harness.maildir_new(srv.dir .. "/mail")
    assert.equals(1, #files)
    local prefix, _, rest = harness.split_delivery(harness.read_file(files[1]))
    assert.equals("Return-Path: <b@example.test>\r\nDelivered-To: a@example.test\r\n", prefix)
    assert.equals(sent, rest)
    assert.same({}, harness.list_dir(srv.dir .. "/mail/tmp"))
    local lines = stored_lines(srv:log())
    assert.equals(1, #lines)
    assert.truthy(reply:find(harness.logfmt(lines[1]).id, 1, true), lines[1])
    harness.finish(srv)
  end)

  it("runs the mock on 127.0.0.1:1025 storing into ./mail, the web UI on 127.0.0.1:8025", function()
    for _, port in ipairs { 1025, 8025 } do
      local probe = socket.tcp()
      local free = probe:bind("127.0.0.1", port)
      probe:close()
      if not free or harness.listening(port) then
        return pending("port " .. port .. " is in use")
      end
    end
    local srv = harness.start { listen = false }
    assert.equals(1025, srv.port)
    assert.truthy(srv:wait_log("event=listening address=http://127.0.0.1:8025"), srv:describe())
    local sent = "Subject: default mock\r\n\r\nhi\r\n"
    send_one(1025, "b@example.test", "a@example.test", sent)
    local files = harness.maildir_new(srv.dir .. "/mail")
    assert.equals(1, #files)
    local prefix, _, rest = harness.split_delivery(harness.read_file(files[1]))
    assert.equals("Return-Path: <b@example.test>\r\nDelivered-To: a@example.test\r\n", prefix)
    assert.equals(sent, rest)
    assert.same({}, harness.list_dir(srv.dir .. "/mail/tmp"))
    assert.equals(1, #stored_lines(srv:log()))
    harness.finish(srv)
  end)
end)
