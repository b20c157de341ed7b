-- End to end: TLS (issue 3, SPEC 1 and 3): STARTTLS (RFC 3207) and its
-- injection defence (CVE-2011-0411), implicit TLS listeners (RFC 8314),
-- certificates and client certificates, bad TLS input and the handshake
-- timeout, the Received header's ESMTPS/ESMTPSA (RFC 3848), the session
-- reset after STARTTLS (an AUTH before TLS is forgotten, RFC 3207 4.2).
--
-- Real clients only for the TLS side (luasocket has no TLS): Python's ssl
-- and smtplib through spec/support/smtplib_tls.py, swaks, curl and
-- `openssl s_client`. Certificates are made by certs.make() in temporary
-- directories, never committed.

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"
local certs = require "certs"

local HOST = "mx.e2e.test"
local HELPER = harness.root .. "/spec/support/smtplib_tls.py"
local q = harness.quote

-- arg: dir cert key client_cert ca handshake_timeout
-- The starttls hook appends what it saw of s.tls to DIR/starttls, and
-- refuses the session when DIR/refuse exists.
local TLS_SCRIPT = [==[
local kurir = require "kurir"
local dir = arg[1]
local tls = { cert = arg[2], key = arg[3] }
if arg[4] and arg[4] ~= "" then tls.client_cert = arg[4] end
if arg[5] and arg[5] ~= "" then tls.ca = arg[5] end
kurir.configure {
  hostname = "mx.e2e.test",
  tls = tls,
  timeouts = { handshake = tonumber(arg[6] or "30") },
}

function kurir.on.starttls(s)
  local t = s.tls
  local f = assert(io.open(dir .. "/starttls", "ab"))
  f:write(("version=%s cipher=%s bits=%s subject=%s verified=%s helo=%s port=%s\n"):format(
    tostring(t and t.version), tostring(t and t.cipher), tostring(t and t.bits),
    tostring(t and t.subject), tostring(t and t.verified), tostring(s.helo), tostring(s.local_port)))
  f:close()
  local r = io.open(dir .. "/refuse", "rb")
  if r then
    r:close()
    return 554, "5.7.1 TLS session refused by policy"
  end
end

function kurir.on.helo(s, name)
  s:log("helo_hook", { name = name, tls = tostring(s.tls ~= nil) })
end

function kurir.on.rcpt(s, rcpt)
  rcpt.route = kurir.maildir(dir .. "/mail")
end
]==]

local PLAIN_SCRIPT = [==[
local kurir = require "kurir"
kurir.configure { hostname = "mx.e2e.test" }
]==]

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

local function session(port)
  local c = client.open(port)
  c:expect(220, "220 " .. HOST .. " ESMTP kurir")
  local code, text, _, ext = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  return c, ext
end

