-- End to end: DATA. Dot-unstuffing, exact stored bytes (8-bit, 1 MB), bare
-- LF rejection, SMTP smuggling payloads, the message size limit and NUL
-- bytes. The data hook writes msg:raw() to DIR/<queue id>.eml.

local harness = require "harness"
local client = require "smtp_client"

local SCRIPT = [[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure {
  hostname = "mx.e2e.test",
  limits = { message_size = tonumber(arg[2]), bare_lf = arg[3] },
}
function kurir.on.data(s, msg)
  local f = assert(io.open(dir .. "/" .. msg.id .. ".eml", "wb"))
  f:write(msg:raw())
  f:close()
  return 250, "2.0.0 Ok: queued as " .. msg.id
end
]]

local BARE_LF = "554 5.6.0 Message contains bare LF line endings (not CRLF); fix the client"
local TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"

local function session(srv)
  local c = client.open(srv.port)
  c:expect(220)
  local code, text = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  return c
end

local function begin(c)
  c:check("MAIL FROM:<a@example.test>", 250, "250 2.1.0 Sender OK")
  c:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 Recipient OK")
  c:check("DATA", 354, "354 End data with <CR><LF>.<CR><LF>")
end

-- Send one message (already dot-stuffed, without the terminator); returns
-- the stored bytes.
local function deliver(srv, c, wire)
  begin(c)
  assert(c:send(wire .. ".\r\n"))
  local text = c:expect(250)
  local id = text:match("^250 2%.0%.0 Ok: queued as (%S+)$")
  assert.truthy(id, text)
  local stored = harness.read_file(srv.dir .. "/" .. id .. ".eml")
  assert.truthy(stored, "no stored file for " .. id)
  return stored, id
end

local function count_eml(dir)
  local n = 0
  for _, name in ipairs(harness.list_dir(dir)) do
    if name:match("%.eml$") then n = n + 1 end
  end
  return n
