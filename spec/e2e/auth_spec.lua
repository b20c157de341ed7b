-- End to end: AUTH (RFC 4954) with PLAIN, LOGIN and CRAM-MD5 and the Lua
-- auth hook (issue 3, SPEC 2.3 and 3): the wire protocol over a raw socket
-- on a plaintext listener (auth.plaintext = true), then real clients
-- (Python smtplib, swaks) over STARTTLS and implicit TLS; a kurir.cred kept
-- by the script is closed with its session.
--
-- The site script checks every mechanism with cred:verify(users[cred.user])
-- and logs what its hooks saw; certificates are made by certs.make() in a
-- temporary directory.

local harness = require "harness"
local client = require "smtp_client"
local certs = require "certs"

local HOST = "mx.e2e.test"
local HELPER = harness.root .. "/spec/support/smtplib_tls.py"
local q = harness.quote

-- arg: dir cert key plaintext(yes/no) required(yes/no) errors mechanisms(comma list or "")
local AUTH_SCRIPT = [==[
local kurir = require "kurir"
local dir, cert, key = arg[1], arg[2], arg[3]
local cfg = {
  hostname = "mx.e2e.test",
  auth = { plaintext = arg[4] == "yes", required = arg[5] == "yes" },
  limits = { errors = tonumber(arg[6]) },
}
if cert ~= "" then cfg.tls = { cert = cert, key = key } end
if arg[7] and arg[7] ~= "" then
  local m = {}
  for name in arg[7]:gmatch("[^,]+") do m[#m + 1] = name end
  cfg.auth.mechanisms = m
end
kurir.configure(cfg)

local users = { alice = "wonderland", ["bob@example.test"] = "s3cret pass" }

function kurir.on.auth(s, cred)
  s:log("auth_hook", { mechanism = cred.mechanism, user = cred.user,
                       has_password = tostring(cred.password ~= nil),
                       tls = tostring(s.tls ~= nil) })
  if cred.user == "custom" then return 535, "5.7.8 Custom refusal" end
  if cred.user == "later" then return 454, "4.7.0 Try again later" end
  local secret = users[cred.user]
  if not secret then return false end
  return cred:verify(secret)
end

function kurir.on.mail(s, from)
  s:log("mail_hook", { auth = from.params.AUTH or "(none)", user = s.user or "(none)" })
end

function kurir.on.rcpt(s, rcpt)
  rcpt.route = kurir.maildir(dir .. "/mail")
end
]==]

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for k = 3, 0, -1 do
      local v = (n >> (6 * k)) & 63
      chars[#chars + 1] = B64:sub(v + 1, v + 1)
    end
    if not b then chars[3], chars[4] = "=", "=" elseif not c then chars[4] = "=" end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

local function unb64(s)
  s = s:gsub("=", "")
  local bits, out = 0, {}
  local acc = 0
  for i = 1, #s do
    local v = B64:find(s:sub(i, i), 1, true)
    assert(v, "bad base64 from the server: " .. s)
    acc = (acc << 6) | (v - 1)
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char((acc >> bits) & 255)
    end
  end
  return table.concat(out)
end

-- HMAC-MD5 in hex, by the openssl command line (no HMAC in plain Lua).
local function hmac_md5(key, data)
  local rc, out = harness.sh("printf %s " .. q(data) .. " | openssl dgst -md5 -hmac " .. q(key), 20)
  assert(rc == 0, out)
  local hex = out:match("(%x+)%s*$")
  assert(hex and #hex == 32, "cannot parse openssl dgst output: " .. out)
  return hex:lower()
end

local function session(port)
  local c = client.open(port)
  c:expect(220, "220 " .. HOST .. " ESMTP kurir")
  local code, text, _, ext = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  return c, ext
end

local function parse_facts(out)
  local t = {}
  for line in out:gmatch("[^\n]+") do
    local k, v = line:match("^([%w._]+)=(.*)$")
    if k then t[k] = v end
  end
  return t
end

local function py(...)
  local args = { ... }
  for i, a in ipairs(args) do args[i] = q(a) end
  local rc, out = harness.sh("python3 " .. q(HELPER) .. " " .. table.concat(args, " "), 40)
  return rc, parse_facts(out), out
end

local function count(text, needle)
  local n, i = 0, 1
  while true do
    local j = text:find(needle, i, true)
    if not j then return n end
    n, i = n + 1, j + 1
  end
end

local function stored(dir, needle)
  local found = {}
  for _, f in ipairs(harness.maildir_new(dir .. "/mail")) do
    local data = harness.read_file(f)
    if data and data:find(needle, 1, true) then found[#found + 1] = data end
  end
  return found
end

local function assert_no_secrets(log)
  assert.falsy(log:find("wonderland", 1, true), "password in the log:\n" .. log)
  assert.falsy(log:find("s3cret", 1, true), "password in the log:\n" .. log)
  assert.falsy(log:find("wrong-pass", 1, true), "password in the log:\n" .. log)
  assert.falsy(log:find(b64("\0alice\0wonderland"), 1, true), "PLAIN response in the log:\n" .. log)
end

describe("AUTH protocol over a plaintext listener (auth.plaintext = true)", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = AUTH_SCRIPT, args = { "{dir}", "", "", "yes", "no", "3", "" } }
  end)

  lazy_teardown(function()
    assert_no_secrets(srv:log())
    harness.finish(srv)
  end)

  it("advertises AUTH with every mechanism, in order", function()
    local c, ext = session(srv.port)
    assert.equals("PLAIN LOGIN CRAM-MD5", ext.AUTH)
    assert.is_nil(ext.STARTTLS)
    c:close()
  end)

  it("PLAIN with an initial response: 235, s.user set, logged without the password", function()
    local c = session(srv.port)
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 235, "235 2.7.0 Authentication successful")
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("QUIT", 221)
    c:close()
    assert.truthy(srv:wait_log("event=auth_hook[^\n]*has_password=true[^\n]*mechanism=PLAIN[^\n]*user=alice"),
      srv:describe())
    assert.truthy(srv:wait_log("event=mail_hook[^\n]*user=alice"), srv:describe())
    assert.truthy(srv:wait_log("event=auth mechanism=PLAIN user=alice result=ok"), srv:describe())
  end)

  it("PLAIN with an authorization identity and a password containing a space", function()
    local c = session(srv.port)
    c:check("AUTH PLAIN " .. b64("bob@example.test\0bob@example.test\0s3cret pass"), 235,
      "235 2.7.0 Authentication successful")
    c:close()
  end)

  it("PLAIN without an initial response: empty 334 challenge, then the response", function()
    local c = session(srv.port)
    local code, text = c:cmd("AUTH PLAIN")
    assert.equals(334, code, text)
    assert.truthy(text == "334 " or text == "334", "expected an empty challenge, got " .. text)
    c:check(b64("\0alice\0wonderland"), 235, "235 2.7.0 Authentication successful")
    c:close()
  end)

  it("an empty initial response '=' is an empty message, not a request for a challenge", function()
    local c = session(srv.port)
    local code, text = c:cmd("AUTH PLAIN =")
    assert.equals(501, code, text)
    -- the session is in step: a correct AUTH still works
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 235, "235 2.7.0 Authentication successful")
    c:close()
  end)

  it("LOGIN in two steps with the standard prompts", function()
    local c = session(srv.port)
    c:check("AUTH LOGIN", 334, "334 " .. b64("Username:"))
    c:check(b64("alice"), 334, "334 " .. b64("Password:"))
    c:check(b64("wonderland"), 235, "235 2.7.0 Authentication successful")
    c:close()
    assert.truthy(srv:wait_log("event=auth_hook[^\n]*has_password=true[^\n]*mechanism=LOGIN[^\n]*user=alice"),
      srv:describe())
  end)

  it("LOGIN with the user name as initial response", function()
    local c = session(srv.port)
    c:check("AUTH LOGIN " .. b64("alice"), 334, "334 " .. b64("Password:"))
    c:check(b64("wonderland"), 235, "235 2.7.0 Authentication successful")
    c:close()
  end)

  it("CRAM-MD5: the engine makes the challenge and cred:verify checks the digest", function()
    local c = session(srv.port)
    local code, text = c:cmd("AUTH CRAM-MD5")
    assert.equals(334, code, text)
    local challenge = unb64(text:sub(5))
    assert.truthy(challenge:match("^<.+@.+>$"), "challenge is not a msg-id: " .. challenge)
    c:check(b64("alice " .. hmac_md5("wonderland", challenge)), 235, "235 2.7.0 Authentication successful")
    c:check("MAIL FROM:<a@example.test>", 250)
    c:close()
    assert.truthy(srv:wait_log("event=auth_hook[^\n]*has_password=false[^\n]*mechanism=CRAM%-MD5[^\n]*user=alice"),
      srv:describe())
  end)

  it("CRAM-MD5 challenges differ between sessions", function()
    local seen = {}
    for _ = 1, 3 do
      local c = session(srv.port)
      local code, text = c:cmd("AUTH CRAM-MD5")
      assert.equals(334, code, text)
      assert.is_nil(seen[text], "challenge repeated: " .. text)
      seen[text] = true
      c:check("*", 501)
      c:close()
    end
  end)

  it("CRAM-MD5 with a digest made from the wrong secret: 535 5.7.8", function()
    local c = session(srv.port)
    assert(c:send("AUTH CRAM-MD5\r\n"))
    local text = c:expect(334)
    local challenge = unb64(text:sub(5))
    c:check(b64("alice " .. hmac_md5("wrong-pass", challenge)), 535,
      "535 5.7.8 Authentication credentials invalid")
    c:close()
  end)

  it("wrong PLAIN password: 535 5.7.8, logged as failed, no password in the log", function()
    local c = session(srv.port)
    c:check("AUTH PLAIN " .. b64("\0alice\0wrong-pass"), 535, "535 5.7.8 Authentication credentials invalid")
    -- not authenticated: a second AUTH is allowed
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 235)
    c:close()
    assert.truthy(srv:wait_log("event=auth mechanism=PLAIN user=alice result=failed"), srv:describe())
    assert_no_secrets(srv:log())
  end)

  it("the auth hook may return its own code and text", function()
    local c = session(srv.port)
    c:check("AUTH PLAIN " .. b64("\0custom\0x"), 535, "535 5.7.8 Custom refusal")
    c:check("AUTH PLAIN " .. b64("\0later\0x"), 454, "454 4.7.0 Try again later")
    c:close()
  end)

  it("'*' cancels: 501 5.0.0", function()
    local c = session(srv.port)
    c:check("AUTH LOGIN", 334)
    c:check("*", 501, "501 5.0.0 Authentication cancelled")
    c:check("NOOP", 250)
    c:close()
  end)

  it("malformed base64: 501 5.5.2", function()
    local c = session(srv.port)
    c:check("AUTH PLAIN not*base64!", 501, "501 5.5.2 Cannot decode response")
    c:check("AUTH LOGIN", 334)
    c:check("@@@@", 501, "501 5.5.2 Cannot decode response")
    c:close()
  end)

  it("AUTH twice: 503", function()
    local c = session(srv.port)
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 235)
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 503, "503 5.5.1 Already authenticated")
    c:close()
  end)

  it("AUTH inside a mail transaction: 503", function()
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 503)
    c:check("RSET", 250)
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 235)
    c:close()
  end)

  it("AUTH before EHLO: 503", function()
    local c = client.open(srv.port)
    c:expect(220)
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 503)
    c:close()
  end)

  it("unknown mechanism: 504 5.5.4", function()
    local c = session(srv.port)
    c:check("AUTH DIGEST-MD5", 504, "504 5.5.4 Unrecognized authentication mechanism")
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 235)
    c:close()
  end)

  it("failed attempts count toward the error limit (errors = 3): 421 after the third", function()
    local c = session(srv.port)
    c:check("AUTH PLAIN " .. b64("\0alice\0bad1"), 535)
    c:check("AUTH PLAIN " .. b64("\0alice\0bad2"), 535)
    c:check("AUTH PLAIN " .. b64("\0alice\0bad3"), 535)
    c:expect(421, "421 4.7.0 " .. HOST .. " Too many errors, closing connection")
    assert.is_true(c:closed(5))
    c:close()
    assert.truthy(srv:wait_log("event=too_many_errors"), srv:describe())
  end)

  it("MAIL FROM ... AUTH=<> is accepted and visible in the mail hook", function()
    local c = session(srv.port)
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 235)
    c:check("MAIL FROM:<a@example.test> AUTH=<>", 250)
    c:check("RSET", 250)
    c:check("MAIL FROM:<a@example.test> AUTH=alice+2Bx@example.test", 250)
    c:close()
    assert.truthy(srv:wait_log("event=mail_hook auth=<> user=alice"), srv:describe())
    assert.truthy(srv:wait_log("event=mail_hook auth=alice%+x@example.test user=alice") or
      srv:wait_log("event=mail_hook auth=alice%+2Bx@example.test user=alice"), srv:describe())
  end)

  it("Received header records ESMTPA for an authenticated session without TLS", function()
    local c = session(srv.port)
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 235)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<r@example.test>", 250)
    c:check("DATA", 354)
    c:check("Subject: esmtpa check\r\n\r\nbody\r\n.", 250)
    c:close()
    local found = stored(srv.dir, "Subject: esmtpa check")
    assert.equals(1, #found)
    assert.truthy(found[1]:find("with ESMTPA id ", 1, true), found[1])
  end)
