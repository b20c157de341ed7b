-- End to end: greeting, EHLO/HELO, command sequencing and the standard
-- replies of SPEC section 3 (exact texts from core/proto/reply.h); command
-- framing, SIZE and message_size (at the limit and at twice it), SMTPUTF8
-- for MAIL and RCPT paths.

local harness = require "harness"
local client = require "smtp_client"

local HOST = "mx.e2e.test"

local SCRIPT = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.e2e.test", limits = { message_size = 1000000 } }
function kurir.on.data(s, msg) return 250, "2.0.0 Ok: queued as " .. msg.id end
]]

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("session", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = SCRIPT }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  local function open()
    local c = client.open(srv.port)
    c:expect(220, "220 " .. HOST .. " ESMTP kurir")
    return c
  end

  local function ehlo(c)
    local code, text, lines, ext = c:ehlo("client.e2e.test")
    assert.equals(250, code, text)
    return lines, ext
  end

  describe("greeting and EHLO", function()
    it("greets with 220 and the configured host name", function()
      local c = client.open(srv.port)
      local code, text = c:reply()
      assert.equals(220, code)
      assert.equals("220 " .. HOST .. " ESMTP kurir", text)
      c:close()
    end)

    it("advertises exactly the extensions of SPEC 3 without TLS", function()
      local c = open()
      local lines, ext = ehlo(c)
      assert.truthy(lines[1]:match("^250%-" .. HOST:gsub("%.", "%%.")), lines[1])
      local kws = {}
      for i = 2, #lines do
        local sep = i == #lines and " " or "-"
        assert.equals("250" .. sep, lines[i]:sub(1, 4), lines[i])
        kws[#kws + 1] = lines[i]:sub(5)
      end
      table.sort(kws)
      assert.same({ "8BITMIME", "CHUNKING", "DSN", "ENHANCEDSTATUSCODES", "HELP", "PIPELINING",
        "SIZE 1000000", "SMTPUTF8" }, kws)
      assert.is_nil(ext.STARTTLS)
      assert.is_nil(ext.AUTH)
      c:close()
    end)

    it("answers EHLO over IPv6 too when listening on ::1", function()
      local s6 = harness.start { script = SCRIPT, listen = { "[::1]:0", "127.0.0.1:0" } }
      local c = client.open(s6.ports[1], "::1")
      c:expect(220, "220 " .. HOST .. " ESMTP kurir")
      local _, ext = ehlo(c)
      assert.equals("1000000", ext.SIZE)
      c:check("QUIT", 221)
      c:close()
      local c4 = client.open(s6.ports[2])
      c4:expect(220)
      c4:close()
      harness.finish(s6)
    end)

    it("answers HELO without enhanced status codes until EHLO", function()
      local c = open()
      local code, text = c:cmd("HELO client.e2e.test")
      assert.equals(250, code)
      assert.falsy(text:match("^250 %d%.%d+%.%d+"), text)
      c:check("NOOP", 250, "250 OK")
      c:check("RSET", 250, "250 OK")
      c:check("XYZZY", 500, "500 Command unrecognized")
      c:check("RCPT TO:<a@example.test>", 503, "503 Need MAIL command")
      c:check("MAIL FROM:<a@example.test>", 250, "250 Sender OK")
      c:check("RCPT TO:<b@example.test>", 250, "250 Recipient OK")
      c:check("QUIT", 221)
      assert.is_true(c:closed(5))
    end)

    it("puts an enhanced status code on every reply after EHLO", function()
      local c = open()
      ehlo(c)
      local cmds = { "NOOP", "RSET", "VRFY someone", "EXPN list", "HELP", "XYZZY",
        "RCPT TO:<a@example.test>", "MAIL FROM:<a@example.test>", "MAIL FROM:<a@example.test>",
        "RCPT TO:<b@example.test>", "DATA" }
      for _, cmd in ipairs(cmds) do
        local _, _, lines = c:cmd(cmd)
        assert.truthy(lines and #lines > 0, cmd)
        for _, l in ipairs(lines) do
          if l:sub(1, 1) ~= "3" then
            local class = l:sub(1, 1)
            assert.truthy(l:match("^%d%d%d[ -]" .. class .. "%.%d%d?%d?%.%d%d?%d? "), cmd .. " -> " .. l)
          end
        end
      end
      c:send(".\r\n")
      c:expect(250)
      c:check("QUIT", 221, "221 2.0.0 Bye")
      c:close()
    end)

    it("EHLO resets a transaction in progress and may be repeated", function()
      local c = open()
      ehlo(c)
      c:check("MAIL FROM:<a@example.test>", 250, "250 2.1.0 Sender OK")
      ehlo(c)
      c:check("RCPT TO:<b@example.test>", 503, "503 5.5.1 Need MAIL command")
      c:close()
    end)

    it("rejects HELO/EHLO without an argument with 501", function()
      local c = open()
      local code, text = c:cmd("EHLO")
      assert.equals(501, code, text)
      code, text = c:cmd("HELO")
      assert.equals(501, code, text)
      ehlo(c)
      c:close()
    end)
  end)

  describe("command sequencing", function()
    it("MAIL before EHLO gets 503", function()
      local c = open()
      c:check("MAIL FROM:<a@example.test>", 503, "503 Send HELO/EHLO first")
      c:close()
    end)

    it("RCPT before MAIL gets 503 5.5.1", function()
      local c = open()
      ehlo(c)
      c:check("RCPT TO:<a@example.test>", 503, "503 5.5.1 Need MAIL command")
      c:close()
    end)

    it("DATA before RCPT gets 503", function()
      local c = open()
      ehlo(c)
      c:check("DATA", 503)
      c:check("MAIL FROM:<a@example.test>", 250, "250 2.1.0 Sender OK")
      c:check("DATA", 503, "503 5.5.1 Need RCPT command")
      c:close()
    end)

    it("a second MAIL in a transaction gets 503", function()
      local c = open()
      ehlo(c)
      c:check("MAIL FROM:<a@example.test>", 250, "250 2.1.0 Sender OK")
      c:check("MAIL FROM:<a@example.test>", 503, "503 5.5.1 Sender already specified")
      c:close()
    end)

    it("answers an unknown verb with 500 5.5.1", function()
      local c = open()
      ehlo(c)
      c:check("FOOBAR baz", 500, "500 5.5.1 Command unrecognized")
      c:check("NOOP", 250, "250 2.0.0 OK")
      c:close()
    end)

    it("answers NOOP, RSET, VRFY, EXPN, HELP", function()
      local c = open()
      ehlo(c)
      c:check("NOOP", 250, "250 2.0.0 OK")
      c:check("NOOP with an argument", 250, "250 2.0.0 OK")
      c:check("RSET", 250, "250 2.0.0 OK")
      c:check("VRFY postmaster", 252,
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")
      c:check("EXPN staff", 502, "502 5.5.1 EXPN not supported")
      local text = c:check("HELP", 214)
      assert.truthy(text:match("^214[ -]2%.0%.0 "), text)
      c:close()
    end)

    it("is case-insensitive in verbs", function()
      local c = open()
      c:check("ehlo client.e2e.test", 250)
      c:check("mail from:<a@example.test>", 250, "250 2.1.0 Sender OK")
      c:check("rcpt to:<b@example.test>", 250, "250 2.1.5 Recipient OK")
      c:check("noop", 250, "250 2.0.0 OK")
      c:close()
    end)

    it("RSET ends the transaction", function()
      local c = open()
      ehlo(c)
      c:check("MAIL FROM:<a@example.test>", 250)
      c:check("RCPT TO:<b@example.test>", 250)
      c:check("RSET", 250, "250 2.0.0 OK")
      c:check("RCPT TO:<b@example.test>", 503, "503 5.5.1 Need MAIL command")
      c:check("DATA", 503)
      c:close()
    end)

    it("QUIT gets 221 and the server closes the connection", function()
      local c = open()
      ehlo(c)
      c:check("QUIT", 221, "221 2.0.0 Bye")
      assert.is_true(c:closed(5))
    end)
  end)

  describe("addresses and parameters", function()
    local c
    before_each(function()
      c = open()
      ehlo(c)
    end)
    after_each(function() c:close() end)

    it("accepts the null sender MAIL FROM:<>", function()
      c:check("MAIL FROM:<>", 250, "250 2.1.0 Sender OK")
      c:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 Recipient OK")
    end)

    it("accepts RCPT TO:<postmaster> without a domain", function()
      c:check("MAIL FROM:<a@example.test>", 250)
      c:check("RCPT TO:<postmaster>", 250, "250 2.1.5 Recipient OK")
      c:check("RCPT TO:<Postmaster>", 250, "250 2.1.5 Recipient OK")
    end)

    it("accepts a quoted local part", function()
      c:check('MAIL FROM:<"john doe"@example.test>', 250, "250 2.1.0 Sender OK")
      c:check('RCPT TO:<"a\\"b c"@example.test>', 250, "250 2.1.5 Recipient OK")
    end)

    it("accepts address literals", function()
      c:check("MAIL FROM:<a@[127.0.0.1]>", 250, "250 2.1.0 Sender OK")
      c:check("RCPT TO:<b@[IPv6:::1]>", 250, "250 2.1.5 Recipient OK")
    end)

    it("tolerates a source route", function()
      c:check("MAIL FROM:<@relay.test:a@example.test>", 250, "250 2.1.0 Sender OK")
      c:check("RCPT TO:<@one.test,@two.test:b@example.test>", 250, "250 2.1.5 Recipient OK")
    end)

    it("accepts SIZE, BODY and SMTPUTF8 parameters", function()
      c:check("MAIL FROM:<a@example.test> SIZE=1000 BODY=8BITMIME SMTPUTF8", 250, "250 2.1.0 Sender OK")
      c:check("RCPT TO:<b@example.test>", 250)
      c:check("RSET", 250)
      c:check("MAIL FROM:<a@example.test> BODY=7BIT", 250)
    end)

    it("accepts a UTF-8 address with SMTPUTF8", function()
      c:check("MAIL FROM:<j\xC3\xB6rg@example.test> SMTPUTF8", 250, "250 2.1.0 Sender OK")
      c:check("RCPT TO:<\xC3\xA9l\xC3\xA8ve@example.test>", 250, "250 2.1.5 Recipient OK")
    end)

    it("refuses MAIL with a SIZE over the limit with 552 5.3.4", function()
      c:check("MAIL FROM:<a@example.test> SIZE=1000001", 552,
        "552 5.3.4 Message size exceeds fixed maximum message size")
      c:check("RCPT TO:<b@example.test>", 503, "503 5.5.1 Need MAIL command")
      c:check("MAIL FROM:<a@example.test> SIZE=1000000", 250, "250 2.1.0 Sender OK")
    end)

    it("refuses an unknown MAIL parameter with 555 5.5.4", function()
      c:check("MAIL FROM:<a@example.test> FOO=BAR", 555, "555 5.5.4 Unsupported parameter")
      c:check("MAIL FROM:<a@example.test>", 250, "250 2.1.0 Sender OK")
      c:check("RCPT TO:<b@example.test> FOO=BAR", 555, "555 5.5.4 Unsupported parameter")
    end)

    it("answers bad address syntax with 501", function()
      for _, bad in ipairs { "MAIL FROM:a@example.test>", "MAIL FROM:<a@example.test",
        "MAIL FROM:<a@@example.test>", "MAIL TO:<a@example.test>", "MAIL" } do
        local code, text = c:cmd(bad)
        assert.equals(501, code, bad .. " -> " .. tostring(text))
        assert.truthy(text:match("^501 5%.%d%.%d+ "), text)
      end
      c:check("MAIL FROM:<a@example.test>", 250)
      for _, bad in ipairs { "RCPT TO:<>", "RCPT TO:b@example.test", "RCPT FROM:<b@example.test>",
        "RCPT TO:<b@example.test" } do
        local code, text = c:cmd(bad)
        assert.equals(501, code, bad .. " -> " .. tostring(text))
      end
      c:check("RCPT TO:<b@example.test>", 250)
    end)

    it("answers a bad SIZE value with 501", function()
      local code, text = c:cmd("MAIL FROM:<a@example.test> SIZE=abc")
      assert.equals(501, code, text)
    end)
  end)
end)

describe("session: command framing, SIZE, SMTPUTF8 and refused recipients (SPEC 3)", function()
  local function open(port)
    local c = client.open(port)
    c:expect(220, "220 mx.conf.test ESMTP kurir")
    return c
  end

  local function ehlo(c)
    local code, text = c:ehlo("client.conf.test")
    assert.equals(250, code, text)
  end

  local srv

  lazy_setup(function()
    srv = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.conf.test", limits = { message_size = 1000 } }
function kurir.on.data(s, msg) return 250, "2.0.0 Ok: queued as " .. msg.id end
]] }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  it("a bare LF or bare CR inside a command line does not start a new command", function()
    for _, line in ipairs { "NOOP\nNOOP", "NOOP\rNOOP", "RSET\nQUIT" } do
      local c = open(srv.port)
      ehlo(c)
      assert(c:send(line .. "\r\n"))
      local code, text = c:reply()
      assert.truthy(code, text)
      -- a second reply to the line would come before this one's 500
      local code2, text2 = c:cmd("XNEXT")
      assert.equals(500, code2, "a second reply to " .. string.format("%q", line) .. ": " .. tostring(text2))
      c:check("NOOP", 250)
      c:close()
    end
  end)

  it("SIZE=limit is accepted at MAIL, SIZE=limit+1 gets 552", function()
    local c = open(srv.port)
    ehlo(c)
    c:check("MAIL FROM:<a@conf.test> SIZE=1000", 250)
    c:check("RSET", 250)
    local text = c:check("MAIL FROM:<a@conf.test> SIZE=1001", 552)
    assert.truthy(text:match("^552 5%.3%.4 "), text)
    c:close()
  end)

  it("a message of exactly message_size bytes is accepted, one byte more gets 552", function()
    local c = open(srv.port)
    ehlo(c)
    for _, case in ipairs { { 1000, 250 }, { 1001, 552 }, { 999, 250 } } do
      c:check("MAIL FROM:<a@conf.test>", 250)
      c:check("RCPT TO:<b@conf.test>", 250)
      c:check("DATA", 354)
      assert(c:send(string.rep("x", case[1] - 2) .. "\r\n.\r\n"))
      c:expect(case[2])
    end
    c:close()
  end)

  it("a non-ASCII MAIL path without the SMTPUTF8 parameter is refused, with it accepted", function()
    local c = open(srv.port)
    ehlo(c)
    for _, from in ipairs { "j\195\188rgen@conf.test", "a@b\195\188cher.conf.test" } do
      local text = c:check("MAIL FROM:<" .. from .. ">", 553)
      assert.truthy(text:match("^553 5%.6%.7 "), text)
      -- refused: no transaction was started
      c:check("RCPT TO:<b@conf.test>", 503)
    end
    c:check("MAIL FROM:<j\195\188rgen@conf.test> SMTPUTF8", 250)
    c:check("RCPT TO:<b@conf.test>", 250)
    c:close()
  end)

  it("a message of twice message_size is refused with 552 and the session stays in step", function()
    local c = open(srv.port)
    ehlo(c)
    c:check("MAIL FROM:<a@conf.test>", 250)
    c:check("RCPT TO:<b@conf.test>", 250)
    c:check("DATA", 354)
    assert(c:send(string.rep(string.rep("y", 98) .. "\r\n", 20) .. ".\r\n"))
    local text = c:expect(552)
    assert.truthy(text:match("^552 5%.3%.4 "), text)
    c:check("NOOP", 250)
    c:check("MAIL FROM:<a@conf.test>", 250)
    c:close()
  end)

  it("a non-ASCII address without the SMTPUTF8 parameter is refused, with it accepted", function()
    local c = open(srv.port)
    ehlo(c)
    c:check("MAIL FROM:<a@conf.test>", 250)
    local text = c:check("RCPT TO:<j\195\188rgen@conf.test>", 553)
    assert.truthy(text:match("^553 5%.6%.7 "), text)
    c:check("RSET", 250)
    c:check("MAIL FROM:<a@conf.test> SMTPUTF8", 250)
    c:check("RCPT TO:<j\195\188rgen@conf.test>", 250)
    c:close()
  end)

  it("DATA with every recipient refused gets 503 or 554, never 354", function()
    local s2 = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.conf.test" }
function kurir.on.rcpt() return false end
function kurir.on.data() return 250 end
]] }
    local c = open(s2.port)
    ehlo(c)
    c:check("MAIL FROM:<a@conf.test>", 250)
    c:check("RCPT TO:<b@conf.test>", 550)
    local code, text = c:cmd("DATA")
    assert.truthy(code == 503 or code == 554, text)
    c:check("NOOP", 250)
    c:close()
    harness.finish(s2)
  end)

  it("unknown RCPT parameters get 555 and keep the transaction", function()
    local c = open(srv.port)
    ehlo(c)
    c:check("MAIL FROM:<a@conf.test>", 250)
    local text = c:check("RCPT TO:<b@conf.test> FOO=bar", 555)
    assert.truthy(text:match("^555 5%.5%.4 "), text)
    c:check("RCPT TO:<b@conf.test>", 250)
    c:close()
  end)
end)
