-- End to end: BDAT (RFC 3030 CHUNKING). Chunks are raw octets: no
-- dot-unstuffing, no end-of-data sequence, stored exactly as sent.

local harness = require "harness"
local client = require "smtp_client"

local function session(srv)
  local c = client.open(srv.port)
  c:expect(220)
  local code, text, _, ext = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  assert.truthy(ext.CHUNKING)
  return c
end

local function stored(srv, text)
  local id = text:match("^250 2%.0%.0 Ok: queued as (%S+)$")
  assert.truthy(id, text)
  return harness.read_file(srv.dir .. "/" .. id .. ".eml")
end

local function chunk_ok(c)
  local code, text = c:reply()
  assert.equals(250, code, text)
  assert.truthy(text:match("^250 2%.%d%d?%d?%.%d%d?%d? "), text)
end

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("BDAT", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = harness.STORE_SCRIPT, args = { "{dir}", "100000" } }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  local function tx(c)
    c:check("MAIL FROM:<a@example.test>", 250, "250 2.1.0 Sender OK")
    c:check("RCPT TO:<b@example.test>", 250, "250 2.1.5 Recipient OK")
  end

  it("takes BDAT n then BDAT n LAST and stores the chunks concatenated", function()
    local c = session(srv)
    tx(c)
    assert(c:send("BDAT 17\r\nSubject: b\r\n\r\nhel"))
    chunk_ok(c)
    assert(c:send("BDAT 8 LAST\r\nlo you\r\n"))
    local text = c:expect(250)
    assert.equals("Subject: b\r\n\r\nhello you\r\n", stored(srv, text))
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
  end)

  it("ends a message with BDAT 0 LAST", function()
    local c = session(srv)
    tx(c)
    assert(c:send("BDAT 17\r\nSubject: z\r\n\r\nz\r\n"))
    chunk_ok(c)
    local text = c:check("BDAT 0 LAST", 250)
    assert.equals("Subject: z\r\n\r\nz\r\n", stored(srv, text))
    c:close()
  end)

  it("stores chunk bytes raw: dots, CRLF.CRLF and command text are data", function()
    local c = session(srv)
    tx(c)
    local body = "Subject: raw\r\n\r\n..two dots\r\n.\r\nMAIL FROM:<evil@attacker.test>\r\n\xFF\xFE 8bit\r\n"
    assert(c:send("BDAT " .. #body .. " LAST\r\n" .. body))
    local text = c:expect(250)
    assert.equals(body, stored(srv, text))
    c:check("RCPT TO:<b@example.test>", 503, "503 5.5.1 Need MAIL command")
    c:close()
  end)

  it("handles pipelined BDAT chunks in one write", function()
    local c = session(srv)
    assert(c:send("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n" ..
      "BDAT 3\r\nabcBDAT 4\r\ndefgBDAT 5 LAST\r\nhij\r\nNOOP\r\n"))
    c:expect(250, "250 2.1.0 Sender OK")
    c:expect(250, "250 2.1.5 Recipient OK")
    chunk_ok(c)
    chunk_ok(c)
    local text = c:expect(250)
    assert.equals("abcdefghij\r\n", stored(srv, text))
    c:expect(250, "250 2.0.0 OK")
    c:in_step()
    c:close()
  end)

  it("refuses DATA after BDAT with 503", function()
    local c = session(srv)
    tx(c)
    assert(c:send("BDAT 4\r\nabcd"))
    chunk_ok(c)
    c:check("DATA", 503, "503 5.5.1 DATA not allowed after BDAT")
    local text = c:check("BDAT 2 LAST\r\nef", 250)
    assert.equals("abcdef", stored(srv, text))
    c:close()
  end)

  it("consumes the chunk of a BDAT out of sequence and answers 503", function()
    local c = session(srv)
    assert(c:send("BDAT 6\r\nNOOP\r\n"))
    local code, text = c:reply()
    assert.equals(503, code, text)
    assert.truthy(text:match("^503 5%.5%.1 "), text)
    -- The chunk's "NOOP" was data, not a command: the next reply is ours.
    c:check("RSET", 250, "250 2.0.0 OK")
    c:in_step()
    c:close()
  end)

  it("answers bad BDAT syntax with 501", function()
    local c = session(srv)
    tx(c)
    c:check("BDAT", 501, "501 5.5.4 Syntax: BDAT size [LAST]")
    c:check("BDAT abc", 501, "501 5.5.4 Syntax: BDAT size [LAST]")
    c:check("BDAT 3 FIRST", 501, "501 5.5.4 Syntax: BDAT size [LAST]")
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
  end)

  it("refuses a BDAT message over message_size with 552 and stays in step", function()
    local c = session(srv)
    tx(c)
    local big = string.rep("x", 60000)
    assert(c:send("BDAT 60000\r\n" .. big))
    local code1 = c:reply()
    assert(c:send("BDAT 60000 LAST\r\n" .. big))
    local code2, text2 = c:reply()
    assert.truthy(code1 == 552 or code2 == 552, tostring(code1) .. " / " .. tostring(text2))
    if code2 == 552 then
      assert.equals("552 5.3.4 Message size exceeds fixed maximum message size", text2)
    end
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
  end)

  it("answers a non-LAST chunk over message_size with 552 and ends the transaction", function()
    local c = session(srv)
    tx(c)
    assert(c:send("BDAT 100001\r\n" .. string.rep("x", 100001)))
    c:expect(552, "552 5.3.4 Message size exceeds fixed maximum message size")
    -- the transaction is over: a further chunk is consumed and refused
    assert(c:send("BDAT 5 LAST\r\nhello"))
    c:expect(503)
    c:check("NOOP", 250, "250 2.0.0 OK")
    tx(c)
    assert(c:send("BDAT 5 LAST\r\nhello"))
    assert.equals("hello", stored(srv, c:expect(250)))
    c:close()
  end)

  it("answers the non-LAST chunk that takes the message over message_size with 552", function()
    local c = session(srv)
    tx(c)
    local big = string.rep("x", 60000)
    assert(c:send("BDAT 60000\r\n" .. big))
    chunk_ok(c)
    assert(c:send("BDAT 60000\r\n" .. big))
    c:expect(552, "552 5.3.4 Message size exceeds fixed maximum message size")
    c:check("NOOP", 250, "250 2.0.0 OK")
    c:close()
  end)
end)