end)

describe("AUTH policy", function()
  local c_dir, crt

  lazy_setup(function()
    c_dir = harness.tmpdir()
    crt = certs.make(c_dir)
  end)

  lazy_teardown(function()
    harness.rmtree(c_dir)
  end)

  it("auth.required: MAIL before AUTH gets 530 5.7.0, then works after AUTH", function()
    local srv = harness.start { script = AUTH_SCRIPT, args = { "{dir}", "", "", "yes", "yes", "10", "" } }
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 530, "530 5.7.0 Authentication required")
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 235)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<r@example.test>", 250)
    c:close()
    harness.finish(srv)
  end)

  it("without TLS and without plaintext: AUTH not advertised, AUTH -> 538 5.7.11", function()
    local srv = harness.start { script = AUTH_SCRIPT, args = { "{dir}", crt.cert, crt.key, "no", "no", "10", "" } }
    local c, ext = session(srv.port)
    assert.is_nil(ext.AUTH)
    assert.is_not_nil(ext.STARTTLS)
    c:check("AUTH PLAIN " .. b64("\0alice\0wonderland"), 538,
      "538 5.7.11 Encryption required for requested authentication mechanism")
    c:check("MAIL FROM:<a@example.test>", 250)
    c:close()
    harness.finish(srv)
  end)

  it("auth.required without TLS and without plaintext is refused by --check", function()
    local rc, out = harness.run { script = AUTH_SCRIPT,
      args = { "--check", "{script}", "{dir}", "", "", "no", "yes", "10", "" } }
    assert.equals(1, rc, out)
    assert.truthy(out:find("required", 1, true), out)
  end)

  it("a mechanism not in auth.mechanisms is not advertised and refused with 504", function()
    local srv = harness.start { script = AUTH_SCRIPT, args = { "{dir}", "", "", "yes", "no", "10", "CRAM-MD5,PLAIN" } }
    local c, ext = session(srv.port)
    assert.equals("CRAM-MD5 PLAIN", ext.AUTH)
    c:check("AUTH LOGIN", 504, "504 5.5.4 Unrecognized authentication mechanism")
    c:close()
    harness.finish(srv)
  end)

  it("no auth hook: AUTH is not advertised even with plaintext allowed", function()
    local script = AUTH_SCRIPT:gsub("function kurir%.on%.auth.-\nend\n", "")
    assert.falsy(script:find("kurir.on.auth", 1, true))
    local srv = harness.start { script = script, args = { "{dir}", "", "", "yes", "no", "10", "" } }
    local c, ext = session(srv.port)
    assert.is_nil(ext.AUTH)
    local code = c:cmd("AUTH PLAIN " .. b64("\0alice\0wonderland"))
    assert.is_true(code == 502 or code == 503 or code == 504, "AUTH without a hook got " .. tostring(code))
    c:close()
    harness.finish(srv)
  end)
