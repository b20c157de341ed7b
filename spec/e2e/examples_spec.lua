-- End to end: every script in scripts/examples runs in a real kurir (its
-- listeners replaced with -l), driven by a real client, and does what its
-- header comment says. Relative Maildirs ("mail/...") land in the server's
-- directory, its working directory.

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"
local certs = require "certs"

local q = harness.quote
local HELPER = harness.root .. "/spec/support/smtplib_tls.py"

teardown(harness.cleanup)

local function session(port)
  local c = client.open(port)
  c:expect(220)
  local code, text = c:ehlo("examples.e2e.test")
  assert.equals(250, code, text)
  return c
end

local function data(c, subject)
  c:check("DATA", 354)
  assert(c:send("Subject: " .. subject .. "\r\n\r\nbody\r\n.\r\n"))
  return c:reply(10)
end

local function count(dir)
  return #harness.maildir_new(dir)
end

describe("scripts/examples/policy.lua", function()
  it("refuses other domains at RCPT, accepts its own and <postmaster>, stores per user", function()
    local srv = harness.start { script_file = "scripts/examples/policy.lua",
      args = { "example.test", "{dir}/mail/%{user}" } }
    local c = session(srv.port)
    c:check("MAIL FROM:<s@sender.test>", 250)
    local code, text = c:cmd("RCPT TO:<x@elsewhere.test>")
    assert.equals(550, code, text)
    assert.truthy(text:match("^550 5%.7%.1 Relaying denied"), text)
    c:check("RCPT TO:<alice@Example.TEST>", 250)
    c:check("RCPT TO:<postmaster>", 250)
    code, text = data(c, "policy")
    assert.equals(250, code, text)
    assert.equals(1, count(srv.dir .. "/mail/alice"))
    assert.equals(1, count(srv.dir .. "/mail/postmaster"))
    c:check("QUIT", 221)
    harness.finish(srv)
  end)
end)

describe("scripts/examples/routes.lua", function()
  it("routes per domain at RCPT, refuses unknown domains, delivers once per route", function()
    local srv = harness.start { script_file = "scripts/examples/routes.lua" }
    local c = session(srv.port)
    c:check("MAIL FROM:<s@sender.test>", 250)
    local code, text = c:cmd("RCPT TO:<x@nowhere.test>")
    assert.equals(550, code, text)
    assert.truthy(text:match("^550 5%.1%.1 No such domain"), text)
    c:check("RCPT TO:<ann@example.test>", 250)
    c:check("RCPT TO:<dev@lists.example.test>", 250)
    c:check("RCPT TO:<ops@lists.example.test>", 250)
    c:check("RCPT TO:<bo@customers.test>", 250)
    c:check("RCPT TO:<postmaster>", 250)
    code, text = data(c, "routes")
    assert.equals(250, code, text)
    local mail = srv.dir .. "/mail"
    assert.equals(1, count(mail .. "/example.test/ann"))
    assert.equals(1, count(mail .. "/lists"))   -- two recipients, one route, one copy
    assert.equals(1, count(mail .. "/customers/customers.test/bo"))
    assert.equals(1, count(mail .. "/postmaster"))
    c:check("QUIT", 221)
    harness.finish(srv)
  end)
end)

describe("scripts/examples/greylist.lua", function()
  it("greylists a new triplet until DELAY has passed, accepts <postmaster> at once, tarpits", function()
    local srv = harness.start { script_file = "scripts/examples/greylist.lua", args = { "1" } }
    local c = session(srv.port)
    c:check("MAIL FROM:<s@sender.test>", 250)
    c:check("RCPT TO:<postmaster>", 250)     -- RFC 5321 4.5.1
    local code, text = c:cmd("RCPT TO:<alice@example.test>")
    assert.equals(451, code, text)
    assert.truthy(text:match("^451 4%.7%.1 Greylisted, please try again in 1 seconds"), text)
    assert.truthy(srv:wait_log("event=greylisted[^\n]*to=alice@example.test"), srv:describe())
    -- retry until the delay is over (bounded)
    local accepted = harness.wait_for(function()
      local rc = c:cmd("RCPT TO:<alice@example.test>")
      return rc == 250
    end, 10, 0.2)
    assert.truthy(accepted, srv:describe())
    code, text = data(c, "greylist")
    assert.equals(250, code, text)
    assert.equals(1, count(srv.dir .. "/mail/alice"))
    assert.equals(1, count(srv.dir .. "/mail/postmaster"))
    -- an unknown user is refused, and the next answer is slowed down
    c:check("MAIL FROM:<s@sender.test>", 250)
    c:check("RCPT TO:<mallory@example.test>", 550)
    local t0 = socket.gettime()
    c:check("RCPT TO:<alice@example.test>", 250, nil, 10)
    assert.is_true(socket.gettime() - t0 >= 0.9, "no tarpit after an unknown recipient")
    c:check("QUIT", 221)
    harness.finish(srv)
  end)
end)

describe("scripts/examples/submission.lua", function()
  local dir, srv

  before_each(function()
    dir = harness.tmpdir()
    local c = certs.make(dir)
    harness.write_file(dir .. "/users", "# address secret\nsender@example.test s3cret\nalice@example.test pw\n")
    srv = harness.start { script_file = "scripts/examples/submission.lua", args = { c.cert, c.key, dir .. "/users" } }
  end)

  after_each(function()
    harness.finish(srv)
    harness.rmtree(dir)
  end)

  local function login(user, password, subject)
    local rc, out = harness.sh("python3 " .. q(HELPER) .. " login 127.0.0.1 " .. srv.port .. " starttls PLAIN " ..
      q(user) .. " " .. q(password) .. " " .. q(subject), 40)
    return rc, out
  end

  it("offers AUTH only after STARTTLS and requires it for MAIL", function()
    local c = session(srv.port)
    local _, ehlo = c:ehlo("examples.e2e.test")
    assert.truthy(ehlo:find("STARTTLS", 1, true), ehlo)
    assert.is_nil(ehlo:find("AUTH", 1, true), ehlo)
    local code, text = c:cmd("MAIL FROM:<sender@example.test>")
    assert.equals(530, code, text)
    c:check("QUIT", 221)
  end)

  it("lets a user send as themselves over TLS into mail/outbox", function()
    local rc, out = login("sender@example.test", "s3cret", "submitted")
    assert.equals(0, rc, out)
    assert.truthy(out:find("login=235", 1, true), out)
    assert.truthy(out:find("sendmail=ok", 1, true), out)
    assert.equals(1, count(srv.dir .. "/mail/outbox"))
  end)

  it("refuses a wrong password and a sender that is not the user", function()
    local rc, out = login("sender@example.test", "wrong", "x")
    assert.equals(0, rc, out)
    assert.truthy(out:find("login=535", 1, true), out)
    local _, out2 = login("alice@example.test", "pw", "not mine")
    assert.truthy(out2:find("login=235", 1, true), out2)
    assert.truthy(out2:find("553", 1, true) and out2:find("You may only send as alice@example.test", 1, true), out2)
    assert.equals(0, count(srv.dir .. "/mail/outbox"))
  end)
end)
