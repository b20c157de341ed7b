-- End to end: kurir.connect, the TCP/TLS client socket of SPEC 2.2. A hook
-- talks to a line peer (spec/support/echo_server.py) or to a second kurir
-- (plain, smtps with a self-signed certificate, and one with a certificate
-- from certs.make) and puts what it saw into its RCPT reply, so each test
-- reads the outcome straight from the SMTP dialogue.

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"
local certs = require "certs"

local q = harness.quote

-- arg: echo_port refused_port selfsigned_smtps ca_plain ca_smtps ca_file
local SCRIPT = [==[
local kurir = require "kurir"
local echo, refused = tonumber(arg[1]), tonumber(arg[2])
local self_smtps, ca_plain, ca_smtps, ca = tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5]), arg[6]
kurir.configure { hostname = "mx.socket.test", timeouts = { hook = 4 } }

local shared   -- a socket one session leaves for another (the "busy" test)

local function ok(text) return 250, "2.1.5 " .. text end
local function fail(err) return 451, "4.4.0 " .. tostring(err) end

-- Read one SMTP reply (all its lines); returns the last line.
local function reply(c)
  for _ = 1, 50 do
    local line, err = c:receive("l")
    if not line then return nil, err end
    if line:sub(4, 4) ~= "-" then return line end
  end
  return nil, "reply too long"
end

local cases = {}

