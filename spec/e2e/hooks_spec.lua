-- End to end: every hook of SPEC 2 fires with its arguments, every return
-- convention of SPEC 2.1, hook errors and the CPU budget, the per-hook
-- error policy, kurir.sleep, per-session values, the 451 4.3.5 of a
-- script without any delivery, and the script's log lines (client bytes
-- escaped, one record per line).
--
-- The hooks script notes each call in DIR/hooks-<client port>.log (one
-- tab-separated line per call), so each test reads its own session's notes.

local harness = require "harness"
local client = require "smtp_client"

local HOST = "mx.e2e.test"

local HOOKS = [=[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure { hostname = "mx.e2e.test", cpu_budget = 0.5 }

local function note(s, ...)
  local parts = { ... }
  for i = 1, select("#", ...) do parts[i] = tostring(parts[i]) end
  local f = assert(io.open(dir .. "/hooks-" .. tostring(s.remote_port) .. ".log", "ab"))
  f:write(table.concat(parts, "\t"), "\n")
  f:close()
end

function kurir.on.connect(s)
  note(s, "connect", s.remote_ip, s.remote_port, s.local_ip, s.local_port, type(s.id), s.id)
  if s.remote_ip == "127.0.0.5" then return 554, "5.7.1 go away" end
  if s.remote_ip == "127.0.0.6" then return false end
  if s.remote_ip == "127.0.0.7" then return 421, "4.3.2 not now" end
end

function kurir.on.helo(s, name)
  note(s, "helo", name, s.esmtp)
  s:log("e2e-note", { name = name })
  if name == "reject.test" then return 550, "5.7.1 go away" end
end

function kurir.on.mail(s, from)
  note(s, "mail", from.address, from.user, from.domain, from.params.SIZE)
  s.custom = "from:" .. from.address
  if from.user == "refuse" then return false end
end

local rcpt_replies = {
  ["false"] = function() return false end,
  ["true"] = function() return true end,
  no = function() return 550, "no" end,
  custom = function() return 550, "5.7.1 custom" end,
  multi = function() return 550, "a\nb" end,
  multi71 = function() return 550, "5.7.1 a\nb" end,
  fine = function() return 250, "fine" end,
  tempfail = function() return 451 end,
  bye = function() return 421, "4.7.0 closing now" end,
  err = function() error("boom-rcpt") end,
  loop = function() while true do end end,
  sleep = function() kurir.sleep(1) return 250, "2.1.5 slept" end,
  value = function(s) return 250, "2.1.5 custom=" .. tostring(s.custom) end,
}

function kurir.on.rcpt(s, rcpt)
  note(s, "rcpt", rcpt.address, rcpt.user, rcpt.domain, #s.rcpts, s.from and s.from.address)
  local f = rcpt_replies[rcpt.user]
  if f then return f(s) end
end

function kurir.on.data(s, msg)
  local rawlen = #msg:raw()
  local ok = pcall(msg.add_header, msg, "X-Added", "yes")
  note(s, "data", msg.id, msg.size, msg.from.address, #msg.rcpts, msg.rcpts[1].address,
    msg:header("Subject"), table.concat(msg:headers("X-Multi"), "|"), rawlen, ok,
    msg:header("X-None"))
  if msg:header("Subject") == "reject me" then return 554, "5.7.1 spam" end
  if msg:header("Subject") == "default" then return end
  return 250, "2.0.0 queued as " .. msg.id
end

function kurir.on.vrfy(s, a)
  note(s, "vrfy", a)
  return 250, "2.1.5 vrfy:" .. a
end

function kurir.on.expn(s, a)
  note(s, "expn", a)
  return 250, "2.1.5 expn:" .. a
end

function kurir.on.command(s, verb, a)
  note(s, "command", verb, a)
  if verb:upper() == "XFOO" then return 250, "2.0.0 custom " .. tostring(a) end
end

function kurir.on.reset(s)
  note(s, "reset")
end

function kurir.on.disconnect(s)
  note(s, "disconnect")
  return 554
end
]=]

local function notes(srv, c)
  local text = harness.read_file(srv.dir .. "/hooks-" .. tostring(c.local_port) .. ".log") or ""
  local out = {}
  for line in text:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    out[#out + 1] = f
  end
  return out
end

local function find(list, name)
  for _, n in ipairs(list) do if n[1] == name then return n end end
  return nil
end

local function names(list)
  local r = {}
  for _, n in ipairs(list) do r[#r + 1] = n[1] end
  return table.concat(r, " ")
end

local function open(srv, opts)
  local c = client.open(srv.port, nil, opts)
  local _, port = c.sock:getsockname()
  c.local_port = tonumber(port)
  return c
end

local function session(srv)
  local c = open(srv)
  c:expect(220, "220 " .. HOST .. " ESMTP kurir")
  local code, text = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  return c
end

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("hooks", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = HOOKS, args = { "{dir}" } }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  it("fire in order with their arguments through a whole session", function()
    local c = session(srv)
    c:check("MAIL FROM:<a@example.test> SIZE=123", 250, "250 2.1.0 Sender OK")
    c:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 Recipient OK")
    c:check("RCPT TO:<true@example.test>", 250, "250 2.1.5 Recipient OK")
    c:check("DATA", 354)
    local body = "Subject: hello\r\nX-Multi: one\r\nX-Multi: two\r\n\r\nbody\r\n"
    assert(c:send(body .. ".\r\n"))
    local text = c:expect(250)
    local id = text:match("^250 2%.0%.0 queued as (%S+)$")
    assert.truthy(id, text)
    c:check("VRFY someone", 250, "250 2.1.5 vrfy:someone")
    c:check("EXPN list", 250, "250 2.1.5 expn:list")
    c:check("XFOO bar baz", 250, "250 2.0.0 custom bar baz")
    c:check("RSET", 250, "250 2.0.0 OK")
    c:check("QUIT", 221, "221 2.0.0 Bye")
    assert.is_true(c:closed(5))
    local n = harness.wait_for(function()
      local l = notes(srv, c)
      return find(l, "disconnect") and l
    end, 5)
    assert.truthy(n, "no disconnect hook: " .. names(notes(srv, c)))

    local connect = find(n, "connect")
    local sid = connect[7]
    assert.truthy(sid and #sid > 0)
    assert.same({ "connect", "127.0.0.1", tostring(c.local_port), "127.0.0.1", tostring(srv.port), "string", sid },
      connect)
    -- s:log writes a line tagged with the session id.
    local logged = harness.log_lines(srv, { session = sid, name = "client.e2e.test" })
    assert.equals(1, #logged, srv:describe())
    assert.truthy(logged[1].line:find("e2e-note", 1, true), logged[1].line)
    assert.same({ "helo", "client.e2e.test", "true" }, find(n, "helo"))
    assert.same({ "mail", "a@example.test", "a", "example.test", "123" }, find(n, "mail"))
    assert.same({ "rcpt", "b@example.test", "b", "example.test", "0", "a@example.test" }, find(n, "rcpt"))
    local data = find(n, "data")
    assert.same({ "data", id, tostring(#body), "a@example.test", "2", "b@example.test", "hello", "one|two",
      tostring(#body), "true", "nil" }, data)
    assert.same({ "vrfy", "someone" }, find(n, "vrfy"))
    assert.same({ "expn", "list" }, find(n, "expn"))
    assert.same({ "command", "XFOO", "bar baz" }, find(n, "command"))
    -- Order: connect first, disconnect last and once; reset after the
    -- transaction ended and on RSET.
    local seq = names(n)
    assert.truthy(seq:match("^connect helo mail rcpt rcpt data reset .*vrfy expn command .*reset disconnect$"), seq)
    local _, count = seq:gsub("disconnect", "")
    assert.equals(1, count)
  end)

  it("data returning nothing gets the engine's 250 with the queue id, and a summary log line", function()
    local c = session(srv)
    c:check('MAIL FROM:<"a event=forged"@example.test>', 250, "250 2.1.0 Sender OK")
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("RCPT TO:<c@example.test>", 250)
    c:check("DATA", 354)
    local body = "Subject: default\r\n\r\nx\r\n"
    assert(c:send(body .. ".\r\n"))
    local text = c:expect(250)
    local data = find(notes(srv, c), "data")
    assert.truthy(data)
    local id = data[2]
    assert.truthy(text:match("^250 2%.0%.0 "), text)
    assert.truthy(text:find(id, 1, true), "queue id " .. id .. " not in " .. text)
    local lines = harness.wait_for(function()
      local l = harness.log_lines(srv, { id = id })
      return #l > 0 and l
    end, 5)
    assert.truthy(lines, srv:describe())
    local f = lines[#lines].fields
    -- Client bytes are escaped: the forged key stays inside the value.
    assert.equals(1, lines[#lines].count.event, lines[#lines].line)
    assert.equals('"a event=forged"@example.test', f.from)
    assert.truthy(f.rcpts and f.rcpts:find("b@example.test", 1, true) and f.rcpts:find("c@example.test", 1, true),
      lines[#lines].line)
    assert.equals(tostring(#body), f.size)
    assert.equals("250", f.code)
    c:close()
  end)

  it("helo sees s.esmtp false for HELO and may reject", function()
    local c = open(srv)
    c:expect(220)
    c:check("HELO plain.test", 250)
    local code, text = c:cmd("EHLO reject.test")
    assert.equals(550, code, text)
    assert.truthy(text:match("go away$"), text)
    c:check("EHLO ok.test", 250)
    c:check("QUIT", 221)
    c:close()
    local n = notes(srv, c)
    assert.same({ "helo", "plain.test", "false" }, n[2])
    assert.same({ "helo", "reject.test", "true" }, n[3])
  end)

  it("mail returning false refuses the sender and starts no transaction", function()
    local c = session(srv)
    c:check("MAIL FROM:<refuse@example.test>", 550, "550 5.1.0 Sender rejected")
    c:check("RCPT TO:<b@example.test>", 503, "503 5.5.1 Need MAIL command")
    c:check("MAIL FROM:<a@example.test>", 250, "250 2.1.0 Sender OK")
    c:close()
  end)

  describe("rcpt return conventions", function()
    local c
    before_each(function()
      c = session(srv)
      c:check("MAIL FROM:<a@example.test>", 250)
    end)
    after_each(function() c:close() end)

    it("false -> 550 5.1.1 and the recipient is not added", function()
      c:check("RCPT TO:<false@example.test>", 550, "550 5.1.1 Recipient rejected")
      c:check("DATA", 503, "503 5.5.1 Need RCPT command")
    end)

    it("true -> the normal success reply", function()
      c:check("RCPT TO:<true@example.test>", 250, "250 2.1.5 Recipient OK")
    end)

    it("code and text without enhanced code -> the stage default added", function()
      c:check("RCPT TO:<no@example.test>", 550, "550 5.1.1 no")
      c:check("RCPT TO:<fine@example.test>", 250, "250 2.1.5 fine")
    end)

    it("an enhanced code in the text is kept", function()
      c:check("RCPT TO:<custom@example.test>", 550, "550 5.7.1 custom")
    end)

    it("a bare code gets a default text and enhanced code", function()
      local code, text = c:cmd("RCPT TO:<tempfail@example.test>")
      assert.equals(451, code)
      assert.truthy(text:match("^451 4%.%d%d?%d?%.%d%d?%d? %S"), text)
    end)

    it("a text with a newline becomes a multi-line reply", function()
      local _, lines = c:check("RCPT TO:<multi@example.test>", 550)
      assert.same({ "550-5.1.1 a", "550 5.1.1 b" }, lines)
      _, lines = c:check("RCPT TO:<multi71@example.test>", 550)
      assert.same({ "550-5.7.1 a", "550 5.7.1 b" }, lines)
      c:check("NOOP", 250, "250 2.0.0 OK")
    end)

    it("421 sends the reply and closes the connection", function()
      c:check("RCPT TO:<bye@example.test>", 421, "421 4.7.0 closing now")
      assert.is_true(c:closed(5))
    end)

    it("s.custom set in mail is seen in rcpt", function()
      c:check("RCPT TO:<value@example.test>", 250, "250 2.1.5 custom=from:a@example.test")
    end)
  end)

  it("data may refuse the message with its own reply", function()
    local c = session(srv)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: reject me\r\n\r\nx\r\n.\r\n"))
    c:expect(554, "554 5.7.1 spam")
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
  end)

  it("a hook error gives 451 4.3.0, logs the error with a traceback, and the session goes on", function()
    local c = session(srv)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<err@example.test>", 451, "451 4.3.0 Temporary server error, try again later")
    c:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 Recipient OK")
    c:check("NOOP", 250, "250 2.0.0 OK")
    assert.truthy(srv:wait_log("boom%-rcpt", 5), srv:describe())
    assert.truthy(srv:wait_log("stack traceback", 5), srv:describe())
    c:close()
  end)

  it("a hook over its CPU budget gets 451 and other sessions are served", function()
    local a = session(srv)
    a:check("MAIL FROM:<a@example.test>", 250)
    assert(a:send("RCPT TO:<loop@example.test>\r\n"))
    -- the rcpt hook notes its call before it starts looping
    assert.truthy(harness.wait_for(function()
      for _, n in ipairs(notes(srv, a)) do
        if n[1] == "rcpt" and n[3] == "loop" then return true end
      end
    end, 5), srv:describe())
    local b = session(srv)
    b:check("NOOP", 250, "250 2.0.0 OK")
    a:expect(451, "451 4.3.0 Temporary server error, try again later", 10)
    a:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 Recipient OK")
    b:check("MAIL FROM:<a@example.test>", 250)
    b:check("RCPT TO:<b@example.test>", 250)
    a:close()
    b:close()
  end)

  it("kurir.sleep suspends only its own session", function()
    local a = session(srv)
    a:check("MAIL FROM:<a@example.test>", 250)
    assert(a:send("RCPT TO:<sleep@example.test>\r\nNOOP\r\n"))
    assert.truthy(harness.wait_for(function()
      for _, n in ipairs(notes(srv, a)) do
        if n[1] == "rcpt" and n[3] == "sleep" then return true end
      end
    end, 5), srv:describe())
    local b = session(srv)
    b:check("MAIL FROM:<x@example.test>", 250, "250 2.1.0 Sender OK")
    b:check("RCPT TO:<y@example.test>", 250, "250 2.1.5 Recipient OK")
    b:check("NOOP", 250, "250 2.0.0 OK")
    -- b was answered completely while a still sleeps.
    assert.is_false(a:readable(0))
    a:expect(250, "250 2.1.5 slept", 10)
    a:expect(250, "250 2.0.0 OK")
    a:close()
    b:close()
  end)

  describe("connect", function()
    it("554 becomes the greeting, then every command but QUIT gets 503", function()
      local c = client.connect(srv.port, "127.0.0.1", { bind = "127.0.0.5" })
      if not c then return pending("cannot bind 127.0.0.5") end
      local code, text = c:reply()
      assert.equals(554, code, text)
      assert.truthy(text:match("go away$"), text)
      for _, cmd in ipairs { "EHLO client.e2e.test", "HELO client.e2e.test", "MAIL FROM:<a@example.test>",
        "RCPT TO:<b@example.test>", "DATA", "NOOP", "RSET", "XFOO" } do
        local rc, rt = c:cmd(cmd)
        assert.equals(503, rc, cmd .. " -> " .. tostring(rt))
        assert.truthy(rt:match("Session refused; only QUIT is allowed$"), rt)
      end
      c:check("QUIT", 221)
      assert.is_true(c:closed(5))
    end)

    it("false gives the standard 554 greeting", function()
      local c = client.connect(srv.port, "127.0.0.1", { bind = "127.0.0.6" })
      if not c then return pending("cannot bind 127.0.0.6") end
      local code, text = c:reply()
      assert.equals(554, code, text)
      assert.truthy(text:match("Connection refused$"), text)
      c:check("QUIT", 221)
      c:close()
    end)

    it("421 is sent and the connection closed", function()
      local c = client.connect(srv.port, "127.0.0.1", { bind = "127.0.0.7" })
      if not c then return pending("cannot bind 127.0.0.7") end
      local code, text = c:reply()
      assert.equals(421, code, text)
      assert.truthy(text:match("not now$"), text)
      assert.is_true(c:closed(5))
    end)
  end)

  it("disconnect runs once when the client just goes away", function()
    local c = session(srv)
    c:check("MAIL FROM:<a@example.test>", 250)
    local id = harness.session_id(srv, c)
    c:close()
    -- once the session is freed, no hook of it can run any more
    assert.truthy(harness.wait_session_end(srv, id), srv:describe())
    local _, count = names(notes(srv, c)):gsub("disconnect", "")
    assert.equals(1, count)
  end)
end)

local POLICY = [=[
local kurir = require "kurir"
kurir.configure { hostname = "mx.e2e.test", on_error = { rcpt = arg[1] } }
function kurir.on.rcpt(s, rcpt)
  if rcpt.user == "err" then error("policy-boom") end
end
]=]

describe("on_error policy and default delivery", function()
  local reject, continue

  lazy_setup(function()
    reject = harness.start { script = POLICY, args = { "reject" } }
    continue = harness.start { script = POLICY, args = { "continue" } }
  end)

  lazy_teardown(function()
    harness.finish(reject)
    harness.finish(continue)
  end)

  it("reject turns a hook error into the stage's rejection", function()
    local c = session(reject)
    c:check("MAIL FROM:<a@example.test>", 250)
    local code, text = c:cmd("RCPT TO:<err@example.test>")
    assert.equals(550, code, text)
    assert.truthy(text:match("^550 5%.%d%d?%d?%.%d%d?%d? "), text)
    c:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 Recipient OK")
    assert.truthy(reject:wait_log("policy%-boom", 5), reject:describe())
    c:close()
  end)

  it("continue treats a hook error as success", function()
    local c = session(continue)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<err@example.test>", 250, "250 2.1.5 Recipient OK")
    assert.truthy(continue:wait_log("policy%-boom", 5), continue:describe())
    c:close()
  end)

  it("a script without data hook and without routes refuses at end of DATA with 451 4.3.5", function()
    local c = session(reject)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: x\r\n\r\nx\r\n.\r\n"))
    local code, text = c:reply()
    assert.equals(451, code, text)
    assert.truthy(text:match("^451 4%.3%.5 "), text)
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
  end)
end)

describe("scripts: logging and per-session values", function()
  local function ehlo_session(port)
    local c = client.open(port)
    c:expect(220)
    local code, text = c:ehlo("client.e2e.test")
    assert.equals(250, code, text)
    return c
  end

  it("an error inside kurir.log does not glue two log lines together", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.on.helo = function(s)
        local bad = setmetatable({}, { __tostring = function() error("boom") end })
        pcall(kurir.log, "first", { b = bad })
        s:log("second", { ok = "1" })
      end
    ]] }
    local c = ehlo_session(srv.port)
    c:cmd("QUIT")
    assert(srv:wait_log("event=second", 5), srv:describe())
    for line in srv:log():gmatch("[^\n]+") do
      local _, n = line:gsub("time=", "")
      assert.equals(1, n, "two records on one log line: " .. line)
    end
    harness.finish(srv)
  end)

  it("client bytes in a logged value are escaped, one record per line (engine and script lines)", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { auth = { plaintext = true } }
      kurir.on.auth = function(s, cred) s:log("auth_seen", { user = cred.user }) return false end
      kurir.on.data = function(s, msg)
        s:log("subject_seen", { subject = msg:header("Subject") })
        return 250
      end
    ]] }
    local c = ehlo_session(srv.port)
    -- AUTH PLAIN, authcid 'u<LF>level=error event=forged x="\<CR><01><1b>', password p
    c:check("AUTH PLAIN AHUKbGV2ZWw9ZXJyb3IgZXZlbnQ9Zm9yZ2VkIHg9IlwNARsAcA==", 535)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: hi\1\27[31m\127 \195\188\r\n\r\nbody\r\n.\r\n"))
    c:expect(250)
    c:check("QUIT", 221)
    local user = [[user="u\nlevel=error event=forged x=\"\\\r\x01\x1b"]]
    assert.truthy(srv:wait_log("event=subject_seen", 5), srv:describe())
    local log = srv:log()
    for _, want in ipairs {
      "event=auth mechanism=PLAIN " .. user .. " result=failed",   -- the engine's own line
      "event=auth_seen " .. user,                                 -- the script's
      [[event=subject_seen subject="hi\x01\x1b[31m\x7f ]] .. "\195\188\"",   -- UTF-8 stays as is
    } do
      assert.truthy(log:find(want, 1, true), "not in the log: " .. want .. "\n" .. log)
    end
    for line in log:gmatch("[^\n]+") do
      assert.truthy(line:match("^time=%S+ level=%a+ "), "a line that is not a record: " .. line)
      assert.falsy(line:find("[%z\1-\31\127]"), "a control byte in the log: " .. line)
    end
    assert.equals(0, #harness.log_lines(srv, { event = "forged" }))
    harness.finish(srv)
  end)

  it("numeric keys of the session's own table can be read back", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.on.helo = function(s)
        s[1] = "one"
        s:log("keys", { one = tostring(s[1]) })
      end
    ]] }
    local c = ehlo_session(srv.port)
    c:cmd("QUIT")
    local line = srv:wait_log("[^\n]*event=keys[^\n]*", 5)
    assert.truthy(line and line:find("one=one", 1, true), srv:describe())
    harness.finish(srv)
  end)

  it("a rejected HELO leaves an ESMTP session ESMTP", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.on.helo = function(s, name) if name == "bad.example" then return 550, "no" end end
    ]] }
    local c = ehlo_session(srv.port)
    c:check("HELO bad.example", 550)
    local code, text = c:cmd("MAIL FROM:<a@example.test>")
    assert.equals(250, code)
    assert.truthy(text:match("^250 2%.1%.0 "), "enhanced status codes dropped: " .. text)
    harness.finish(srv)
  end)
end)

-- The local address of a session: a listener bound to one address hands
-- it over as is (no getsockname per connection); a wildcard listener asks
-- each socket, so a connection to 127.0.0.3 shows 127.0.0.3, not 0.0.0.0.
describe("local address", function()
  it("is the bound address on a listener bound to one, the address reached on a wildcard one", function()
    local srv = harness.start {
      script = "local kurir = require 'kurir'\nkurir.configure { hostname = 'mx.e2e.test' }\n",
      listen = { "0.0.0.0:0", "127.0.0.1:0" },
    }
    local wild, one = srv.ports[1], srv.ports[2]
    local function local_of(port, host)
      local c = assert(client.connect(port, host))
      c:expect(220)
      local _, cport = c.sock:getsockname()
      local line = harness.wait_for(function()
        return harness.log_lines(srv, { event = "connect", remote_port = tostring(cport) })[1]
      end, 5)
      assert.truthy(line, srv:describe())
      c:check("QUIT", 221)
      c:close()
      return line.fields.local_ip, line.fields.local_port
    end
    assert.same({ "127.0.0.1", tostring(one) }, { local_of(one, "127.0.0.1") })
    assert.same({ "127.0.0.3", tostring(wild) }, { local_of(wild, "127.0.0.3") })
    assert.same({ "127.0.0.1", tostring(wild) }, { local_of(wild, "127.0.0.1") })
    harness.finish(srv)
  end)
end)