end)

describe("AUTH with real clients over TLS", function()
  local srv, c_dir, crt, smtps

  lazy_setup(function()
    c_dir = harness.tmpdir()
    crt = certs.make(c_dir)
    srv = harness.start {
      script = AUTH_SCRIPT,
      args = { "{dir}", crt.cert, crt.key, "no", "yes", "10", "" },
      listen = { "127.0.0.1:0", "smtps://127.0.0.1:0" },
    }
    smtps = srv.ports[2]
  end)

  lazy_teardown(function()
    if srv then assert_no_secrets(srv:log()) end
    harness.finish(srv)
    harness.rmtree(c_dir)
  end)

  for _, mech in ipairs { "PLAIN", "LOGIN", "CRAM-MD5" } do
    it("Python smtplib starttls() + login() with " .. mech .. " sends a message", function()
      local subject = "smtplib login " .. mech
      local rc, f, out = py("login", "127.0.0.1", srv.port, "starttls", mech, "alice", "wonderland", subject)
      assert.equals(0, rc, out)
      assert.equals("220", f.starttls, out)
      assert.equals("PLAIN LOGIN CRAM-MD5", f.advertised, out)
      assert.equals("235 2.7.0 Authentication successful", f.login, out)
      assert.equals("ok", f.sendmail, out)
      local found = stored(srv.dir, "Subject: " .. subject)
      assert.equals(1, #found)
      assert.truthy(found[1]:find("with ESMTPSA id ", 1, true), found[1])
      assert.truthy(srv:wait_log("event=auth_hook[^\n]*mechanism=" .. mech:gsub("%-", "%%-") ..
        "[^\n]*tls=true[^\n]*user=alice"), srv:describe())
    end)

    it("Python smtplib auth(" .. mech .. ") with a wrong password: 535, no password logged", function()
      local rc, f, out = py("auth", "127.0.0.1", srv.port, "starttls", mech, "alice", "wrong-pass")
      assert.equals(0, rc, out)
      assert.equals("535 5.7.8 Authentication credentials invalid", f.auth, out)
      assert.truthy(srv:wait_log("event=auth mechanism=" .. mech:gsub("%-", "%%-") .. " user=alice result=failed"),
        srv:describe())
      assert_no_secrets(srv:log())
    end)

    it("Python SMTP_SSL (implicit TLS) + auth(" .. mech .. ")", function()
      local rc, f, out = py("auth", "127.0.0.1", smtps, "ssl", mech, "bob@example.test", "s3cret pass")
      assert.equals(0, rc, out)
      assert.equals("235 2.7.0 Authentication successful", f.auth, out)
    end)
  end

  it("Python smtplib without AUTH on the submission policy: sendmail refused with 530", function()
    local rc, f, out = py("send", "127.0.0.1", srv.port, "starttls", "no auth")
    assert.equals(1, rc, out)
    assert.truthy(f.error and f.error:find("530", 1, true), out)
    assert.equals(0, #stored(srv.dir, "Subject: no auth"))
  end)

  local function swaks(args)
    return harness.sh("swaks --server 127.0.0.1:" .. args.port .. " " .. args.tls ..
      " --auth " .. args.mech .. " --auth-user " .. q(args.user) .. " --auth-password " .. q(args.password) ..
      " --to r@example.test --from s@example.test --header " .. q("Subject: " .. args.subject) ..
      " --body x --timeout 10", 40)
  end

  for _, mech in ipairs { "PLAIN", "LOGIN", "CRAM-MD5" } do
    it("swaks --tls --auth " .. mech .. " with the right password delivers", function()
      local subject = "swaks tls " .. mech
      local rc, out = swaks { port = srv.port, tls = "--tls", mech = mech, user = "alice", password = "wonderland",
        subject = subject }
      assert.equals(0, rc, out)
      assert.truthy(out:find("235 2.7.0", 1, true), out)
      local found = stored(srv.dir, "Subject: " .. subject)
      assert.equals(1, #found)
      assert.truthy(found[1]:find("with ESMTPSA id ", 1, true), found[1])
    end)

    it("swaks --tlsc --auth " .. mech .. " with the right password delivers", function()
      local subject = "swaks tlsc " .. mech
      local rc, out = swaks { port = smtps, tls = "--tlsc", mech = mech, user = "bob@example.test",
        password = "s3cret pass", subject = subject }
      assert.equals(0, rc, out)
      assert.equals(1, #stored(srv.dir, "Subject: " .. subject))
    end)

    it("swaks --tls --auth " .. mech .. " with a wrong password fails with 535", function()
      local subject = "swaks wrong " .. mech
      local rc, out = swaks { port = srv.port, tls = "--tls", mech = mech, user = "alice", password = "wrong-pass",
        subject = subject }
      -- swaks exits 28 when authentication fails
      assert.equals(28, rc, out)
      assert.truthy(out:find("535 5.7.8", 1, true), out)
      assert.equals(0, #stored(srv.dir, "Subject: " .. subject))
      -- the attempt is in the log (so the absence of the password means something)
      assert.truthy(srv:wait_log("event=auth mechanism=" .. mech:gsub("%-", "%%-") ..
        " user=alice result=failed"), srv:describe())
      assert_no_secrets(srv:log())
    end)
  end

  it("every session's auth is logged once per attempt, never with a password", function()
    local log = srv:log()
    assert.truthy(count(log, "event=auth mechanism=") >= 12, log)
    assert_no_secrets(log)
  end)
end)

describe("AUTH: a kurir.cred never outlives its session", function()
  local function ehlo_session(port)
    local c = client.open(port)
    c:expect(220)
    local code, text = c:ehlo("client.e2e.test")
    assert.equals(250, code, text)
    return c
  end

  local PLAIN_U_P = "AHUAcA=="   -- base64 of "\0u\0p" (AUTH PLAIN, user u, password p)

  it("a kurir.cred kept by the script is closed when its session is torn down mid-hook", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { auth = { plaintext = true }, timeouts = { shutdown = 0.3 } }
      local saved
      kurir.on.auth = function(s, cred)
        saved = cred
        s:log("auth_waits", {})
        kurir.sleep(5)
        return true
      end
      kurir.on.mail = function(s) s:log("mail_waits", {}) kurir.sleep(5) end
      kurir.on.disconnect = function(s)
        if saved then s:log("peek", { c = tostring(saved) }) end
      end
    ]] }
    -- the AUTH session is older, so the grace period closes it first
    local a = ehlo_session(srv.port)
    local a_id = harness.session_id(srv, a)
    assert(a:send("AUTH PLAIN " .. PLAIN_U_P .. "\r\n"))
    assert(srv:wait_log("event=auth_waits", 10), srv:describe())
    local m = ehlo_session(srv.port)
    local m_id = harness.session_id(srv, m)
    assert(m:send("MAIL FROM:<a@example.test>\r\n"))
    assert(srv:wait_log("event=mail_waits", 10), srv:describe())
    assert.is_true(srv:signal("TERM"))
    srv:exit_code(10)
    harness.assert_clean(srv)
    -- the MAIL session outlives the AUTH one: its disconnect hook must
    -- peek, and must see the cred closed
    assert.truthy(harness.wait_session_end(srv, a_id, 0), srv:describe())
    local peeks = harness.log_lines(srv, { event = "peek", session = m_id })
    assert.equals(1, #peeks, srv:describe())
    assert.equals("kurir.cred(closed)", peeks[1].fields.c, srv:describe())
    local a_end = srv:log():find("session=" .. a_id .. " event=session_end", 1, true)
    local m_peek = srv:log():find("session=" .. m_id .. " event=peek", 1, true)
    assert.truthy(a_end and m_peek and a_end < m_peek, "the AUTH session did not end first:\n" .. srv:describe())
    harness.finish(srv)
  end)
end)
