-- End to end: SPEC 2.1 at the two stages where the protocol limits what a
-- hook may answer (RFC 5321 3.1, 4.1.1.1): the greeting is 220, 421 (and
-- close) or 554 (then only QUIT); a hook error at connect is 421 4.3.0
-- (or 554 / 220 with on_error.connect = "reject" / "continue"); on EHLO a
-- 2xx text from the helo hook replaces the first line and the extension
-- list follows.

local harness = require "harness"
local client = require "smtp_client"

teardown(harness.cleanup)

local SCRIPT = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.literal.test" }
function kurir.on.connect(s)
  local last = s.remote_ip:match("(%d+)$")
  if last == "11" then error("directory down") end
  if last == "12" then return 250, "hi there" end
  if last == "13" then return 450, "busy, try later" end
  if last == "14" then return 550, "5.7.1 go away" end
  if last == "15" then return 250 end
end
function kurir.on.helo(_, name)
  if name == "plain.test" then return 250, "hello " .. name end
  if name == "two.test" then return 250, "first\nsecond" end
end
function kurir.on.data() return 250 end
]]

local function stop(srv)
  client.close_all(srv.port)
  srv:stop()
  harness.assert_clean(srv)
  harness.rmtree(srv.dir)
end

describe("SPEC 2.1 at connect and EHLO", function()
  local srv
  lazy_setup(function() srv = harness.start { script = SCRIPT } end)
  lazy_teardown(function() stop(srv) end)

  local function from(last)
    local c = client.connect(srv.port, "127.0.0.1", { bind = "127.0.0." .. last })
    if not c then pending("cannot bind 127.0.0." .. last) end
    return c
  end

  it("a connect hook error is 421 4.3.0 and the connection is closed", function()
    local c = from(11)
    if not c then return end
    local code, text = c:reply()
    assert.equals(421, code, text)
    assert.equals("421 4.3.0 mx.literal.test Temporary server error, closing connection", text)
    assert.is_true(c:closed(5), "closed after the 421")
    c:close()
    assert.truthy(srv:wait_log("directory down", 5), "the error is logged")
  end)

  it("a connect hook's 2xx is a 220 greeting with that text", function()
    local c = from(12)
    if not c then return end
    c:expect(220, "220 hi there")
    c:check("EHLO client.test", 250)
    c:close()
  end)

  it("a connect hook's 2xx without text is the standard greeting", function()
    local c = from(15)
    if not c then return end
    c:expect(220, "220 mx.literal.test ESMTP kurir")
    c:close()
  end)

  it("a connect hook's 4xx is a 421 with that text and the connection is closed", function()
    local c = from(13)
    if not c then return end
    c:expect(421, "421 busy, try later")
    assert.is_true(c:closed(5), "closed after the 421")
    c:close()
  end)

  it("a connect hook's 5xx is a 554 greeting, then 503 to all but QUIT", function()
    local c = from(14)
    if not c then return end
    c:expect(554, "554 5.7.1 go away")
    c:check("EHLO client.test", 503)
    c:check("MAIL FROM:<a@literal.test>", 503)
    c:check("QUIT", 221)
    c:close()
  end)

  it("a helo hook's 2xx text replaces the EHLO first line; the extensions follow unchanged", function()
    local c = client.open(srv.port)
    c:expect(220)
    local code, text, lines, ext = c:ehlo("plain.test")
    assert.equals(250, code, text)
    assert.equals("250-hello plain.test", lines[1])
    assert.truthy(ext.PIPELINING, text)
    assert.truthy(ext.SIZE, text)
    assert.equals("250 HELP", lines[#lines])
    local _, _, lines2 = c:ehlo("other.test")
    assert.equals(#lines, #lines2, "the same extension list as without a hook text")
    c:close()
  end)

  it("only the first line of a multi-line helo text goes on EHLO's first line", function()
    local c = client.open(srv.port)
    c:expect(220)
    local code, text, lines, ext = c:ehlo("two.test")
    assert.equals(250, code, text)
    assert.equals("250-first", lines[1])
    assert.truthy(ext.PIPELINING, text)
    c:close()
  end)
end)

describe("on_error.connect", function()
  local BROKEN = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.literal.test", on_error = { connect = "%s" } }
function kurir.on.connect() error("directory down") end
]]

  it("reject: a connect hook error is a 554 greeting, then only QUIT", function()
    local srv = harness.start { script = BROKEN:format("reject") }
    local c = client.open(srv.port)
    local code, text = c:reply()
    assert.equals(554, code, text)
    c:check("EHLO client.test", 503)
    c:check("QUIT", 221)
    c:close()
    stop(srv)
  end)

  it("continue: a connect hook error is the normal 220 greeting", function()
    local srv = harness.start { script = BROKEN:format("continue") }
    local c = client.open(srv.port)
    c:expect(220, "220 mx.literal.test ESMTP kurir")
    c:check("EHLO client.test", 250)
    c:close()
    stop(srv)
  end)
end)
