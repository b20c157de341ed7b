-- End to end: what the client sees and where mail lands (issue 6.6).
-- The HELO name in the reply is clipped and filtered; TLS refuses a
-- client whose ALPN list names only other protocols (ALPACA); failed
-- deliveries answer 451 without server paths; Maildir templates keep
-- a/b and a_b apart; limits.bare_cr; the spool's tmpfs warning and its
-- free-space reserve (452 4.3.1).

local harness = require "harness"
local client = require "smtp_client"

local q = harness.quote

teardown(harness.cleanup)

local function stop(srv)
  client.close_all(srv.port)
  srv:stop()
  harness.assert_clean(srv)
  harness.rmtree(srv.dir)
end

local function send_message(c, rcpt, body)
  c:check("MAIL FROM:<a@view.test>", 250)
  c:check("RCPT TO:<" .. rcpt .. ">", 250)
  c:check("DATA", 354)
  assert(c:send(body))
  return c:reply()
end

describe("the HELO/EHLO reply", function()
  local srv
  lazy_setup(function()
    srv = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.view.test" }
]] }
  end)
  lazy_teardown(function() stop(srv) end)

  it("does not echo markup from the client's name", function()
    local c = client.open(srv.port)
    c:expect(220)
    local code, text, lines = c:ehlo("[x:<img/src=x/onerror=alert(1)>]")
    assert.equals(250, code, text)
    assert.falsy(lines[1]:find("<", 1, true), lines[1])
    assert.falsy(lines[1]:find("(", 1, true), lines[1])
    local want = "^250%-mx%.view%.test Hello %[x:%?img%?src%?x%?onerror%?alert%?1%?%?%] %[127%.0%.0%.1%]$"
    assert.truthy(lines[1]:match(want), lines[1])
    code, text = c:cmd("HELO [x:<img/src=x/onerror=alert(1)>]")
    assert.equals(250, code, text)
    assert.falsy(text:find("<", 1, true), text)
    c:close()
  end)

  it("keeps every line within 512 bytes for a 2000-byte name", function()
    local c = client.open(srv.port)
    c:expect(220)
    local name = ("abcdefghi."):rep(200) .. "test"
    local code, text, lines = c:ehlo(name)
    if code == 501 then pending("the name is refused as too long") return end
    assert.equals(250, code, text)
    for _, l in ipairs(lines) do assert.is_true(#l + 2 <= 512, #l .. " bytes: " .. l:sub(1, 80)) end
    assert.truthy(lines[1]:find("...", 1, true), "the clipped name is marked")
    c:close()
  end)
end)

describe("ALPN on TLS (ALPACA)", function()
  local srv, port
  lazy_setup(function()
    srv = harness.start { listen = { "smtps://127.0.0.1:0" }, script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.view.test", tls = { self_signed = true } }
]] }
    port = srv.port
  end)
  lazy_teardown(function() stop(srv) end)

  local function py(alpn)
    local p = io.popen("timeout 20 python3 " .. q(harness.root .. "/spec/support/alpn_client.py") ..
      " 127.0.0.1 " .. port .. " " .. q(alpn or "") .. " 2>&1")
    local out = p:read("a")
    p:close()
    return out
  end

  it("refuses a client that offers only http/1.1 (Python ssl)", function()
    local out = py("http/1.1")
    assert.truthy(out:match("^fail"), out)
    assert.truthy(out:lower():find("no_application_protocol", 1, true) or
      out:lower():find("no application protocol", 1, true), out)
  end)

  it("refuses a client that offers only http/1.1 (openssl s_client)", function()
    local p = io.popen("timeout 20 openssl s_client -connect 127.0.0.1:" .. port ..
      " -alpn http/1.1 </dev/null 2>&1")
    local out = p:read("a")
    p:close()
    assert.truthy(out:lower():find("no application protocol", 1, true), out)
    assert.falsy(out:find("220 mx.view.test", 1, true), out)
  end)

  it("serves a client that offers smtp among others, and one with no ALPN", function()
    local out = py("h2,smtp")
    assert.truthy(out:match("^ok smtp 220"), out)
    out = py(nil)
    assert.truthy(out:match("^ok none 220"), out)
  end)
end)