function cases.lines()
  local c, err = kurir.connect("127.0.0.1", echo)
  if not c then return fail(err) end
  local n = c:send("hello\r\nabc\n")
  local a = c:receive("l")
  local b = c:receive("L")
  c:close()
  return ok(("%d %s %d %s"):format(n, a, #b, b:gsub("\n", "<LF>")))
end

function cases.count()
  local c = assert(kurir.connect("localhost", echo))
  c:send("0123456789\n")
  local a, b, rest = c:receive(4), c:receive(3), c:receive("l")
  local z = c:receive(0)
  c:close()
  return ok(table.concat({ a, b, rest, "[" .. z .. "]" }, " "))
end

function cases.all()
  local c = assert(kurir.connect("127.0.0.1", echo, { timeout = 5 }))
  c:send("first\nCLOSE\n")
  local data = c:receive("a")
  local again, err, partial = c:receive("l")
  return ok(("%s %s %s [%s]"):format((data:gsub("\n", "<LF>")), tostring(again), err, partial))
end

function cases.all_capped()
  local c = assert(kurir.connect("127.0.0.1", echo, { timeout = 5, max_size = 1000 }))
  c:send("BLOB 5000\nCLOSE\n")
  local data, err = c:receive("a")
  c:close()
  return ok(tostring(data) .. " " .. tostring(err))
end

-- a wait where Lua cannot yield (a C function's callback) is refused
-- before anything starts: no watcher may outlive the session
function cases.cboundary()
  local c = assert(kurir.connect("127.0.0.1", echo))
  c:send("SLOW 1\n")
  local okr, err = pcall(string.gsub, "x", "x", function() return c:receive() end)
  local line = c:receive("l")   -- the socket is still usable afterwards
  c:close()
  return ok(tostring(okr) .. " " .. (tostring(err):match("only wait inside a hook") or tostring(err)) ..
    " " .. tostring(line))
end

function cases.nulhost()
  local c, err = kurir.connect("::1\0junk", echo)
  return ok(tostring(c) .. " " .. tostring(err))
end

function cases.partial()
  local c = assert(kurir.connect("127.0.0.1", echo))
  c:send("BLOB 5\nCLOSE\n")
  local line, err, part = c:receive("l")
  return ok(("%s %s %s"):format(tostring(line), err, part))
end

function cases.big()
  local c = assert(kurir.connect("127.0.0.1", echo))
  local payload = string.rep("0123456789", 400000) .. "\n"   -- 4 MB: partial writes
  local n = c:send(payload)
  local back = c:receive(#payload)
  c:close()
  return ok(("%d %s"):format(n, tostring(back == payload)))
end

function cases.toolong()
  local c = assert(kurir.connect("127.0.0.1", echo, { max_line = 100 }))
  c:send("BLOB 5000\n")
  local line, err = c:receive("l")
  c:close()
  return ok(tostring(line) .. " " .. tostring(err))
end

function cases.refused()
  local c, err = kurir.connect("127.0.0.1", refused)
  if not c then return 451, "4.4.1 " .. err end
  return ok("connected?!")
end

function cases.v6()
  local c, err = kurir.connect("[::1]", refused)
  local c2, err2 = kurir.connect("::1", refused)
  return 451, ("4.4.1 %s %s / %s %s"):format(tostring(c), err, tostring(c2), err2)
end

function cases.timeout()
  local c = assert(kurir.connect("127.0.0.1", echo, { timeout = 0.5 }))
  c:send("SILENT\n")
  local t0 = os.time()
  local line, err = c:receive("l")
  c:settimeout(5)
  local dt = os.time() - t0
  c:close()
  return 451, ("4.4.2 %s %s %s"):format(tostring(line), err, dt <= 2 and "fast" or "slow")
end

function cases.slow(s)
  local c = assert(kurir.connect("127.0.0.1", echo))
  c:send("SLOW 1.5\n")
  s:log("peer_wait", {})
  local line = c:receive("l")
  return ok("peer said " .. line)
end

function cases.forever()
  local c = assert(kurir.connect("127.0.0.1", echo, { timeout = 60 }))
  c:send("SILENT\n")
  c:receive("l")
  return ok("not reached")
end

function cases.smtp()
  local c = assert(kurir.connect("127.0.0.1", ca_plain))
  local greeting = c:receive("l")
  c:send("QUIT\r\n")
  local bye = c:receive("l")
  local info = c:info()
  c:close()
  return ok(("peer said %s / %s / %s:%d tls=%s"):format(greeting:sub(1, 3), bye:sub(1, 3),
    info.remote_ip, info.remote_port, tostring(info.tls)))
end

local function tls_case(port, opts, host)
  local c, err = kurir.connect(host or "127.0.0.1", port, opts)
  if not c then return fail(err) end
  local greeting = c:receive("l")
  local t = c:info().tls
  c:send("QUIT\r\n")
  local bye = c:receive("l")
  c:close()
  return ok(("%s %s %s %s"):format(greeting:sub(1, 3), bye:sub(1, 3), t.version, tostring(#t.cipher > 0)))
end

function cases.tlsnoverify() return tls_case(self_smtps, { tls = true, verify = false }) end
function cases.tlsverify() return tls_case(self_smtps, { tls = true }) end
function cases.tlsca() return tls_case(ca_smtps, { tls = true, ca = ca }) end
function cases.tlscaname() return tls_case(ca_smtps, { tls = true, ca = ca }, "localhost") end
function cases.tlswrongname()
  return tls_case(ca_smtps, { tls = true, ca = ca, servername = "wrong.example" })
end
function cases.tlsbadca() return tls_case(ca_smtps, { tls = true, ca = "/nonexistent/ca.pem" }) end

function cases.starttls()
  local c = assert(kurir.connect("127.0.0.1", ca_plain))
  local g = reply(c)
  c:send("EHLO x\r\n")
  local e1 = reply(c)
  c:send("STARTTLS\r\n")
  local r = reply(c)
  local okk, err = c:starttls { ca = ca }
  if not okk then return fail(err) end
  c:send("EHLO x\r\n")
  local e2 = reply(c)
  local t = c:info().tls
  c:send("QUIT\r\n")
  local bye = reply(c)
  c:close()
  return ok(("%s %s %s %s %s %s"):format(g:sub(1, 3), e1:sub(1, 3), r:sub(1, 3), e2:sub(1, 3),
    bye:sub(1, 3), t.version))
end

-- starttls() with no options: the CA (and name) given to kurir.connect hold
local function starttls_plain(opts)
  local c = assert(kurir.connect("127.0.0.1", ca_plain, opts))
  reply(c)
  c:send("EHLO x\r\nSTARTTLS\r\n")
  reply(c)
  reply(c)
  local okk, err = c:starttls()
  if not okk then return fail(err) end
  c:send("QUIT\r\n")
  local bye = reply(c)
  c:close()
  return ok("after starttls " .. bye:sub(1, 3))
end
function cases.starttlskeep() return starttls_plain { ca = ca } end
function cases.starttlskeepname() return starttls_plain { ca = ca, servername = "wrong.example" } end

function cases.starttlsverify()
  local c = assert(kurir.connect("127.0.0.1", ca_plain))
  reply(c)
  c:send("EHLO x\r\nSTARTTLS\r\n")
  reply(c)
  reply(c)
  local okk, err = c:starttls()   -- system CAs do not know the test CA
  local after, err2 = c:send("x")
  return 451, "4.4.3 " .. tostring(okk) .. " " .. tostring(err) .. " / " .. tostring(after) .. " " ..
    tostring(err2)
end

function cases.closevar()
  local keep
  do
    local c <close> = assert(kurir.connect("127.0.0.1", echo))
    c:send("x\n")
    assert(c:receive("l") == "x")
    keep = c
  end
  return ok(tostring(keep))
end

function cases.misuse()
  local c = assert(kurir.connect("127.0.0.1", echo))
  local name = tostring(c)
  c:close()
  c:close()
  local n, err = c:send("x")
  local okp, perr = pcall(c.receive, c, "x")
  local c2 = assert(kurir.connect("127.0.0.1", echo))
  local okp2, perr2 = pcall(c2.receive, c2, "q")
  local okp3 = pcall(c2.settimeout, c2, -1)
  c2:close()
  return ok(("%s %s %s %s %s %s %s"):format(name:match("^kurir%.socket%(tcp") and "named" or name,
    tostring(n), err, tostring(okp or okp2 or okp3),
    perr:match("invalid pattern") and "badpattern" or perr, tostring(perr2):match("invalid pattern")
    and "badpattern" or tostring(perr2), "end"))
end

function cases.busyA(s)
  shared = assert(kurir.connect("127.0.0.1", echo))
  shared:send("SLOW 1.5\n")
  s:log("peer_wait", {})
  local line = shared:receive("l")
  return ok("A got " .. line)
end

function cases.busyB()
  local okp, err = pcall(shared.receive, shared, "l")
  local okc, err2 = pcall(shared.close, shared)
  return ok(("B %s %s %s"):format(tostring(okp or okc), err:match("socket busy") or err,
    err2:match("socket busy") or err2))
end

function kurir.on.mail(s)
  local c, err = kurir.connect("127.0.0.1", echo)
  if not c then return fail(err) end
  s.sock = c
end

function cases.kept(s)
  local c = s.sock
  c:send("kept\n")
  local line = c:receive("l")
  return ok("kept " .. tostring(line) .. " " .. tostring(c):gsub("%d+", "N"))
end

function kurir.on.rcpt(s, rcpt)
  local f = cases[rcpt.user]
  if f then return f(s) end
end
]==]

-- Start the line peer on an ephemeral port; returns its pid and port
-- (read from the "listening PORT" line it prints once it accepts).
local function start_echo()
  local dir = harness.tmpdir()
  os.execute("python3 " .. q(harness.root .. "/spec/support/echo_server.py") ..
    " 0 300 </dev/null >" .. q(dir .. "/out") .. " 2>&1 & echo $! > " .. q(dir .. "/pid"))
  local pid = harness.wait_for(function()
    local t = harness.read_file(dir .. "/pid")
    return t and t:match("%d+")
  end, 5)
  local port = harness.wait_for(function()
    return (harness.read_file(dir .. "/out") or ""):match("listening (%d+)")
  end, 10)
  local out = harness.read_file(dir .. "/out")
  harness.rmtree(dir)
  assert(pid, "echo server did not start")
  assert(port, "echo server does not listen: " .. tostring(out))
  return pid, tonumber(port)
end

describe("kurir.connect (TCP/TLS client socket in hooks)", function()
  local srv, self_peer, ca_peer, echo_pid, crt_dir, refused_sock

  setup(function()
    crt_dir = harness.tmpdir()
    local crt = certs.make(crt_dir)
    local echo
    echo_pid, echo = start_echo()
    local refused
    refused, refused_sock = harness.closed_port()
    self_peer = harness.start {
      script_file = "scripts/mock.lua",
      args = { "--tls", "--maildir", "{dir}/mail" },
      listen = { "127.0.0.1:0", "smtps://127.0.0.1:0" },
    }
    ca_peer = harness.start {
      script_file = "scripts/mock.lua",
      args = { "--cert", crt.cert, "--key", crt.key, "--maildir", "{dir}/mail" },
      listen = { "127.0.0.1:0", "smtps://127.0.0.1:0" },
    }
    srv = harness.start {
      script = SCRIPT,
      args = { echo, refused, self_peer.ports[2], ca_peer.ports[1], ca_peer.ports[2], crt.ca },
    }
  end)

  teardown(function()
    if srv then harness.finish(srv) end
    if self_peer then harness.finish(self_peer) end
    if ca_peer then harness.finish(ca_peer) end
    if echo_pid then os.execute("kill " .. echo_pid .. " 2>/dev/null") end
    if refused_sock then refused_sock:close() end
    harness.rmtree(crt_dir)
    harness.cleanup()
  end)

  -- A session at RCPT; returns the connection.
  local function at_rcpt()
    local c = client.open(srv.port)
    c:expect(220)
    c:check("EHLO client.test", 250)
    c:check("MAIL FROM:<a@example.test>", 250)
    return c
  end

  local function rcpt(user, timeout)
    local c = at_rcpt()
    local code, text = c:cmd("RCPT TO:<" .. user .. "@example.test>", timeout)
    c:cmd("QUIT")
    c:close()
    return code, text
  end

  it("sends and receives lines (CRLF and LF stripped by \"l\", kept by \"L\")", function()
    local code, text = rcpt("lines")
    assert.equals(250, code, text)
    assert.equals("250 2.1.5 11 hello 4 abc<LF>", text)
  end)

  it("receives exact byte counts, then the rest of the line", function()
    local code, text = rcpt("count")
    assert.equals("250 2.1.5 0123 456 789 []", text, code)
  end)

  it("receive(\"a\") reads until the peer closes; later reads say closed", function()
    local code, text = rcpt("all")
    assert.equals("250 2.1.5 first<LF>bye nil closed []", text, code)
  end)

  it("a wait inside a C function's callback is refused and leaves the socket usable", function()
    local code, text = rcpt("cboundary")
    assert.equals("250 2.1.5 false only wait inside a hook slow", text, code)
  end)

  it("a host with a NUL byte inside is an invalid address", function()
    local code, text = rcpt("nulhost")
    assert.equals("250 2.1.5 nil invalid address", text, code)
  end)

  it("receive(\"a\") stops at opts.max_size: a peer cannot fill the server's memory", function()
    local code, text = rcpt("all_capped")
    assert.equals("250 2.1.5 nil too large", text, code)
  end)

  it("a line cut off by the peer closing gives nil, closed and the partial data", function()
    local code, text = rcpt("partial")
    assert.equals("250 2.1.5 nil closed xxxxxbye", text, code)
  end)

  it("sends and receives 4 MB intact (partial writes and reads)", function()
    local code, text = rcpt("big", 30)
    assert.equals("250 2.1.5 4000001 true", text, tostring(code) .. "; hook errors:\n" ..
      table.concat((function()
        local t = {}
        for _, l in ipairs(harness.log_lines(srv, { event = "hook_error" })) do t[#t + 1] = l.line end
        return t
      end)(), "\n"))
  end)

  it("a line longer than max_line is nil, \"line too long\"", function()
    local code, text = rcpt("toolong")
    assert.equals("250 2.1.5 nil line too long", text, code)
  end)

  it("a refused port is nil, \"connection refused\"", function()
    local code, text = rcpt("refused")
    assert.equals("451 4.4.1 connection refused", text, code)
  end)

  it("IPv6 literals with and without brackets are addresses", function()
    local s6 = socket.tcp6()
    local v6 = s6 and s6:bind("::1", 0)
    if s6 then s6:close() end
    local code, text = rcpt("v6")
    if v6 then
      assert.equals("451 4.4.1 nil connection refused / nil connection refused", text, code)
    else
      assert.matches("^451 4%.4%.1 nil [^/]+ / nil ", text)
      assert.falsy(text:find("IP address", 1, true), text)
    end
  end)

  it("a peer that never answers: receive gives nil, \"timeout\" after opts.timeout", function()
    local t0 = socket.gettime()
    local code, text = rcpt("timeout")
    assert.equals("451 4.4.2 nil timeout fast", text, code)
    assert.is_true(socket.gettime() - t0 < 3 * harness.scale)
  end)

  it("talks SMTP to a second kurir (220 greeting, QUIT, 221) and reports addresses", function()
    local code, text = rcpt("smtp")
    assert.equals(250, code, text)
    assert.matches("^250 2%.1%.5 peer said 220 / 221 / 127%.0%.0%.1:%d+ tls=nil$", text)
  end)

  it("TLS at connect with verify = false accepts a self-signed peer", function()
    local code, text = rcpt("tlsnoverify")
    assert.equals(250, code, text)
    assert.matches("^250 2%.1%.5 220 221 TLSv1%.[23] true$", text)
  end)

  it("TLS verification (the default) refuses a self-signed peer with a tls: error", function()
    local code, text = rcpt("tlsverify")
    assert.equals(451, code, text)
    assert.matches("^451 4%.4%.0 tls: certificate verify failed", text)
  end)

  it("TLS with opts.ca verifies a peer whose certificate that CA signed (by IP and by name)", function()
    local code, text = rcpt("tlsca")
    assert.equals(250, code, text)
    assert.matches("^250 2%.1%.5 220 221 TLSv1%.[23] true$", text)
    code, text = rcpt("tlscaname")
    assert.equals(250, code, text)
  end)

  it("TLS with a servername the certificate does not name fails", function()
    local code, text = rcpt("tlswrongname")
    assert.equals(451, code, text)
    assert.matches("^451 4%.4%.0 tls: certificate verify failed %(hostname mismatch%)", text)
  end)

  it("a CA file that cannot be read is a tls: error", function()
    local code, text = rcpt("tlsbadca")
    assert.equals("451 4.4.0 tls: cannot load CA file /nonexistent/ca.pem", text, code)
  end)

  it("starttls() upgrades a plain socket after EHLO + STARTTLS", function()
    local code, text = rcpt("starttls")
    assert.equals(250, code, text)
    assert.matches("^250 2%.1%.5 220 250 220 250 221 TLSv1%.[23]$", text)
  end)

  it("starttls() keeps the CA and the name given to kurir.connect as its defaults", function()
    local code, text = rcpt("starttlskeep")
    assert.equals("250 2.1.5 after starttls 221", text, code)
    code, text = rcpt("starttlskeepname")
    assert.equals(451, code, text)
    assert.matches("^451 4%.4%.0 tls: certificate verify failed %(hostname mismatch%)", text)
  end)

  it("a failed starttls() returns nil, tls error and closes the socket", function()
    local code, text = rcpt("starttlsverify")
    assert.equals(451, code, text)
    assert.matches("^451 4%.4%.3 nil tls: certificate verify failed %(.*%) / nil closed$", text)
  end)

  it("waiting on a socket suspends only its own session", function()
    local a = at_rcpt()
    local b = at_rcpt()
    local t0 = socket.gettime()
    local before = harness.count_log(srv, "event=peer_wait")
    assert(a:send("RCPT TO:<slow@example.test>\r\n"))
    assert(harness.wait_count(srv, "event=peer_wait", before + 1), srv:describe())
    -- b is answered while a's hook still waits on its peer
    local code, text = b:cmd("RCPT TO:<lines@example.test>")
    assert.equals(250, code, text)
    assert.is_true(socket.gettime() - t0 < 1.2, "b waited for a")
    assert.is_false(a:readable(0), "a was answered before its peer replied")
    a:expect(250, "250 2.1.5 peer said slow", 10)
    assert.is_true(socket.gettime() - t0 >= 1.4)
    a:close()
    b:close()
  end)

  it("a second operation on a socket that another session waits on raises socket busy", function()
    local a = at_rcpt()
    local b = at_rcpt()
    local before = harness.count_log(srv, "event=peer_wait")
    assert(a:send("RCPT TO:<busyA@example.test>\r\n"))
    assert(harness.wait_count(srv, "event=peer_wait", before + 1), srv:describe())
    b:check("RCPT TO:<busyB@example.test>", 250, "250 2.1.5 B false socket busy socket busy")
    a:expect(250, "250 2.1.5 A got slow", 10)
    a:close()
    b:close()
  end)

  it("a client that leaves while its hook waits on a socket does not disturb the server", function()
    for _ = 1, 3 do
      local a = at_rcpt()
      local id = harness.session_id(srv, a)
      local before = harness.count_log(srv, "event=peer_wait")
      assert(a:send("RCPT TO:<slow@example.test>\r\n"))
      assert(harness.wait_count(srv, "event=peer_wait", before + 1), srv:describe())
      a:close()
      assert(harness.wait_session_end(srv, id), srv:describe())
    end
    -- The same slow request, asked after the abandoned ones: once its answer
    -- is in, the peers have answered the abandoned sockets too.
    local code, text = rcpt("slow")
    assert.equals("250 2.1.5 peer said slow", text, code)
    code, text = rcpt("lines")
    assert.equals(250, code, text)
    harness.assert_clean(srv)
  end)

  it("the hook time limit ends a wait on a silent peer (451), and the session goes on", function()
    local c = at_rcpt()
    local code, text = c:cmd("RCPT TO:<forever@example.test>", 20)
    assert.equals(451, code, text)
    c:check("RCPT TO:<lines@example.test>", 250)
    c:close()
    assert.truthy(srv:wait_log("hook time limit"))
  end)

  it("a socket kept in the session (s.sock) works in a later hook", function()
    local code, text = rcpt("kept")
    assert.equals("250 2.1.5 kept kept kurir.socket(tcp N.N.N.N:N)", text, code)
  end)

  it("<close> closes the socket at the end of its scope", function()
    local code, text = rcpt("closevar")
    assert.equals("250 2.1.5 kurir.socket(closed)", text, code)
  end)

  it("misuse: send on a closed socket is nil, closed; a bad pattern or timeout raises", function()
    local code, text = rcpt("misuse")
    assert.equals("250 2.1.5 named nil closed false badpattern badpattern end", text, code)
  end)

  it("kurir.connect at load time raises a clear error", function()
    local rc, out = harness.run { args = { "--check", "{script}" }, script = [[
local kurir = require "kurir"
kurir.connect("127.0.0.1", 9)
function kurir.on.data() return 250 end
]] }
    assert.are_not.equals(0, rc, out)
    assert.truthy(out:find("inside a hook", 1, true), out)
  end)
end)
