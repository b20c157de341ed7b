-- End to end: hostile input (SPEC 3). Random garbage, a grammar-aware mix
-- of valid and broken commands, abrupt disconnects at every stage, a
-- connection flood and a client that never reads its replies must never
-- crash, hang or desynchronise the server. Every session ends with a check
-- that the server is still in step (NOOP -> 250) or still serves a fresh
-- session, and the suite ends with a clean sanitizer log and exit 0.
--
-- Randomness comes from one seed (HOSTILE_SEED, default below) printed in
-- the test names; each test reseeds from it, so a failure is reproduced by
-- running the spec again with the same seed. All loops are bounded.

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"

local HOST = "mx.e2e.test"
local SEED = tonumber(os.getenv("HOSTILE_SEED") or "") or 20261124
local GREETING = "220 " .. HOST .. " ESMTP kurir"

-- Hooks at every stage, so that every Lua object is built from hostile
-- bytes; arg[1] = limits.connections.
local SCRIPT = [=[
local kurir = require "kurir"
kurir.configure {
  hostname = "mx.e2e.test",
  limits = {
    line_length = 512, message_size = 100000, errors = 1000,
    connections = tonumber(arg[1] or "1000"), connections_per_ip = 1000,
  },
  timeouts = { command = 60, data = 60, shutdown = 2 },
  auth = { plaintext = true },
}

function kurir.on.connect(s)
  s.count = 0
end

function kurir.on.helo(s, name)
  s:log("hostile-helo", { name = name, esmtp = tostring(s.esmtp) })
end

function kurir.on.auth(s, cred)
  s:log("hostile-auth", { mechanism = cred.mechanism, user = cred.user })
  if cred.user == "good" then return cred:verify("secret") end
  return cred:verify("other")
end

function kurir.on.mail(s, from)
  s.count = s.count + 1
  local n = 0
  for k, v in pairs(from.params) do n = n + #k + #tostring(v) end
  s:log("hostile-mail", { address = from.address, user = from.user, domain = from.domain, params = n })
  if from.user == "refuse" then return false end
end

function kurir.on.rcpt(s, rcpt)
  if rcpt.user == "sleepy" then
    s:log("hostile-sleepy", {})
    kurir.sleep(0.5)
  end
  if rcpt.user == "reject" then return 550, "5.1.1 no such user" end
  if rcpt.user == "err" then error("boom in rcpt") end
  local from = s.from and s.from.address or "?"
  s:log("hostile-rcpt", { address = rcpt.address, from = from, n = #s.rcpts })
end

function kurir.on.data(s, msg)
  local raw = msg:raw()
  local subject = msg:header("Subject")
  local received = msg:headers("Received")
  local all = msg:headers("X-Any")
  msg:add_header("X-Hostile", tostring(#raw) .. " " .. tostring(#received) .. " " .. tostring(#all))
  s:log("hostile-data", { size = msg.size, raw = #raw, rcpts = #msg.rcpts, subject = subject })
  if subject == "reject" then return 554, "5.6.0 rejected\nsecond line" end
  return 250, "2.0.0 Ok: queued as " .. msg.id
end

function kurir.on.vrfy(s, a)
  return 252, "2.5.0 cannot verify " .. a
end

function kurir.on.expn(s, a)
  return 550, "5.5.0 no list " .. a
end

function kurir.on.command(s, verb, a)
  if verb:upper() == "XPING" then return 250, "2.0.0 pong " .. a end
end

function kurir.on.reset(s)
  s.count = 0
end

function kurir.on.disconnect(s)
  s:log("hostile-bye", { count = s.count })
end
]=]

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

local function tname(text)
  return text .. " (seed " .. SEED .. ")"
end

local function rnd(a, b) return math.random(a, b) end
local function pick(t) return t[math.random(1, #t)] end

local function random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

-- A command line without CRLF inside (a bare CR or LF stays).
local function no_crlf(s)
  return (s:gsub("\r\n", "\rX"))
end

local function b64(s)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((s:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

-- Every byte the server sent must be well-formed reply lines: 3 digits,
-- then SP, "-" or the end of the line, CRLF-terminated, no CR or LF inside.
local function assert_replies(bytes, what)
  local pos, lines = 1, 0
  while pos <= #bytes do
    local e = bytes:find("\r\n", pos, true)
    assert(e, what .. ": unterminated reply bytes: " .. string.format("%q", bytes:sub(pos, pos + 200)))
    local line = bytes:sub(pos, e - 1)
    assert(line:match("^%d%d%d[ -]") or line:match("^%d%d%d$"),
      what .. ": malformed reply line: " .. string.format("%q", line))
    assert(not line:find("[\r\n]"), what .. ": CR or LF inside a reply line: " .. string.format("%q", line))
    pos = e + 2
    lines = lines + 1
  end
  return lines
end

local function session(port)
  local c = client.open(port)
  c:expect(220, GREETING)
  local code, text = c:ehlo("client.e2e.test")
  assert.equals(250, code, text)
  return c
end

-- A fresh session is greeted and answers EHLO and NOOP correctly.
local function assert_serves(srv, what)
  assert(srv:running(), (what or "") .. ": kurir is not running\n" .. srv:describe())
  local c = client.open(srv.port)
  c:expect(220, GREETING)
  local code, text = c:ehlo("fresh.e2e.test")
  assert(code == 250, (what or "") .. ": EHLO got " .. tostring(code) .. " " .. tostring(text))
  c:check("NOOP", 250, "250 2.0.0 OK")
  c:check("QUIT", 221)
  c:close()
end

-- Send bytes in random-sized writes; stop quietly if the server closed.
local function send_pieces(c, bytes, maxpiece)
  local pos = 1
  while pos <= #bytes do
    local n = rnd(1, maxpiece)
    if not c:send(bytes:sub(pos, pos + n - 1)) then return false end
    pos = pos + n
  end
  return true
end

-- Close with RST instead of FIN.
local function reset_close(c)
  c.sock:setoption("linger", { on = true, timeout = 0 })
  c:close()
end

local function vmrss_kb(pid)
  local status = harness.read_file("/proc/" .. pid .. "/status")
  return status and tonumber(status:match("VmRSS:%s*(%d+)"))
end

describe("hostile input", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = SCRIPT, args = { "1000" } }
  end)

  lazy_teardown(function()
    if srv and srv.stopped == nil then
      client.close_all(srv.port)
      srv:stop()
    end
  end)

  ---------------------------------------------------------------------------
  it(tname("survives 50 sessions of random byte garbage and answers only well-formed replies"), function()
    math.randomseed(SEED, 1)
    local tokens = {
      "\r\n", "\r", "\n", "\0", "\255", "\r\n.\r\n", "\n.\n", "\r\n.\n", "DATA\r\n", "BDAT 50\r\n",
      "BDAT 0 LAST\r\n", "MAIL FROM:<a@b.example>\r\n", "RCPT TO:<x@y.example>\r\n", "EHLO x\r\n",
      "AUTH LOGIN\r\n", "AUTH PLAIN\r\n", "RSET\r\n", "VRFY \255\0\r\n", "XPING \1\r\n", "HELO\r\n",
    }
    for i = 1, 50 do
      local parts, size = {}, 0
      local target = rnd(1000, 6000)
      while size < target do
        local r = rnd(1, 10)
        local p
        if r <= 4 then
          p = random_bytes(rnd(1, 200))
        elseif r <= 5 then
          p = string.rep(string.char(pick { 0, 255, 13, 10, 65, 46 }), rnd(600, 2000))   -- no CRLF
        else
          p = pick(tokens)
        end
        parts[#parts + 1] = p
        size = size + #p
      end
      local garbage = table.concat(parts)
      local c = client.open(srv.port)
      c:expect(220, GREETING)
      send_pieces(c, garbage, 1500)
      c.sock:shutdown("send")
      assert(c:closed(20), "session " .. i .. ": server did not close after the client's EOF")
      assert_replies(c.buf, "garbage session " .. i)
      c:close()
      assert_serves(srv, "after garbage session " .. i)
    end
  end)

  ---------------------------------------------------------------------------
  describe("a grammar-aware mix of commands", function()
    local domains = { "b.example", "[192.0.2.1]", "[IPv6:2001:db8::1]", "xn--bcher-kva.example",
      "b\195\169.example", "b.example.", "[300.1.1.1]", "-x-.example", "a..b", "[IPv6:zz]", "" }
    local locals = { "a", "refuse", "\"q u o\\\"te\"", "a.b+c", "reject", "err", "\195\169t\195\169",
      ".bad", "a..b", "a\0b", "\255", string.rep("l", 70) }
    local params = { "SIZE=100", "SIZE=abc", "SIZE=99999999999999999999999", "SIZE=1000000",
      "BODY=8BITMIME", "BODY=7BIT", "SMTPUTF8", "AUTH=<>", "AUTH=a+2Bb", "FOO=\1bar", "=x",
      "X=\255", "KEY=a=b", "-K=1", "NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a+40b", "RET=HDRS",
      "ENVID=x+2", "\0", string.rep("P=1 ", 20) }

    local function path(verb)
      local r = rnd(1, 10)
      if r == 1 then return verb == "MAIL" and "<>" or "<" .. pick(locals) .. ">" end
      if r == 2 then return pick { "<postmaster>", "<PostMaster>", "<a@b", "a@b.example", "<<a@b>>",
        "<@r.example,@s.example:a@b.example>", "<@:a@b>", "< a@b.example>", "<a@b.example>x", "" } end
      if r == 3 then return "<" .. random_bytes(rnd(0, 30)) .. ">" end
      return "<" .. pick(locals) .. "@" .. pick(domains) .. ">"
    end

    local function mail_or_rcpt()
      local verb, kw = "MAIL", pick { "FROM:", "FROM: ", "from:", "FROM", "TO:", "FROM:<", "" }
      if rnd(1, 2) == 1 then verb, kw = "RCPT", pick { "TO:", "TO: ", "to:", "TO", "FROM:", "" } end
      local line = verb .. " " .. kw .. path(verb)
      for _ = 1, rnd(0, 3) do line = line .. " " .. pick(params) end
      if rnd(1, 12) == 1 then line = line .. " " .. random_bytes(rnd(1, 20)) end
      if rnd(1, 15) == 1 then line = "MAIL FROM:<" .. string.rep("x", rnd(400, 700)) .. "@b.example>" end
      return no_crlf(line)
    end

    -- Lines that are answered with exactly one reply and change no mode.
    local function simple_line()
      local r = rnd(1, 20)
      if r <= 6 then return mail_or_rcpt() end
      if r == 7 then return "RCPT TO:<" .. pick { "ok", "ok", "reject", "err" } .. "@x.example>" end
      if r == 8 then return pick { "EHLO", "HELO", "EHLO x.example", "HELO [127.0.0.1]", "EHLO \255\0",
        "EHLO " .. string.rep("h", 300), "EHLO a b c" } end
      if r == 9 then return pick { "RSET", "NOOP", "NOOP x y", "HELP", "HELP MAIL", "rset", "Noop" } end
      if r == 10 then return no_crlf("VRFY " .. random_bytes(rnd(0, 40))) end
      if r == 11 then return no_crlf("EXPN " .. random_bytes(rnd(0, 40))) end
      if r == 12 then return no_crlf("XPING " .. random_bytes(rnd(0, 40))) end
      if r == 13 then return pick { "", " ", "\0", "\255\254", "MAIL", "RCPT", "DATA x", "\rDATA",
        "\nQUIT", "DATA\r", "MAIL FROM:<a@b>\nRCPT TO:<c@d>" } end
      if r == 14 then return string.rep("Z", rnd(500, 1500)) end
      local line = no_crlf(random_bytes(rnd(0, 60)))
      local head = line:sub(1, 8):upper()
      if head:match("^DATA") or head:match("^BDAT") or head:match("^AUTH") or head:match("^QUIT") or
          head:match("^STARTTLS") then
        line = "X" .. line
      end
      return line
    end

    -- A message body with smuggling attempts; never contains <CRLF>.<CRLF>.
    local function body(size)
      local pieces = {
        "Subject: hostile\r\n", "Subject: reject\r\n", "X-Any: 1\r\n", "X-Any:\r\n\tfolded\r\n", "\r\n",
        "\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", ".\r\n", "..\r\n", "\r\nMAIL FROM:<smuggled@x.example>\r\n",
        "RCPT TO:<smuggled@x.example>\r\n", "DATA\r\n", "QUIT\r\n", "\0", "\255", "line\r\n",
      }
      local t, n = {}, 0
      while n < size do
        local p = rnd(1, 3) == 1 and random_bytes(rnd(1, 80)) or pick(pieces)
        t[#t + 1] = p
        n = n + #p
      end
      local b = table.concat(t)
      for _ = 1, 100 do
        local nb = b:gsub("\r\n%.\r\n", "\r\n..\r\n")
        if nb == b then break end
        b = nb
      end
      if b:sub(1, 3) == ".\r\n" then b = "x" .. b end
      assert(not b:find("\r\n.\r\n", 1, true) and b:sub(1, 3) ~= ".\r\n")
      return b
    end

    local function reply(c, what)
      local code, text, lines = c:reply(10)
      assert(code, what .. ": no reply (" .. tostring(text) .. ") " .. table.concat(lines or {}, " | ") ..
        "\n" .. srv:describe())
      assert(code >= 200 and code <= 559, what .. ": odd code " .. text)
      assert(code ~= 421, what .. ": the server closed the session: " .. text)
      for _, l in ipairs(lines) do
        assert(not l:find("[\r\n]"), what .. ": CR or LF inside a reply line: " .. string.format("%q", l))
      end
      return code, text
    end

    -- Exactly one reply: nothing else arrived with it.
    local function only_reply(c, what)
      local code, text = reply(c, what)
      assert(#c.buf == 0, what .. ": bytes after the reply: " .. string.format("%q", c.buf))
      return code, text
    end

    -- Nothing more was answered than read so far: the reply to an XPING
    -- sent now is the very next one.
    local pings = 0
    local function in_step(c, what)
      pings = pings + 1
      assert(c:send("XPING step" .. pings .. "\r\n"))
      local _, text = reply(c, what .. ", then XPING")
      assert(text == "250 2.0.0 pong step" .. pings, what .. ": an extra reply: " .. text)
    end

    local function step(c, log)
      local r = rnd(1, 20)
      if r <= 8 then
        local line = simple_line()
        log[#log + 1] = line
        assert(c:send(line .. "\r\n"))
        only_reply(c, string.format("%q", line))
      elseif r <= 10 then
        -- a pipelined group of simple lines: one reply each, in order
        local n, group = rnd(2, 12), {}
        for i = 1, n do group[i] = simple_line() end
        log[#log + 1] = "group: " .. string.format("%q", table.concat(group, "\r\n"))
        assert(c:send(table.concat(group, "\r\n") .. "\r\n"))
        for i = 1, n do reply(c, "group line " .. i .. " " .. string.format("%q", group[i])) end
        in_step(c, "after a group")
      elseif r == 11 then
        -- a transaction that should get to DATA
        assert(c:send("MAIL FROM:<a@b.example>\r\nRCPT TO:<ok@x.example>\r\n"))
        reply(c, "MAIL")
        reply(c, "RCPT")
        log[#log + 1] = "MAIL+RCPT"
      elseif r <= 13 then
        log[#log + 1] = "DATA"
        assert(c:send("DATA\r\n"))
        local code = only_reply(c, "DATA")
        if code == 354 then
          local b = body(rnd(1, 8) == 1 and rnd(100001, 130000) or rnd(0, 4000))
          log[#log + 1] = "body of " .. #b
          send_pieces(c, b .. "\r\n.\r\n", 3000)
          local dcode, dtext = reply(c, "end of DATA")
          in_step(c, "after DATA (" .. dtext .. ")")
          if #b > 100000 then assert(dcode == 552, "oversized message got " .. dtext) end
        end
      elseif r <= 16 then
        local kind = rnd(1, 6)
        if kind == 1 then
          local line = pick { "BDAT", "BDAT x", "BDAT -1", "BDAT 1 2", "BDAT 1 LASTX", "BDAT 1x",
            "BDAT 123456789012345678901", "BDAT +5", "BDAT \0", "BDAT 5 LAST LAST" }
          log[#log + 1] = line
          assert(c:send(line .. "\r\n"))
          local code, text = only_reply(c, line)
          assert(code == 501, string.format("%q", line) .. " got " .. text)
        else
          local n = rnd(1, 10) == 1 and rnd(100001, 120000) or rnd(0, 3000)
          local last = rnd(1, 3) == 1 and pick { " LAST", " last", "  LAST" } or ""
          local chunk = random_bytes(n)
          if n >= 16 then chunk = "\r\n.\r\nQUIT\r\n" .. chunk:sub(12) end
          local extra = 0
          local line = "BDAT " .. n .. last
          log[#log + 1] = line
          if kind == 2 and n > 2 then
            -- the chunk comes in two writes, the second one late
            -- (a reply before the chunk is complete shows as an extra reply)
            assert(c:send(line .. "\r\n" .. chunk:sub(1, 2)))
            assert(c:send(chunk:sub(3)))
          elseif kind == 3 then
            -- more bytes than announced: the rest are commands
            extra = rnd(1, 3)
            assert(c:send(line .. "\r\n" .. chunk .. string.rep("NOOP\r\n", extra)))
          else
            send_pieces(c, line .. "\r\n" .. chunk, 2000)
          end
          local code, text = reply(c, line)
          if n > 100000 and code < 400 then error(line .. " over message_size got " .. text) end
          for i = 1, extra do
            local ncode, ntext = reply(c, "NOOP " .. i .. " after a BDAT chunk")
            assert(ncode == 250, "NOOP after a BDAT chunk got " .. ntext)
          end
          in_step(c, "after BDAT")
        end
      elseif r <= 18 then
        local line = pick { "AUTH", "AUTH FOO", "AUTH PLAIN", "AUTH PLAIN !!!bad", "AUTH PLAIN =",
          "AUTH PLAIN " .. b64("\0good\0secret"), "AUTH PLAIN " .. b64("\0good\0wrong"),
          "AUTH PLAIN " .. b64(random_bytes(rnd(0, 40))), "AUTH LOGIN", "AUTH LOGIN " .. b64("good"),
          "AUTH LOGIN %%%", "AUTH CRAM-MD5", "AUTH CRAM-MD5 x", "auth plain", "AUTH PLAIN " ..
          string.rep("A", 600) }
        log[#log + 1] = line
        assert(c:send(line .. "\r\n"))
        local code = only_reply(c, line)
        local rounds = 0
        while code == 334 and rounds < 4 do
          rounds = rounds + 1
          local resp = pick { "%%%", "*", "", b64("good"), b64("secret"), b64(random_bytes(rnd(0, 50))),
            "Zm9v=Zm9v", "====", string.rep("Q", 700), no_crlf(random_bytes(rnd(1, 30))) }
          log[#log + 1] = "  response " .. string.format("%q", resp)
          assert(c:send(resp .. "\r\n"))
          code = only_reply(c, "AUTH response " .. string.format("%q", resp))
        end
        if code == 334 then   -- cancel what is left of the exchange
          assert(c:send("*\r\n"))
          code = only_reply(c, "AUTH cancel")
          assert(code == 501, "AUTH cancel got " .. code)
        end
      elseif r == 19 then
        local line = pick { "STARTTLS", "starttls", "STARTTLS x" }
        log[#log + 1] = line
        assert(c:send(line .. "\r\n"))
        local code, text = only_reply(c, line)
        assert(code ~= 220, "STARTTLS without TLS configured got " .. text)
      else
        local line = pick { "RCPT TO:<sleepy@x.example>", "MAIL FROM:<refuse@x.example>", "RSET" }
        log[#log + 1] = line
        assert(c:send(line .. "\r\n"))
        only_reply(c, line)
      end
    end

    it(tname("keeps the dialogue in step: one well-formed reply per command line"), function()
      math.randomseed(SEED, 2)
      for i = 1, 30 do
        local c = session(srv.port)
        local log = {}
        local ok, err = pcall(function()
          for _ = 1, rnd(20, 60) do step(c, log) end
          -- after a HELO (no enhanced codes) NOOP is "250 OK"
          local text = c:check("NOOP", 250)
          assert(text == "250 2.0.0 OK" or text == "250 OK", "final NOOP: " .. text)
          c:check("QUIT", 221)
          assert(c:closed(5), "not closed after QUIT")
        end)
        c:close()
        if not ok then
          local tail = {}
          for k = math.max(1, #log - 8), #log do tail[#tail + 1] = string.format("%q", log[k]:sub(1, 300)) end
          error("session " .. i .. ": " .. tostring(err) .. "\nlast steps:\n" .. table.concat(tail, "\n"), 0)
        end
      end
      assert_serves(srv, "after the command mix")
    end)
  end)

  ---------------------------------------------------------------------------
  describe("pipelined groups with waiting hooks", function()
    it("answers a whole transaction sent in one write behind a sleeping rcpt hook", function()
      local c = session(srv.port)
      assert(c:send("MAIL FROM:<a@b.example>\r\nRCPT TO:<sleepy@x.example>\r\nRCPT TO:<reject@x.example>\r\n" ..
        "DATA\r\nSubject: s\r\n\r\nbody\r\n.\r\nNOOP\r\n"))
      c:expect(250, "250 2.1.0 Sender OK")
      c:expect(250, "250 2.1.5 Recipient OK", 5)
      c:expect(550, "550 5.1.1 no such user")
      c:expect(354)
      local text = c:expect(250)
      assert.truthy(text:match("^250 2%.0%.0 Ok: queued as %w+$"), text)
      c:expect(250, "250 2.0.0 OK")
      c:check("XPING next", 250, "250 2.0.0 pong next")   -- no extra reply before it
      c:close()
    end)

    it("answers BDAT chunks pipelined behind a sleeping rcpt hook", function()
      local c = session(srv.port)
      assert(c:send("MAIL FROM:<a@b.example>\r\nRCPT TO:<sleepy@x.example>\r\nBDAT 8\r\nQUIT\r\n\r\n" ..
        "BDAT 0 LAST\r\nNOOP\r\n"))
      c:expect(250, "250 2.1.0 Sender OK")
      c:expect(250, "250 2.1.5 Recipient OK", 5)
      c:expect(250)
      local text = c:expect(250)
      assert.truthy(text:match("queued as"), text)
      c:expect(250, "250 2.0.0 OK")
      c:close()
    end)

    it("refuses an address literal with a NUL inside with 501 (bytes after the NUL must not pass)", function()
      -- Found by tests/fuzz/fuzz_addr.c: literal_ok() hands the IPv6 literal to
      -- inet_pton, which stops at an embedded NUL, so anything after it is
      -- accepted (NUL, "/", "..", bare CR/LF) and reaches rcpt.domain.
      local c = session(srv.port)
      c:check("MAIL FROM:<a@[IPv6:::1\0\nX-Injected: yes]>", 501)
      c:check("RSET", 250)
      c:check("MAIL FROM:<a@b.example>", 250)
      c:check("RCPT TO:<a@[IPv6:::1\0/../../etc]>", 501)
      c:check("NOOP", 250, "250 2.0.0 OK")
      c:close()
    end)
  end)

  ---------------------------------------------------------------------------
  describe("abrupt disconnects", function()
    local stages = {
      { "before reading the greeting", function(c) c:close() end, true },
      { "after the greeting", function(c) c:expect(220) end },
      { "mid-command", function(c) c:expect(220) assert(c:send("MAIL FROM:<a@b.exa")) end },
      { "mid-EHLO pipelined group", function(c)
        c:expect(220)
        assert(c:send("EHLO a\r\nNOOP\r\nNOOP\r\nRSET\r\nMAIL FROM:<a@b.example>\r\nRC"))
      end },
      { "mid-DATA", function(c)
        c:expect(220)
        c:ehlo()
        c:check("MAIL FROM:<a@b.example>", 250)
        c:check("RCPT TO:<ok@x.example>", 250)
        c:check("DATA", 354)
        assert(c:send("Subject: x\r\n\r\n" .. string.rep("half a message\r\n", 500) .. "\r\n."))
      end },
      { "mid-BDAT chunk", function(c)
        c:expect(220)
        c:ehlo()
        c:check("MAIL FROM:<a@b.example>", 250)
        c:check("RCPT TO:<ok@x.example>", 250)
        assert(c:send("BDAT 50000 LAST\r\n" .. string.rep("x", 20000)))
      end },
      { "between BDAT chunks", function(c)
        c:expect(220)
        c:ehlo()
        c:check("MAIL FROM:<a@b.example>", 250)
        c:check("RCPT TO:<ok@x.example>", 250)
        assert(c:send("BDAT 5\r\nhello"))
        c:expect(250)
      end },
      { "mid-AUTH exchange", function(c)
        c:expect(220)
        c:ehlo()
        c:check("AUTH LOGIN", 334)
      end },
      { "during a sleeping rcpt hook", function(c)
        c:expect(220)
        c:ehlo()
        c:check("MAIL FROM:<a@b.example>", 250)
        local before = harness.count_log(srv, "event=hostile%-sleepy")
        assert(c:send("RCPT TO:<sleepy@x.example>\r\n"))
        assert(harness.wait_count(srv, "event=hostile%-sleepy", before + 1), srv:describe())
      end },
      { "during a sleeping rcpt hook with more pipelined", function(c)
        c:expect(220)
        c:ehlo()
        assert(c:send("MAIL FROM:<a@b.example>\r\nRCPT TO:<sleepy@x.example>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n"))
      end },
      { "after the data hook ran, with the reply unread", function(c)
        c:expect(220)
        c:ehlo()
        assert(c:send("MAIL FROM:<a@b.example>\r\nRCPT TO:<ok@x.example>\r\nDATA\r\nSubject: x\r\n\r\nb\r\n.\r\n"))
      end },
    }

    for _, st in ipairs(stages) do
      for _, how in ipairs { "FIN", "RST" } do
        it("still serves after a disconnect " .. st[1] .. " (" .. how .. ")", function()
          local c = client.open(srv.port)
          local id = harness.session_id(srv, c)
          st[2](c)
          if not st[3] then
            if how == "RST" then reset_close(c) else c:close() end
          end
          -- the server has seen the disconnect and freed the session
          assert(harness.wait_session_end(srv, id), srv:describe())
          assert_serves(srv, "disconnect " .. st[1] .. " (" .. how .. ")")
        end)
      end
    end

    it("answers a sleeping rcpt hook after the client shut its sending side, then closes", function()
      local c = session(srv.port)
      c:check("MAIL FROM:<a@b.example>", 250)
      assert(c:send("RCPT TO:<sleepy@x.example>\r\nNOOP\r\n"))
      c.sock:shutdown("send")
      c:expect(250, "250 2.1.5 Recipient OK", 5)
      c:expect(250, "250 2.0.0 OK")
      assert.is_true(c:closed(5))
      c:close()
    end)

    it("runs the disconnect hook once for every session so far", function()
      local function counts()
        local connects = #harness.log_lines(srv, { event = "connect" })
        local byes = 0
        for line in srv:log():gmatch("[^\n]+") do
          if line:find("hostile-bye", 1, true) then byes = byes + 1 end
        end
        return connects, byes
      end
      local same = harness.wait_for(function()
        local a, b = counts()
        return a > 0 and a == b
      end, 10)
      local a, b = counts()
      assert(same, "connect events " .. a .. ", disconnect hook runs " .. b .. "\n" .. srv:describe())
    end)
  end)

  ---------------------------------------------------------------------------
  it("keeps memory bounded when a client pipelines without reading, and serves others meanwhile", function()
    local before = vmrss_kb(srv.pid)
    assert(before, "cannot read /proc/" .. srv.pid .. "/status")
    local hog = session(srv.port)
    hog.sock:settimeout(0)
    local line = "EHLO hog.e2e.test\r\n"
    local batch = string.rep(line, 500)
    local sent, stalled = 0, 0
    local deadline = socket.gettime() + 30 * harness.scale
    -- Write until the server stops reading (our send buffer stays full), at
    -- most 2,000,000 commands (the kernel buffers on both sides hold
    -- megabytes) or 30 s.
    while sent < 2000000 * #line and socket.gettime() < deadline do
      local last, err, partial = hog.sock:send(batch)
      local n = last or partial or 0
      sent = sent + n
      if n < #batch then
        assert(err == "timeout", "hog connection failed: " .. tostring(err))
        stalled = stalled + 1
        if stalled > 20 then break end
        socket.sleep(0.05)
      else
        stalled = 0
      end
    end
    assert(stalled > 0, "the server read " .. sent .. " bytes of commands without applying backpressure")
    local during = vmrss_kb(srv.pid)
    -- The server stopped reading the hog (its output queue is past the
    -- high-water mark): the hog's bytes wait in the server's receive queue,
    -- and stay there while the loop serves another session.
    local _, hog_port = hog.sock:getsockname()
    local _, unread = harness.tcp_queues(srv.port, tonumber(hog_port))
    assert(unread and unread > 0, "the server reads the hog although its replies are not read: " ..
      tostring(unread))
    local other = session(srv.port)
    other:check("NOOP", 250, "250 2.0.0 OK")
    other:check("MAIL FROM:<a@b.example>", 250)
    other:check("QUIT", 221)
    other:close()
    local _, unread2 = harness.tcp_queues(srv.port, tonumber(hog_port))
    assert.equals(unread, unread2, "the server read from the hog while its replies were not read")
    local limit_kb = 100 * 1024 + (harness.sanitized and 150 * 1024 or 0)
    assert(during - before < limit_kb, string.format(
      "VmRSS grew from %d kB to %d kB after %d bytes of unread pipelining", before, during, sent))
    assert(during < limit_kb + before, "VmRSS " .. during .. " kB")
    if os.getenv("HOSTILE_VERBOSE") then
      io.stderr:write(string.format("\nVmRSS before %d kB, with the hog stalled %d kB, %d bytes sent\n",
        before, during, sent))
    end
    reset_close(hog)
    assert_serves(srv, "after the hog")
  end)

  ---------------------------------------------------------------------------
  it("exits 0 on SIGTERM with sessions left idle, mid-DATA, mid-BDAT and in a sleeping hook", function()
    local idle = session(srv.port)
    local mid_data = session(srv.port)
    mid_data:check("MAIL FROM:<a@b.example>", 250)
    mid_data:check("RCPT TO:<ok@x.example>", 250)
    mid_data:check("DATA", 354)
    assert(mid_data:send("Subject: x\r\n\r\nunfinished"))
    local mid_bdat = session(srv.port)
    mid_bdat:check("MAIL FROM:<a@b.example>", 250)
    mid_bdat:check("RCPT TO:<ok@x.example>", 250)
    assert(mid_bdat:send("BDAT 1000\r\nabc"))
    local sleeping = session(srv.port)
    sleeping:check("MAIL FROM:<a@b.example>", 250)
    local before = harness.count_log(srv, "event=hostile%-sleepy")
    assert(sleeping:send("RCPT TO:<sleepy@x.example>\r\n"))
    assert(harness.wait_count(srv, "event=hostile%-sleepy", before + 1), srv:describe())
    local half = client.open(srv.port)
    assert(harness.session_id(srv, half), srv:describe())
    assert(half:send("EHLO half"))
    assert(srv:signal("TERM"))
    -- the idle session is told at once; the others end by the grace period
    idle:expect(421)
    local code = srv:exit_code(15)
    for _, c in ipairs { idle, mid_data, mid_bdat, sleeping, half } do c:close() end
    assert(code, "kurir did not exit within the grace period\n" .. srv:describe())
    srv.stopped = code
    harness.assert_clean(srv)
    assert.equals(0, code, srv:describe())
    harness.rmtree(srv.dir)
  end)
end)

-------------------------------------------------------------------------------
describe("a connection flood", function()
  it("greets connections past limits.connections = 100 with 421 4.7.0, then serves again", function()
    local srv = harness.start { script = SCRIPT, args = { "100" } }
    local conns = {}
    for i = 1, 200 do
      local c, err = client.connect(srv.port)
      assert(c, "connection " .. i .. " failed: " .. tostring(err))
      conns[i] = c
    end
    local n220, n421 = 0, 0
    for i, c in ipairs(conns) do
      local code, text = c:reply(10)
      assert(code == 220 or code == 421, "connection " .. i .. " got " .. tostring(code) .. " " .. tostring(text))
      if code == 220 then
        n220 = n220 + 1
      else
        n421 = n421 + 1
        -- no enhanced code at the greeting: no EHLO has offered them yet
        assert(text:match("^421 .*Too many connections"), text)
        assert(c:closed(5), "a 421 connection stays open")
      end
    end
    assert.equals(100, n220)
    assert.equals(100, n421)
    -- the admitted ones all work, pipelined at once
    for _, c in ipairs(conns) do
      if not c.eof then assert(c:send("EHLO flood.e2e.test\r\nNOOP\r\n")) end
    end
    for _, c in ipairs(conns) do
      if not c.eof then
        c:expect(250)
        c:expect(250, "250 2.0.0 OK")
      end
    end
    for _, c in ipairs(conns) do c:close() end
    -- once they are gone, new sessions are admitted again
    local ok = harness.wait_for(function()
      local c = client.open(srv.port)
      local code = c:reply(5)
      c:close()
      return code == 220
    end, 10, 0.2)
    assert(ok, "no 220 after the flood closed\n" .. srv:describe())
    assert_serves(srv, "after the flood")
    local code = srv:stop()
    harness.assert_clean(srv)
    assert.equals(0, code, srv:describe())
    harness.rmtree(srv.dir)
  end)
end)