describe("where mail lands", function()
  local srv
  lazy_setup(function()
    srv = harness.start { script = [[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure { hostname = "mx.view.test" }
local good = kurir.maildir(dir .. "/boxes/%{user}")
local bad = kurir.maildir(dir .. "/blocker/%{user}")
function kurir.on.rcpt(_, r)
  r.route = r.domain == "bad.test" and bad or good
end
]], args = { "{dir}" } }
    harness.write_file(srv.dir .. "/blocker", "a file, so no directory can be made under it")
  end)
  lazy_teardown(function() stop(srv) end)

  it("a failed Maildir delivery is queued (250) without paths or local parts in the reply; the log has them", function()
    local c = client.open(srv.port)
    c:expect(220)
    c:check("EHLO view.test", 250)
    local code, text = send_message(c, "secretuser@bad.test", "Subject: x\r\n\r\nhi\r\n.\r\n")
    assert.equals(250, code, text)
    assert.truthy(text:match("^250 2%.0%.0 Message accepted: queued as %x+$"), text)
    assert.truthy(srv:wait_log("delivery_failed.-blocker/secretuser", 5), srv:describe())
    -- the queue tries again and keeps the reason in its log only
    assert.truthy(srv:wait_log("event=deferred .-blocker/secretuser", 5), srv:describe())
    c:close()
  end)

  it("a/b and a_b land in two Maildirs", function()
    local c = client.open(srv.port)
    c:expect(220)
    c:check("EHLO view.test", 250)
    local code, text = send_message(c, "a/b@good.test", "Subject: slash\r\n\r\nhi\r\n.\r\n")
    assert.equals(250, code, text)
    code, text = send_message(c, "a_b@good.test", "Subject: underscore\r\n\r\nhi\r\n.\r\n")
    assert.equals(250, code, text)
    c:close()
    local slash = harness.list_dir(srv.dir .. "/boxes/a%2Fb/new")
    local under = harness.list_dir(srv.dir .. "/boxes/a_b/new")
    assert.equals(1, #slash)
    assert.equals(1, #under)
    assert.truthy(harness.read_file(srv.dir .. "/boxes/a%2Fb/new/" .. slash[1]):find("Subject: slash", 1, true))
  end)
end)

describe("limits.bare_cr", function()
  local BODY = "Subject: cr\r\n\r\nline with a bare\rCR\r\n.\r\n"

  it("accept (the default) stores a message with a bare CR", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"
function kurir.on.data() return 250 end
]] }
    local c = client.open(srv.port)
    c:expect(220)
    c:check("EHLO view.test", 250)
    local code, text = send_message(c, "b@view.test", BODY)
    assert.equals(250, code, text)
    c:close()
    stop(srv)
  end)

  it("reject refuses it with 554 5.6.0", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { limits = { bare_cr = "reject" } }
function kurir.on.data() return 250 end
]] }
    local c = client.open(srv.port)
    c:expect(220)
    c:check("EHLO view.test", 250)
    local code, text = send_message(c, "b@view.test", BODY)
    assert.equals(554, code, text)
    assert.equals("554 5.6.0 Message contains bare CR (not part of CRLF); fix the client", text)
    code, text = send_message(c, "b@view.test", "Subject: fine\r\n\r\nno CR here\r\n.\r\n")
    assert.equals(250, code, text)
    c:close()
    stop(srv)
  end)
end)

describe("the spool", function()
  it("on tmpfs gives a warning at start", function()
    local p = io.popen("stat -f -c %T /dev/shm 2>/dev/null")
    local fs = p:read("l")
    p:close()
    if fs ~= "tmpfs" then pending("/dev/shm is not tmpfs here") return end
    local srv = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { spool = "/dev/shm" }
]] }
    assert.truthy(srv:wait_log("spool_on_tmpfs dir=/dev/shm", 5), srv:describe())
    stop(srv)
  end)

  it("below limits.spool_reserve refuses a message with 452 4.3.1", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { limits = { spool_reserve = math.maxinteger } }
function kurir.on.data() return 250 end
]] }
    local c = client.open(srv.port)
    c:expect(220)
    c:check("EHLO view.test", 250)
    c:check("MAIL FROM:<a@view.test>", 452, "452 4.3.1 Insufficient system storage, try again later")
    assert.truthy(srv:wait_log("spool_full", 5))
    c:close()
    stop(srv)
  end)
end)