local function stored(maildir, needle)
  local found = {}
  for _, f in ipairs(harness.maildir_new(maildir)) do
    local data = harness.read_file(f)
    if data and data:find(needle, 1, true) then found[#found + 1] = data end
  end
  return found
end

local function lines_of(path)
  local t = {}
  for line in (harness.read_file(path) or ""):gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- A plain session on port works from greeting to QUIT.
local function plain_session_works(port)
  local c = session(port)
  c:check("NOOP", 250)
  c:check("QUIT", 221)
  c:close()
end

describe("STARTTLS", function()
  it("is not advertised without a certificate, and refused", function()
    local srv = harness.start { script = PLAIN_SCRIPT }
    local c, ext = session(srv.port)
    assert.is_nil(ext.STARTTLS)
    local code, text = c:cmd("STARTTLS")
    assert.is_true(code == 502 or code == 454, "STARTTLS without TLS got " .. tostring(text))
    c:check("NOOP", 250)
    c:close()
    harness.finish(srv)
  end)

  describe("with a certificate", function()
    local srv, c_dir, crt

    lazy_setup(function()
      c_dir = harness.tmpdir()
      crt = certs.make(c_dir)
      srv = harness.start { script = TLS_SCRIPT, args = { "{dir}", crt.cert, crt.key, "", "", "2" } }
    end)

    lazy_teardown(function()
      harness.finish(srv)
      harness.rmtree(c_dir)
    end)

    before_each(function()
      os.remove(srv.dir .. "/starttls")
      os.remove(srv.dir .. "/refuse")
    end)

    it("is advertised in clear; STARTTLS with an argument gets 501", function()
      local c, ext = session(srv.port)
      assert.is_not_nil(ext.STARTTLS)
      assert.is_nil(ext.AUTH)   -- no auth hook in this script
      c:check("STARTTLS now", 501)
      c:check("NOOP", 250)
      c:close()
    end)

    it("smtplib: starttls(), new EHLO over TLS without STARTTLS, STARTTLS again -> 503", function()
      local rc, f, out = py("features", "127.0.0.1", srv.port)
      assert.equals(0, rc, out)
      assert.is_not_nil(f["plain.starttls"], out)
      assert.equals("220", f.starttls, out)
      assert.truthy(f["tls.version"] == "TLSv1.3" or f["tls.version"] == "TLSv1.2", out)
      assert.equals("250", f.ehlo2, out)
      assert.is_nil(f["tls.starttls"], out)
      assert.is_not_nil(f["tls.pipelining"], out)
      assert.equals("503 5.5.1 TLS already active", f.starttls2, out)
      assert.equals("221", f.quit, out)
    end)

    it("the starttls hook runs after the handshake and sees s.tls (no client certificate)", function()
      local rc, f, out = py("features", "127.0.0.1", srv.port)
      assert.equals(0, rc, out)
      local seen = lines_of(srv.dir .. "/starttls")
      assert.equals(1, #seen, table.concat(seen, "\n"))
      local version = seen[1]:match("version=(%S+)")
      assert.equals(f["tls.version"], version)
      assert.truthy(seen[1]:match("cipher=[%w_%-]+ "), seen[1])
      assert.falsy(seen[1]:match("cipher=nil"), seen[1])
      local bits = tonumber(seen[1]:match("bits=(%d+)"))
      assert.truthy(bits and bits >= 128, seen[1])
      assert.truthy(seen[1]:find("subject=nil verified=false", 1, true), seen[1])
      -- the state was reset: the HELO name from before TLS is gone
      assert.truthy(seen[1]:find("helo=nil", 1, true), seen[1])
      assert.truthy(srv:wait_log("event=helo_hook name=smtplib.e2e.test tls=true"), srv:describe())
    end)

    it("the injection defence: a command pipelined after STARTTLS is discarded", function()
      local rc, f, out = py("inject", "127.0.0.1", srv.port)
      assert.equals(0, rc, out)
      assert.equals("220 2.0.0 Ready to start TLS", f.starttls, out)
      assert.is_not_nil(f["tls.version"], out)
      -- nothing answers the RSET that came in the same packet as STARTTLS
      assert.equals("nothing", f.after_handshake, out)
      -- the session was reset: MAIL needs a new EHLO
      assert.equals("503", f.mail_before_ehlo, out)
      assert.equals("250", f.ehlo2, out)
      assert.equals("no", f.ehlo2_starttls, out)
      assert.equals("250 2.0.0 OK", f.rset, out)
      assert.equals("221", f.quit, out)
    end)

    it("openssl s_client -starttls smtp completes and can talk SMTP", function()
      local rc, out = harness.sh("printf 'EHLO sclient.e2e.test\\nNOOP\\nQUIT\\n' | openssl s_client -starttls smtp" ..
        " -connect 127.0.0.1:" .. srv.port .. " -crlf -ign_eof -CAfile " .. q(crt.ca) ..
        " -verify_return_error -servername localhost 2>&1", 30)
      assert.equals(0, rc, out)
      assert.truthy(out:find("Verify return code: 0 (ok)", 1, true), out)
      assert.truthy(out:find("250 2.0.0 OK", 1, true), out)
      assert.truthy(out:find("221 2.0.0 Bye", 1, true), out)
      assert.truthy(out:find("250-" .. HOST, 1, true) or out:find("250 " .. HOST, 1, true), out)
    end)

    it("offers TLS 1.2 and refuses TLS 1.1", function()
      local rc, out = harness.sh("printf 'QUIT\\n' | openssl s_client -starttls smtp -tls1_2" ..
        " -connect 127.0.0.1:" .. srv.port .. " -crlf -ign_eof 2>&1", 30)
      assert.equals(0, rc, out)
      assert.truthy(out:find("Protocol%s*:%s*TLSv1%.2") or out:find("New, TLSv1.2", 1, true), out)
      rc, out = harness.sh("printf 'QUIT\\n' | openssl s_client -starttls smtp -tls1_1" ..
        " -cipher DEFAULT@SECLEVEL=0 -connect 127.0.0.1:" .. srv.port .. " -crlf -ign_eof 2>&1", 30)
      assert.are_not.equals(0, rc, out)
      assert.falsy(out:find("221 2.0.0 Bye", 1, true), out)
      plain_session_works(srv.port)
    end)

    it("the starttls hook can refuse: the reply is sent over TLS and the connection closed", function()
      harness.write_file(srv.dir .. "/refuse", "yes\n")
      local rc, out = harness.sh("printf 'EHLO x.e2e.test\\n' | openssl s_client -starttls smtp -quiet" ..
        " -connect 127.0.0.1:" .. srv.port .. " -crlf -ign_eof 2>&1", 30)
      os.remove(srv.dir .. "/refuse")
      local at = out:find("554 5.7.1 TLS session refused by policy", 1, true)
      assert.truthy(at, "rc " .. tostring(rc) .. ": " .. out)
      -- the refusal is the first and last thing said over TLS: no reply to the EHLO
      assert.truthy(out:sub(at):match("^554 5%.7%.1 TLS session refused by policy\r?\n?%s*$"), out)
      plain_session_works(srv.port)
    end)

    it("a client that sends garbage instead of a ClientHello after STARTTLS is closed", function()
      local c = session(srv.port)
      c:check("STARTTLS", 220, "220 2.0.0 Ready to start TLS")
      assert(c:send("this is not TLS at all\r\nEHLO x\r\n"))
      assert.is_true(c:closed(5))
      assert.falsy(c.buf:find("250", 1, true), c.buf)
      c:close()
      plain_session_works(srv.port)
    end)

    it("a client that never starts the handshake after STARTTLS is closed after timeouts.handshake", function()
      local c = session(srv.port)
      c:check("STARTTLS", 220)
      local t0 = socket.gettime()
      -- meanwhile, another session is served
      plain_session_works(srv.port)
      assert.is_false(c:closed(0.2))
      assert.is_true(c:closed(2 + 5))
      local took = socket.gettime() - t0
      assert.truthy(took >= 1.5 and took < 2 * harness.scale + 5, "closed after " .. took .. " s")
      c:close()
    end)
  end)
end)

describe("tls.required (a submission port)", function()
  -- arg: dir cert key. Messages go to DIR/mail.
  local REQUIRED_SCRIPT = [==[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure { hostname = "mx.e2e.test", tls = { cert = arg[2], key = arg[3], required = true } }
function kurir.on.rcpt(s, rcpt)
  rcpt.route = kurir.maildir(dir .. "/mail")
end
]==]
  local srv, c_dir

  lazy_setup(function()
    c_dir = harness.tmpdir()
    local crt = certs.make(c_dir)
    srv = harness.start { script = REQUIRED_SCRIPT, args = { "{dir}", crt.cert, crt.key } }
  end)

  lazy_teardown(function()
    harness.finish(srv)
    harness.rmtree(c_dir)
  end)

  it("in clear takes only EHLO, HELO, STARTTLS, NOOP, RSET and QUIT; other commands get 530 5.7.0", function()
    local c, ext = session(srv.port)
    assert.is_not_nil(ext.STARTTLS)
    local refused = "530 5.7.0 Must issue a STARTTLS command first"
    for _, cmd in ipairs { "MAIL FROM:<a@src.test>", "RCPT TO:<b@dst.test>", "DATA", "VRFY b",
                           "BDAT 3 LAST", "EXPN list" } do
      local code, text = c:cmd(cmd)
      assert.equals(530, code, cmd .. " -> " .. tostring(text))
      assert.equals(refused, text, cmd)
    end
    c:check("NOOP", 250)
    c:check("RSET", 250)
    c:check("HELO client.e2e.test", 250)
    c:check("QUIT", 221)
    c:close()
  end)

  it("after STARTTLS the same client sends a message (smtplib)", function()
    local rc, f, out = py("send", "127.0.0.1", srv.port, "starttls", "required e2e")
    assert.equals(0, rc, out)
    assert.equals("221", f.quit, out)
    assert.equals(1, #stored(srv.dir .. "/mail", "Subject: required e2e"), srv:describe())
  end)
end)

describe("implicit TLS and third-party clients (mock --tls)", function()
  local srv, smtps, maildir

  lazy_setup(function()
    srv = harness.start {
      script_file = "scripts/mock.lua",
      args = { "--tls", "--maildir", "{dir}/mail" },
      listen = { "127.0.0.1:0", "smtps://127.0.0.1:0" },
    }
    smtps = srv.ports[2]
    maildir = srv.dir .. "/mail"
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  it("the smtps port does not speak in clear: no greeting before a handshake", function()
    local c = client.open(smtps)
    -- the session exists (a plain one is greeted in the loop turn that
    -- logs its connect), and still nothing came
    assert.truthy(harness.session_id(srv, c), srv:describe())
    assert.is_false(c:readable(0.2 * harness.scale))
    c:close()
  end)

  it("EHLO over STARTTLS lists AUTH but not STARTTLS; in clear STARTTLS but not AUTH", function()
    local rc, f, out = py("features", "127.0.0.1", srv.port)
    assert.equals(0, rc, out)
    assert.is_not_nil(f["plain.starttls"], out)
    assert.is_nil(f["plain.auth"], out)
    assert.equals("PLAIN LOGIN CRAM-MD5", f["tls.auth"], out)
    assert.is_nil(f["tls.starttls"], out)
  end)

  it("Python SMTP_SSL sends a message on the smtps port; Received says ESMTPS", function()
    local rc, f, out = py("send", "127.0.0.1", smtps, "ssl", "smtp_ssl e2e")
    assert.equals(0, rc, out)
    assert.equals("ok", f.sendmail, out)
    local found = stored(maildir, "Subject: smtp_ssl e2e")
    assert.equals(1, #found)
    assert.truthy(found[1]:match("^Return%-Path: <sender@example%.test>\r\nDelivered%-To: rcpt@example%.test\r\n" ..
      "Received: from smtplib%.e2e%.test %(%[127%.0%.0%.1%]%)\r\n\tby [^\r\n]+ with ESMTPS id "), found[1])
  end)

  it("Python smtplib starttls() sends a message; Received says ESMTPS", function()
    local rc, f, out = py("send", "127.0.0.1", srv.port, "starttls", "starttls e2e")
    assert.equals(0, rc, out)
    assert.equals("220", f.starttls, out)
    local found = stored(maildir, "Subject: starttls e2e")
    assert.equals(1, #found)
    assert.truthy(found[1]:find("\r\nReceived: from smtplib.e2e.test ([127.0.0.1])\r\n\tby ", 1, true), found[1])
    assert.truthy(found[1]:find(" with ESMTPS id ", 1, true), found[1])
  end)

  it("Python smtplib login() over STARTTLS: Received says ESMTPSA, the mock logs user and mechanism", function()
    local rc, f, out = py("login", "127.0.0.1", srv.port, "starttls", "PLAIN", "dev@example.test", "pw-not-logged",
      "login e2e")
    assert.equals(0, rc, out)
    assert.equals("235 2.7.0 Authentication successful", f.login, out)
    local found = stored(maildir, "Subject: login e2e")
    assert.equals(1, #found)
    assert.truthy(found[1]:find(" with ESMTPSA id ", 1, true), found[1])
    assert.truthy(srv:wait_log("event=auth[^\n]*mechanism=PLAIN[^\n]*user=dev@example%.test"), srv:describe())
    assert.falsy(srv:log():find("pw-not-logged", 1, true), srv:describe())
  end)

  it("a plain session (no TLS) is recorded as ESMTP", function()
    local c = client.open(srv.port)
    c:expect(220)
    assert.equals(250, (c:ehlo("plain.e2e.test")))
    c:check("MAIL FROM:<p@example.test>", 250)
    c:check("RCPT TO:<r@example.test>", 250)
    c:check("DATA", 354)
    c:check("Subject: plain e2e\r\n\r\nx\r\n.", 250)
    c:close()
    local found = stored(maildir, "Subject: plain e2e")
    assert.equals(1, #found)
    assert.truthy(found[1]:find(" with ESMTP id ", 1, true), found[1])
  end)

  it("curl --ssl-reqd smtp:// (STARTTLS) delivers", function()
    local file = srv.dir .. "/curl1.eml"
    harness.write_file(file, "From: c@example.test\r\nSubject: curl starttls\r\n\r\nvia curl\r\n")
    local rc, out = harness.sh("curl -sS --ssl-reqd -k --max-time 20 smtp://127.0.0.1:" .. srv.port ..
      " --mail-from c@example.test --mail-rcpt r@example.test -T " .. q(file), 30)
    assert.equals(0, rc, out)
    local found = stored(maildir, "Subject: curl starttls")
    assert.equals(1, #found)
    assert.truthy(found[1]:find(" with ESMTPS id ", 1, true), found[1])
  end)

  it("curl smtps:// (implicit TLS) delivers", function()
    local file = srv.dir .. "/curl2.eml"
    harness.write_file(file, "From: c@example.test\r\nSubject: curl smtps\r\n\r\nvia curl\r\n")
    local rc, out = harness.sh("curl -sS -k --max-time 20 smtps://127.0.0.1:" .. smtps ..
      " --mail-from c@example.test --mail-rcpt r@example.test -T " .. q(file), 30)
    assert.equals(0, rc, out)
    assert.equals(1, #stored(maildir, "Subject: curl smtps"))
  end)

  it("curl smtps:// with --user authenticates (any credentials in the mock)", function()
    local file = srv.dir .. "/curl3.eml"
    harness.write_file(file, "From: c@example.test\r\nSubject: curl auth\r\n\r\nvia curl\r\n")
    local rc, out = harness.sh("curl -sS -k --max-time 20 smtps://127.0.0.1:" .. smtps ..
      " --user 'curluser:curlpass' --mail-from c@example.test --mail-rcpt r@example.test -T " .. q(file), 30)
    assert.equals(0, rc, out)
    local found = stored(maildir, "Subject: curl auth")
    assert.equals(1, #found)
    assert.truthy(found[1]:find(" with ESMTPSA id ", 1, true), found[1])
    assert.truthy(srv:wait_log("event=auth[^\n]*user=curluser"), srv:describe())
    assert.falsy(srv:log():find("curlpass", 1, true), srv:describe())
  end)

  it("openssl s_client -starttls smtp and plain s_client on the smtps port complete", function()
    local rc, out = harness.sh("printf 'EHLO s.e2e.test\\nQUIT\\n' | openssl s_client -starttls smtp" ..
      " -connect 127.0.0.1:" .. srv.port .. " -crlf -ign_eof 2>&1", 30)
    assert.equals(0, rc, out)
    assert.truthy(out:find("250-AUTH PLAIN LOGIN CRAM-MD5", 1, true), out)
    assert.truthy(out:find("221 2.0.0 Bye", 1, true), out)
    rc, out = harness.sh("printf 'EHLO s.e2e.test\\nQUIT\\n' | openssl s_client" ..
      " -connect 127.0.0.1:" .. smtps .. " -crlf -ign_eof 2>&1", 30)
    assert.equals(0, rc, out)
    assert.truthy(out:find("220 [^\n]* ESMTP kurir"), out)
    assert.truthy(out:find("250-AUTH PLAIN LOGIN CRAM-MD5", 1, true), out)
    assert.falsy(out:find("STARTTLS", 1, true), out)
    assert.truthy(out:find("221 2.0.0 Bye", 1, true), out)
  end)

  it("swaks --tls (STARTTLS) and --tlsc (implicit) deliver", function()
    local rc, out = harness.sh("swaks --server 127.0.0.1:" .. srv.port .. " --tls --to a@example.test" ..
      " --from b@example.test --header 'Subject: swaks tls' --body x --timeout 10", 30)
    assert.equals(0, rc, out)
    assert.truthy(out:find("220 2.0.0 Ready to start TLS", 1, true), out)
    rc, out = harness.sh("swaks --server 127.0.0.1:" .. smtps .. " --tlsc --to a@example.test" ..
      " --from b@example.test --header 'Subject: swaks tlsc' --body x --timeout 10", 30)
    assert.equals(0, rc, out)
    assert.equals(1, #stored(maildir, "Subject: swaks tls\r\n"))
    assert.equals(1, #stored(maildir, "Subject: swaks tlsc\r\n"))
  end)

  it("swaks --tls --auth with each mechanism is accepted and logged without the password", function()
    for _, mech in ipairs { "PLAIN", "LOGIN", "CRAM-MD5" } do
      local rc, out = harness.sh("swaks --server 127.0.0.1:" .. srv.port .. " --tls --auth " .. mech ..
        " --auth-user mockuser-" .. mech .. " --auth-password mock-secret --to a@example.test" ..
        " --from b@example.test --body x --timeout 10", 30)
      assert.equals(0, rc, out)
      assert.truthy(srv:wait_log("event=auth[^\n]*mechanism=" .. mech:gsub("%-", "%%-") ..
        "[^\n]*user=mockuser%-" .. mech:gsub("%-", "%%-")), srv:describe())
    end
    assert.falsy(srv:log():find("mock-secret", 1, true), srv:describe())
  end)
end)

describe("certificates", function()
  local c_dir, crt

  lazy_setup(function()
    c_dir = harness.tmpdir()
    crt = certs.make(c_dir)
  end)

  lazy_teardown(function()
    harness.rmtree(c_dir)
  end)

  local function check(cert, key)
    return harness.run { script = TLS_SCRIPT, args = { "--check", "{script}", "{dir}", cert, key } }
  end

  it("--check accepts a matching certificate and key", function()
    local rc, out = check(crt.cert, crt.key)
    assert.equals(0, rc, out)
  end)

  it("--check names a missing certificate file and exits 1", function()
    local missing = c_dir .. "/no-such-cert.pem"
    local rc, out = check(missing, crt.key)
    assert.equals(1, rc, out)
    assert.truthy(out:find(missing, 1, true), out)
  end)

  it("--check names a missing key file and exits 1", function()
    local missing = c_dir .. "/no-such-key.pem"
    local rc, out = check(crt.cert, missing)
    assert.equals(1, rc, out)
    assert.truthy(out:find(missing, 1, true), out)
  end)

  it("--check names the key that does not match the certificate and exits 1", function()
    local rc, out = check(crt.cert, crt.other_key)
    assert.equals(1, rc, out)
    assert.truthy(out:find(crt.other_key, 1, true), out)
  end)

  it("a key that does not match stops kurir at start-up too, naming the file", function()
    local rc, out = harness.run { script = TLS_SCRIPT,
      args = { "-l", "127.0.0.1:0", "{script}", "{dir}", crt.cert, crt.other_key } }
    assert.equals(1, rc, out)
    assert.truthy(out:find(crt.other_key, 1, true), out)
  end)

  it("a file that is not PEM at all is refused, naming it", function()
    local junk = c_dir .. "/junk.pem"
    harness.write_file(junk, "not a certificate\n")
    local rc, out = check(junk, crt.key)
    assert.equals(1, rc, out)
    assert.truthy(out:find(junk, 1, true), out)
  end)

  it("SIGHUP reloads the certificate files for new sessions", function()
    local n_dir = harness.tmpdir()
    local newer = certs.make(n_dir)
    local live = harness.tmpdir()
    local function install(c)
      local rc, out = harness.sh("cp " .. q(c.cert) .. " " .. q(live .. "/cert.pem") .. " && cp " .. q(c.key) ..
        " " .. q(live .. "/key.pem"), 10)
      assert.equals(0, rc, out)
    end
    -- the issuer the server presents, checked with s_client against a CA
    local function verifies_with(port, ca)
      local rc, out = harness.sh("printf 'QUIT\\n' | openssl s_client -starttls smtp -connect 127.0.0.1:" .. port ..
        " -crlf -ign_eof -verify_return_error -CAfile " .. q(ca) .. " 2>&1", 30)
      return rc == 0 and out:find("Verify return code: 0 (ok)", 1, true) ~= nil, out
    end
    install(crt)
    local srv = harness.start { script = TLS_SCRIPT, args = { "{dir}", live .. "/cert.pem", live .. "/key.pem" } }
    local ok, out = verifies_with(srv.port, crt.ca)
    assert.is_true(ok, out)
    ok, out = verifies_with(srv.port, newer.ca)
    assert.is_false(ok, out)
    install(newer)
    assert.is_true(srv:signal("HUP"))
    assert.truthy(srv:wait_log("event=reload"), srv:describe())
    ok, out = verifies_with(srv.port, newer.ca)
    assert.is_true(ok, out)
    harness.finish(srv)
    harness.rmtree(n_dir)
    harness.rmtree(live)
  end)

  describe("client certificates (client_cert = 'request', ca = CA)", function()
    local srv

    lazy_setup(function()
      srv = harness.start { script = TLS_SCRIPT, args = { "{dir}", crt.cert, crt.key, "request", crt.ca, "5" } }
    end)

    lazy_teardown(function()
      harness.finish(srv)
    end)

    before_each(function()
      os.remove(srv.dir .. "/starttls")
    end)

    it("a client presenting a certificate: subject and verified = true in the starttls hook", function()
      local rc, f, out = py("client_cert", "127.0.0.1", srv.port, crt.client_cert, crt.client_key)
      assert.equals(0, rc, out)
      assert.equals("220", f.starttls, out)
      assert.equals("250", f.ehlo2, out)
      local seen = lines_of(srv.dir .. "/starttls")
      assert.equals(1, #seen)
      assert.truthy(seen[1]:find("client.test", 1, true), seen[1])
      assert.truthy(seen[1]:find("kurir tests", 1, true), seen[1])
      assert.truthy(seen[1]:find("verified=true", 1, true), seen[1])
      assert.truthy(srv:wait_log("event=tls [^\n]*client_subject=\"?[^\n]*client%.test"), srv:describe())
    end)

    it("a client without a certificate is still served (request, not require)", function()
      local rc, f, out = py("features", "127.0.0.1", srv.port)
      assert.equals(0, rc, out)
      assert.equals("250", f.ehlo2, out)
      local seen = lines_of(srv.dir .. "/starttls")
      assert.equals(1, #seen)
      assert.truthy(seen[1]:find("subject=nil verified=false", 1, true), seen[1])
    end)

    it("a certificate from another CA is not reported as verified", function()
      local o_dir = harness.tmpdir()
      local other = certs.make(o_dir)
      local rc, f, out = py("client_cert", "127.0.0.1", srv.port, other.client_cert, other.client_key)
      harness.rmtree(o_dir)
      -- "request" makes the certificate optional: the session goes on, unverified
      assert.equals(0, rc, out)
      assert.equals("250", f.ehlo2, out)
      local seen = lines_of(srv.dir .. "/starttls")
      assert.equals(1, #seen, out)
      assert.truthy(seen[1]:find("verified=false", 1, true), seen[1])
      plain_session_works(srv.port)
    end)
  end)

  it("client_cert = 'require': a client without a certificate fails the handshake, others go on", function()
    local srv = harness.start { script = TLS_SCRIPT, args = { "{dir}", crt.cert, crt.key, "require", crt.ca, "5" } }
    local rc, f, out = py("features", "127.0.0.1", srv.port)
    assert.are_not.equals(0, rc, out)
    assert.is_nil(f.ehlo2, out)
    assert.falsy(harness.exists(srv.dir .. "/starttls"))
    rc, f, out = py("client_cert", "127.0.0.1", srv.port, crt.client_cert, crt.client_key)
    assert.equals(0, rc, out)
    assert.equals("250", f.ehlo2, out)
    assert.truthy((harness.read_file(srv.dir .. "/starttls") or ""):find("verified=true", 1, true))
    harness.finish(srv)
  end)
end)

describe("bad TLS input on an implicit-TLS listener (timeouts.handshake = 2)", function()
  local srv, c_dir, crt, plain, smtps

  lazy_setup(function()
    c_dir = harness.tmpdir()
    crt = certs.make(c_dir)
    srv = harness.start {
      script = TLS_SCRIPT,
      args = { "{dir}", crt.cert, crt.key, "", "", "2" },
      listen = { "smtps://127.0.0.1:0", "127.0.0.1:0" },
    }
    smtps, plain = srv.ports[1], srv.ports[2]
  end)

  lazy_teardown(function()
    harness.finish(srv)
    harness.rmtree(c_dir)
  end)

  local function tls_session_works()
    local rc, f, out = py("send", "127.0.0.1", smtps, "ssl", "after bad input")
    assert.equals(0, rc, out)
    assert.equals("ok", f.sendmail, out)
  end

  it("garbage instead of a ClientHello: the connection is closed, the server serves on", function()
    local c = client.open(smtps)
    assert(c:send("EHLO garbage.e2e.test\r\nMAIL FROM:<x@example.test>\r\n"))
    assert.is_true(c:closed(5))
    assert.falsy(c.buf:find("250", 1, true), c.buf)
    c:close()
    local c2 = client.open(smtps)
    assert(c2:send(string.rep("\255\0\22\3", 2000)))
    assert.is_true(c2:closed(5))
    c2:close()
    tls_session_works()
    plain_session_works(plain)
  end)

  it("a client that connects and sends nothing is closed after the handshake timeout", function()
    local c = client.open(smtps)
    local t0 = socket.gettime()
    -- meanwhile, other sessions are served
    tls_session_works()
    plain_session_works(plain)
    assert.is_true(c:closed(2 * harness.scale + 5))
    local took = socket.gettime() - t0
    assert.truthy(took >= 1.5, "closed after only " .. took .. " s")
    c:close()
    assert.truthy(srv:wait_log("event=tls_timeout"), srv:describe())
  end)

  it("a client that stops in the middle of its ClientHello is closed after the timeout", function()
    local c = client.open(smtps)
    -- a TLS handshake record header announcing 512 bytes, then 10 of them
    assert(c:send("\22\3\1\2\0" .. "\1\0\1\252\3\3\0\0\0\0"))
    local t0 = socket.gettime()
    plain_session_works(plain)
    assert.is_false(c:closed(0.5))
    assert.is_true(c:closed(2 * harness.scale + 5))
    local took = socket.gettime() - t0
    assert.truthy(took >= 1.2, "closed after only " .. took .. " s")
    c:close()
  end)

  it("a handshake that never finishes (no client Finished) is closed after the timeout", function()
    local rc, f, out = py("stall", "127.0.0.1", smtps)
    assert.equals(0, rc, out)
    assert.truthy(tonumber(f.server_bytes) > 0, out)   -- the server answered the ClientHello
    local took = tonumber(f.closed_after)
    assert.truthy(took, "never closed: " .. out)
    assert.truthy(took >= 1.2 and took <= 2 * harness.scale + 5, out)
    tls_session_works()
  end)

  it("many bad connections at once do not disturb a good session", function()
    local bad = {}
    for i = 1, 10 do
      bad[i] = client.open(smtps)
      if i % 2 == 0 then assert(bad[i]:send("\22\3\1\0\5hello")) end
    end
    tls_session_works()
    plain_session_works(plain)
    for i = 1, 10 do
      assert.is_true(bad[i]:closed(2 * harness.scale + 5))
      bad[i]:close()
    end
    harness.assert_clean(srv)
  end)
end)

describe("STARTTLS resets the session; AUTH details over TLS", function()
  local TLS_HELPER = harness.root .. "/spec/support/conformance_tls.py"

  local srv, cdir

  lazy_setup(function()
    cdir = harness.tmpdir()
    local crt = certs.make(cdir)
    srv = harness.start { args = { crt.cert, crt.key }, script = [==[
local kurir = require "kurir"
kurir.configure { hostname = "mx.conf.test", tls = { cert = arg[1], key = arg[2] } }
function kurir.on.auth(s, cred) return cred:verify("secret") end
function kurir.on.data() return 250 end
]==] }
  end)

  lazy_teardown(function()
    harness.finish(srv)
    harness.rmtree(cdir)
  end)

  -- Run the helper; returns the list of output lines.
  local function talk(...)
    local args = {}
    for i, a in ipairs { ... } do args[i] = q(a) end
    local rc, out = harness.sh("python3 " .. q(TLS_HELPER) .. " " .. srv.port .. " " .. table.concat(args, " "), 60)
    assert.equals(0, rc, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    return lines, out
  end

  it("after STARTTLS the session is reset: MAIL before a new EHLO gets 503", function()
    local l, out = talk("EHLO c.conf.test", "STARTTLS", "MAIL FROM:<a@conf.test>", "EHLO c.conf.test",
      "MAIL FROM:<a@conf.test>")
    assert.truthy(l[3]:match("^220|"), out)
    assert.truthy(l[4]:match("^TLS|TLSv1%.[23]$"), out)
    assert.truthy(l[5]:match("^503|"), out)
    assert.truthy(l[6]:match("^250|"), out)
    assert.falsy(l[6]:find("STARTTLS", 1, true), out)
    assert.truthy(l[6]:find("AUTH PLAIN LOGIN CRAM-MD5", 1, true), out)
    assert.truthy(l[7]:match("^250|"), out)
  end)

  it("STARTTLS inside a mail transaction is refused with 503", function()
    local l, out = talk("EHLO c.conf.test", "MAIL FROM:<a@conf.test>", "STARTTLS", "NOOP")
    assert.truthy(l[4]:match("^503|"), out)
    assert.truthy(l[5]:match("^250|"), out)
  end)

  it("AUTH LOGIN cancelled at the password prompt: 501, then AUTH works", function()
    local user = "Ym9i"                         -- bob
    local good = "AGJvYgBzZWNyZXQ="             -- \0bob\0secret
    local l, out = talk("EHLO c.conf.test", "STARTTLS", "EHLO c.conf.test", "AUTH LOGIN", user, "*",
      "AUTH PLAIN " .. good, "AUTH PLAIN " .. good)
    assert.equals("334|334 VXNlcm5hbWU6", l[6], out)
    assert.equals("334|334 UGFzc3dvcmQ6", l[7], out)
    assert.truthy(l[8]:match("^501|501 5%.%d+%.%d+ "), out)
    assert.truthy(l[9]:match("^235|235 2%.7%.0 "), out)
    assert.truthy(l[10]:match("^503|"), out)
  end)

  it("a wrong password counts as an error and gets 535 5.7.8", function()
    local bad = "AGJvYgB3cm9uZw=="               -- \0bob\0wrong
    local l, out = talk("EHLO c.conf.test", "STARTTLS", "EHLO c.conf.test", "AUTH PLAIN " .. bad)
    assert.truthy(l[6]:match("^535|535 5%.7%.8 "), out)
    -- the attempt is logged, and counted in the session's errors
    local errors = srv:wait_log("event=auth mechanism=PLAIN user=bob result=failed\n.-event=disconnect errors=(%d+)")
    assert.truthy(errors, srv:describe())
    assert.equals("1", errors, srv:describe())
    assert.falsy(srv:log():find("wrong", 1, true), "the password is in the log")
  end)
end)

describe("STARTTLS after AUTH", function()

  it("forgets an AUTH done before TLS (RFC 3207 4.2)", function()
    local srv = harness.start { script = [[
      local kurir = require "kurir"
      kurir.configure { tls = { self_signed = true }, auth = { plaintext = true } }
      kurir.on.auth = function(s, cred) return cred:verify("p") end
      kurir.on.mail = function(s) return 250, "2.1.0 user=" .. tostring(s.user) end
    ]] }
    local script = [[
import base64, socket, ssl, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = c.makefile("rb")
def reply(f):
    while True:
        l = f.readline()
        if not l or l[3:4] != b"-": return l
reply(f)
c.sendall(b"EHLO a\r\n"); reply(f)
c.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n"); print("auth1", reply(f)[:3].decode())
c.sendall(b"MAIL FROM:<a@b.test>\r\n"); print("mail1", reply(f).decode().strip())
c.sendall(b"RSET\r\n"); reply(f)
c.sendall(b"STARTTLS\r\n"); print("starttls", reply(f)[:3].decode())
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(c); g = t.makefile("rb")
t.sendall(b"EHLO a\r\n"); reply(g)
t.sendall(b"MAIL FROM:<a@b.test>\r\n"); print("mail2", reply(g).decode().strip())
t.sendall(b"RSET\r\n"); reply(g)
t.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n"); print("auth2", reply(g)[:3].decode())
t.sendall(b"MAIL FROM:<a@b.test>\r\n"); print("mail3", reply(g).decode().strip())
t.sendall(b"QUIT\r\n"); reply(g)
]]
    local dir = harness.tmpdir()
    harness.write_file(dir .. "/c.py", script)
    local rc, out = harness.sh("python3 " .. harness.quote(dir .. "/c.py") .. " " .. srv.port, 20)
    harness.rmtree(dir)
    assert.equals(0, rc, out)
    assert.truthy(out:find("auth1 235", 1, true), out)
    assert.truthy(out:find("mail1 250 2.1.0 user=u\n", 1, true), out)
    assert.truthy(out:find("starttls 220", 1, true), out)
    -- after the handshake the session is not authenticated ...
    assert.truthy(out:find("mail2 250 2.1.0 user=nil\n", 1, true), "the plaintext AUTH survived STARTTLS:\n" .. out)
    -- ... and may authenticate again (no 503 "already authenticated")
    assert.truthy(out:find("auth2 235", 1, true), "the plaintext AUTH survived STARTTLS:\n" .. out)
    assert.truthy(out:find("mail3 250 2.1.0 user=u\n", 1, true), out)
    harness.finish(srv)
  end)
end)
