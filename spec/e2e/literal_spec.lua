-- End to end: SPEC 2.1 taken to the letter at the stages where an SMTP
-- server would be tempted to improve on the script's answer: the greeting
-- and EHLO. "code[, text]: exactly that reply"; a hook error is
-- "451 4.3.0 ... and the session goes on".

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
end
function kurir.on.helo(_, name)
  if name == "plain.test" then return 250, "hello " .. name end
end
function kurir.on.data() return 250 end
]]

describe("SPEC 2.1 to the letter", function()
  local srv
  lazy_setup(function() srv = harness.start { script = SCRIPT } end)
  lazy_teardown(function()
    client.close_all(srv.port)
    srv:stop()
    harness.assert_clean(srv)
    harness.rmtree(srv.dir)
  end)

  local function from(last)
    local c = client.connect(srv.port, "127.0.0.1", { bind = "127.0.0." .. last })
    if not c then pending("cannot bind 127.0.0." .. last) end
    return c
  end

  it("a connect hook error greets with 451 4.3.0 and the session goes on", function()
    local c = from(11)
    if not c then return end
    local code, text = c:reply()
    assert.equals(451, code, text)
    assert.truthy(text:match("^451 4%.3%.0 "), text)
    c:check("EHLO client.test", 250)
    c:check("MAIL FROM:<a@literal.test>", 250)
    c:check("QUIT", 221)
    c:close()
    assert.truthy(srv:wait_log("directory down", 5), "the error is logged")
  end)

  it("a connect hook's 2xx is sent exactly as given", function()
    local c = from(12)
    if not c then return end
    local code, text = c:reply()
    assert.equals(250, code, text)
    assert.equals("250 hi there", text)
    c:check("EHLO client.test", 250)
    c:close()
  end)

  it("a connect hook's 4xx is sent exactly and refuses the session (503 but QUIT)", function()
    local c = from(13)
    if not c then return end
    local code, text = c:reply()
    assert.equals(450, code, text)
    assert.equals("450 busy, try later", text)
    local c2, t2 = c:cmd("EHLO client.test")
    assert.equals(503, c2, t2)
    c:check("QUIT", 221)
    c:close()
  end)

  it("a helo hook's 250 with text is exactly that reply, and nothing returns the extensions", function()
    local c = client.open(srv.port)
    c:expect(220)
    local code, text = c:cmd("EHLO plain.test")
    assert.equals(250, code, text)
    assert.equals("250 2.0.0 hello plain.test", text)
    code, text = c:cmd("EHLO other.test")
    assert.equals(250, code, text)
    assert.truthy(text:find("PIPELINING", 1, true), text)
    c:close()
  end)
end)