end

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("DATA", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = SCRIPT, args = { "{dir}", "2000000", "reject" } }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  it("removes dot-stuffing: stored bytes equal the unstuffed bytes sent", function()
    local c = session(srv)
    local wire = "Subject: dots\r\n\r\n..one\r\n...two\r\n..\r\n.x\r\nmiddle . dot\r\n..\r\nend\r\n"
    local want = "Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nx\r\nmiddle . dot\r\n.\r\nend\r\n"
    assert.equals(want, (deliver(srv, c, wire)))
    c:close()
  end)

  it("stores an empty message as zero bytes", function()
    local c = session(srv)
    assert.equals("", (deliver(srv, c, "")))
    c:close()
  end)

  it("stores 8-bit bytes unchanged", function()
    local c = session(srv)
    local bytes = {}
    for b = 1, 255 do
      if b ~= 10 and b ~= 13 then bytes[#bytes + 1] = string.char(b) end
    end
    local body = "Subject: 8bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" .. table.concat(bytes) .. "\r\n" ..
      "caf\xC3\xA9 \xE2\x82\xAC \xFF\xFE\r\n"
    c:check("MAIL FROM:<a@example.test> BODY=8BITMIME", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send(body .. ".\r\n"))
    local text = c:expect(250)
    local id = text:match("queued as (%S+)$")
    assert.equals(body, harness.read_file(srv.dir .. "/" .. id .. ".eml"))
    c:close()
  end)

  it("stores a 1 MB message byte for byte", function()
    local c = session(srv)
    local lines, want = {}, {}
    for i = 1, 13000 do
      local l = string.format("%05d ", i) .. string.rep(string.char(65 + i % 26), 70)
      if i % 97 == 0 then l = "." .. l end
      want[#want + 1] = l .. "\r\n"
      if l:sub(1, 1) == "." then l = "." .. l end
      lines[#lines + 1] = l .. "\r\n"
    end
    local header = "Subject: big\r\n\r\n"
    local stored = deliver(srv, c, header .. table.concat(lines))
    local expected = header .. table.concat(want)
    assert.is_true(#expected > 1000000)
    assert.equals(#expected, #stored)
    assert.is_true(expected == stored, "stored bytes differ from sent bytes")
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
  end)

  it("takes two messages in one session", function()
    local c = session(srv)
    assert.equals("Subject: 1\r\n\r\none\r\n", (deliver(srv, c, "Subject: 1\r\n\r\none\r\n")))
    assert.equals("Subject: 2\r\n\r\ntwo\r\n", (deliver(srv, c, "Subject: 2\r\n\r\ntwo\r\n")))
    c:close()
  end)

  it("rejects a message with a bare LF with 554 5.6.0 and stays in step", function()
    local c = session(srv)
    local before = count_eml(srv.dir)
    begin(c)
    assert(c:send("Subject: lf\r\n\r\nline one\nline two\r\n.\r\n"))
    c:expect(554, BARE_LF)
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:check("RCPT TO:<b@example.test>", 503, "503 5.5.1 Need MAIL command")
    assert.equals("Subject: ok\r\n\r\nfine\r\n", (deliver(srv, c, "Subject: ok\r\n\r\nfine\r\n")))
    assert.equals(before + 1, count_eml(srv.dir))
    c:close()
  end)

  for _, case in ipairs {
    { name = "<CRLF>.<LF>", sep = "\r\n.\n" },
    { name = "<LF>.<CRLF>", sep = "\n.\r\n" },
    { name = "<LF>.<LF>", sep = "\n.\n" },
  } do
    it("does not end the message at " .. case.name .. " (no SMTP smuggling)", function()
      local c = session(srv)
      local before = count_eml(srv.dir)
      begin(c)
      local payload = "Subject: smuggle\r\n\r\nhello" .. case.sep ..
        "MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n" ..
        "Subject: smuggled\r\n\r\nevil\r\n.\r\n"
      -- One write: the real message end, then a NOOP.
      assert(c:send(payload .. "NOOP\r\n"))
      -- Exactly one reply for the message ...
      c:expect(554, BARE_LF)
      -- ... and the next reply is the NOOP's: the smuggled MAIL got none.
      c:expect(250, "250 2.0.0 OK")
      c:check("RCPT TO:<b@example.test>", 503, "503 5.5.1 Need MAIL command")
      c:in_step()
      assert.equals(before, count_eml(srv.dir))
      c:close()
    end)
  end

  it("does not end the message at a bare CR dot sequence", function()
    local c = session(srv)
    local before = count_eml(srv.dir)
    begin(c)
    local payload = "Subject: cr\r\n\r\nhello\r\n.\rMAIL FROM:<evil@attacker.test>\r\n" ..
      "RCPT TO:<victim@example.test>\r\nDATA\r\nevil\r\n.\r\n"
    assert(c:send(payload .. "NOOP\r\n"))
    local code, text = c:reply()
    assert.truthy(code == 250 or code == 554, text)
    c:expect(250, "250 2.0.0 OK")
    c:check("RCPT TO:<b@example.test>", 503, "503 5.5.1 Need MAIL command")
    assert.is_true(count_eml(srv.dir) <= before + 1)
    c:close()
  end)

  it("survives NUL bytes in commands and in data", function()
    local c = session(srv)
    local code = c:cmd("NO\0OP")
    assert.truthy(code and code >= 500 and code < 600, tostring(code))
    code = c:cmd("MAIL FROM:<a\0b@example.test>")
    assert.truthy(code and code >= 500 and code < 600, tostring(code))
    c:check("NOOP", 250, "250 2.0.0 OK")
    begin(c)
    assert(c:send("Subject: nul\r\n\r\na\0b\r\n\0\r\n.\r\n"))
    local text
    code, text = c:reply()
    assert.truthy(code == 250 or (code and code >= 550 and code < 560), tostring(text))
    if code == 250 then
      local id = text:match("queued as (%S+)$")
      assert.equals("Subject: nul\r\n\r\na\0b\r\n\0\r\n", harness.read_file(srv.dir .. "/" .. id .. ".eml"))
    end
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
    local c2 = session(srv)
    c2:check("NOOP", 250, "250 2.0.0 OK")
    c2:close()
  end)
end)

describe("DATA with a small size limit and bare_lf = accept", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = SCRIPT, args = { "{dir}", "1000", "accept" } }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  it("advertises SIZE 1000", function()
    local c = client.open(srv.port)
    c:expect(220)
    local _, _, _, ext = c:ehlo()
    assert.equals("1000", ext.SIZE)
    c:close()
  end)

  it("answers a message over message_size with 552 after the terminator and goes on", function()
    local c = session(srv)
    local before = count_eml(srv.dir)
    begin(c)
    local body = "Subject: big\r\n\r\n" .. string.rep(string.rep("y", 98) .. "\r\n", 30)
    assert(c:send(body))
    -- Nothing is answered before the end of data (a timed look: there is
    -- no event for "the server has read these bytes").
    assert.is_false(c:readable(0.3 * harness.scale))
    assert(c:send(".\r\n"))
    c:expect(552, TOO_BIG)
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:in_step()
    assert.equals(before, count_eml(srv.dir))
    assert.equals("Subject: small\r\n\r\nok\r\n", (deliver(srv, c, "Subject: small\r\n\r\nok\r\n")))
    c:close()
  end)

  it("keeps a smuggling payload inside one message when bare LF is accepted", function()
    local c = session(srv)
    local before = count_eml(srv.dir)
    begin(c)
    local body = "Subject: s\r\n\r\nhello\r\n.\nMAIL FROM:<evil@attacker.test>\r\n" ..
      "RCPT TO:<victim@example.test>\r\nDATA\r\nevil\r\n"
    assert(c:send(body .. ".\r\nNOOP\r\n"))
    local text = c:expect(250)
    local id = text:match("queued as (%S+)$")
    assert.truthy(id, text)
    c:expect(250, "250 2.0.0 OK")
    -- The CRLF-delimited line ".<LF>MAIL ..." starts with a dot: unstuffed.
    local want = body:gsub("\r\n%.\n", "\r\n\n")
    assert.equals(want, harness.read_file(srv.dir .. "/" .. id .. ".eml"))
    assert.equals(before + 1, count_eml(srv.dir))
    c:check("RCPT TO:<b@example.test>", 503, "503 5.5.1 Need MAIL command")
    c:close()
  end)
end)
