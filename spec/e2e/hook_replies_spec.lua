-- End to end: what each hook's return value becomes on the wire, at every
-- stage (SPEC 2.1), the per-hook error policy at connect, and the fields of
-- the session, address and message objects (SPEC 2, 2.3).

local harness = require "harness"
local client = require "smtp_client"

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

local function open(port)
  local c = client.open(port)
  c:expect(220, "220 mx.conf.test ESMTP kurir")
  return c
end

local function ehlo(c)
  local code, text = c:ehlo("client.conf.test")
  assert.equals(250, code, text)
end

-- Every hook's behaviour is chosen per session with "XSET stage=ret"
-- (handled by the command hook), ret being false, true, err, a code, or a
-- code and text ("\n" in the text is a newline).
local STAGES_SCRIPT = [==[
local kurir = require "kurir"
kurir.configure { hostname = "mx.conf.test", limits = { errors = 100 } }
local function ret(x)
  if x == nil or x == "nil" then return nil end
  if x == "false" then return false end
  if x == "true" then return true end
  if x == "err" then error("conformance boom") end
  local code, text = x:match("^(%d+)%s?(.*)$")
  if text == "" then return tonumber(code) end
  return tonumber(code), (text:gsub("\\n", "\n"))
end
function kurir.on.helo(s) return ret(s.c_helo) end
function kurir.on.mail(s) return ret(s.c_mail) end
function kurir.on.rcpt(s) return ret(s.c_rcpt) end
function kurir.on.data(s, msg)
  if s.c_data == nil then return 250, "2.0.0 Ok: queued as " .. msg.id end
  return ret(s.c_data)
end
function kurir.on.vrfy(s) return ret(s.c_vrfy) end
function kurir.on.expn(s) return ret(s.c_expn) end
function kurir.on.command(s, verb, arg)
  if verb == "XSET" then
    local stage, r = arg:match("^(%w+)=(.*)$")
    s["c_" .. stage] = r
    return 250, "2.0.0 set"
  end
  return ret(s.c_command)
end
]==]

describe("SPEC 2.1 return conventions at every stage", function()
  local srv

  lazy_setup(function()
    srv = harness.start { script = STAGES_SCRIPT }
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  -- A session with stage=ret set, then EHLO; returns the connection and
  -- the EHLO reply.
  local function with(stage, r)
    local c = open(srv.port)
    c:check("XSET " .. stage .. "=" .. r, 250)
    local code, text = c:cmd("EHLO client.conf.test")
    return c, code, text
  end

  local function upto_data(c)
    c:check("MAIL FROM:<a@conf.test>", 250)
    c:check("RCPT TO:<b@conf.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: t\r\n\r\nbody\r\n.\r\n"))
    return c:reply()
  end

  it("helo: false -> 550 5.7.1, code+text -> that reply with enhanced code, then MAIL gets 503", function()
    local c, code, text = with("helo", "false")
    assert.equals(550, code, text)
    assert.truthy(text:match("^550 5%.7%.1 "), text)
    c:check("MAIL FROM:<a@conf.test>", 503)
    c:close()
    c, code, text = with("helo", "550 go away")
    assert.equals(550, code, text)
    assert.equals("550 5.7.1 go away", text)
    c:close()
  end)

  it("helo: nil keeps the normal EHLO reply with its extensions", function()
    local c, code, text = with("helo", "true")
    assert.equals(250, code, text)
    assert.truthy(text:find("PIPELINING", 1, true), text)
    c:close()
  end)

  it("helo: 421 sends the reply and closes", function()
    local c, code, text = with("helo", "421 bye")
    assert.equals(421, code, text)
    assert.truthy(text:match("^421 4%.%d+%.%d+ bye$"), text)
    assert.is_true(c:closed(5))
    c:close()
  end)

  it("mail: false -> 550 5.1.0, 4xx -> no transaction (RCPT 503), text gets the stage's enhanced code", function()
    local c = with("mail", "false")
    c:check("MAIL FROM:<a@conf.test>", 550, "550 5.1.0 Sender rejected")
    c:check("RCPT TO:<b@conf.test>", 503)
    c:close()
    c = with("mail", "451 later")
    local text = c:check("MAIL FROM:<a@conf.test>", 451)
    assert.truthy(text:match("^451 4%.%d+%.%d+ later$"), text)
    c:check("RCPT TO:<b@conf.test>", 503)
    c:close()
  end)

  it("mail: an enhanced code in the text is kept; newlines make a multi-line reply", function()
    local c = with("mail", "550 5.7.9 one\\ntwo")
    local _, lines = c:check("MAIL FROM:<a@conf.test>", 550)
    assert.same({ "550-5.7.9 one", "550 5.7.9 two" }, lines)
    c:close()
  end)

  it("mail: a 2xx with text accepts the sender with that reply", function()
    local c = with("mail", "250 welcome")
    c:check("MAIL FROM:<a@conf.test>", 250, "250 2.1.0 welcome")
    c:check("RCPT TO:<b@conf.test>", 250)
    c:close()
  end)

  it("mail and data: a Lua error gives 451 4.3.0 and the session goes on", function()
    local c = with("mail", "err")
    local text = c:check("MAIL FROM:<a@conf.test>", 451)
    assert.truthy(text:match("^451 4%.3%.0 "), text)
    c:check("NOOP", 250)
    c:close()
    c = with("data", "err")
    local code
    code, text = upto_data(c)
    assert.equals(451, code, text)
    assert.truthy(text:match("^451 4%.3%.0 "), text)
    c:check("NOOP", 250)
    c:close()
    assert.truthy(srv:wait_log("conformance boom"), srv:describe())
  end)

  it("data: false -> a 5xx, the message refused; 421 replies and closes", function()
    local c = with("data", "false")
    local code, text = upto_data(c)
    assert.truthy(code and code >= 550 and code <= 554, text)
    c:check("NOOP", 250)
    c:close()
    c = with("data", "421 going down")
    code, text = upto_data(c)
    assert.equals(421, code, text)
    assert.is_true(c:closed(5))
    c:close()
  end)

  it("data: a bare 250 still carries the queue id (SPEC 3)", function()
    local c = with("data", "250")
    local code, text = upto_data(c)
    assert.equals(250, code, text)
    assert.truthy(text:match("[%x][%x][%x][%x][%x][%x][%x][%x]"), "no queue id in " .. text)
    c:close()
  end)

  it("data: nil gives the engine's 250 with the queue id", function()
    local c = with("data", "nil")
    local code, text = upto_data(c)
    assert.equals(250, code, text)
    assert.truthy(text:match("^250 2%.0%.0 .*queued as %x+"), text)
    c:close()
  end)

  it("vrfy and expn: defaults 252 / 502 without the hooks, the hook's reply with them", function()
    local c = with("vrfy", "550 nobody here")
    c:check("VRFY bob", 550, "550 5.7.1 nobody here")
    c:check("EXPN staff", 502)
    c:check("XSET expn=250 list ok", 250)
    c:check("EXPN staff", 250, "250 2.0.0 list ok")
    c:close()
  end)

  it("command: the hook answers an unknown verb; without a reply it stays 500", function()
    local c = with("command", "250 fine")
    c:check("XFOO a b", 250, "250 2.0.0 fine")
    c:check("XSET command=nil", 250)
    c:check("XFOO", 500)
    c:close()
  end)

  it("after HELO no enhanced code is added to a hook's text", function()
    local c = open(srv.port)
    c:check("XSET rcpt=550 no such user", 250)
    c:check("HELO client.conf.test", 250)
    c:check("MAIL FROM:<a@conf.test>", 250, "250 Sender OK")
    c:check("RCPT TO:<b@conf.test>", 550, "550 no such user")
    c:close()
  end)
end)

describe("SPEC 2 hooks and 2.3 objects", function()
  local srv, dir

  lazy_setup(function()
    dir = harness.tmpdir()
    srv = harness.start { args = { dir }, script = [==[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure { hostname = "mx.conf.test", on_error = { connect = "reject" } }
local store = kurir.maildir(dir .. "/md")
local function put(name, text)
  local f = assert(io.open(dir .. "/" .. name, "ab"))
  f:write(text, "\n")
  f:close()
end
function kurir.on.connect(s)
  if s.remote_ip ~= "127.0.0.1" then error("remote_ip " .. tostring(s.remote_ip)) end
  if s.local_port == 0 then error("local_port") end
end
function kurir.on.mail(s, from)
  put("mail", ("id=%s rip=%s rport=%s lip=%s lport=%s helo=%s esmtp=%s addr=[%s] user=[%s] dom=[%s] " ..
    "size=%s body=%s"):format(
    tostring(s.id), s.remote_ip, tostring(s.remote_port), s.local_ip, tostring(s.local_port), tostring(s.helo),
    tostring(s.esmtp), from.address, from.user, from.domain, tostring(from.params.SIZE), tostring(from.params.BODY)))
end
function kurir.on.rcpt(s, r)
  if r.user == "no" then return false end
  put("rcpt", ("addr=[%s] user=[%s] dom=[%s] n=%d"):format(r.address, r.user, r.domain, #s.rcpts))
end
function kurir.on.reset(s) put("reset", s.id) end
function kurir.on.data(s, msg)
  local all = msg:headers("x-multi")
  put("data", ("subject=[%s] folded=[%s] multi=%d:%s,%s missing=%s size=%d from=[%s] n=%d sfrom=[%s] sn=%d"):format(
    tostring(msg:header("SUBJECT")), tostring(msg:header("x-folded")), #all, tostring(all[1]), tostring(all[2]),
    tostring(msg:header("x-none")), msg.size, msg.from.address, #msg.rcpts, s.from.address, #s.rcpts))
  msg:add_header("X-Conf-First", "1")
  msg:add_header("X-Conf-Second", "2")
  assert(store:deliver(msg))
end
]==] }
  end)

  lazy_teardown(function()
    harness.finish(srv)
    harness.rmtree(dir)
  end)

  it("session and address fields are what the client sent", function()
    local c = open(srv.port)
    local _, cport = c.sock:getsockname()
    ehlo(c)
    c:check("MAIL FROM:<> SIZE=42 BODY=8BITMIME", 250)
    c:check("RCPT TO:<Someone@Example.TEST>", 250)
    c:check("RCPT TO:<no@conf.test>", 550)
    c:check("RCPT TO:<postmaster>", 250)
    c:check("RSET", 250)
    c:close()
    local mail = harness.wait_for(function() return harness.read_file(dir .. "/mail") end, 5)
    assert.truthy(mail, srv:describe())
    assert.truthy(mail:find(("rip=127.0.0.1 rport=%s lip=127.0.0.1 lport=%d helo=client.conf.test esmtp=true " ..
      "addr=[] user=[] dom=[] size=42 body=8BITMIME"):format(cport, srv.port), 1, true), mail)
    assert.truthy(mail:match("^id=%S+ "), mail)
    local rcpt = harness.read_file(dir .. "/rcpt")
    assert.truthy(rcpt:find("addr=[Someone@Example.TEST] user=[Someone] dom=[Example.TEST] n=0", 1, true), rcpt)
    assert.truthy(rcpt:find("addr=[postmaster] user=[postmaster] dom=[] n=1", 1, true), rcpt)
  end)

  it("msg: header() is case-insensitive and unfolded, headers() lists all, add_header prepends", function()
    os.remove(dir .. "/data")
    local c = open(srv.port)
    ehlo(c)
    c:check("MAIL FROM:<a@conf.test>", 250)
    c:check("RCPT TO:<b@conf.test>", 250)
    c:check("DATA", 354)
    local body = "Subject: hello there\r\nX-Folded: one\r\n two\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\nbody\r\n"
    assert(c:send(body .. ".\r\n"))
    c:expect(250)
    c:check("QUIT", 221)
    c:close()
    local data = harness.read_file(dir .. "/data")
    assert.truthy(data:find(("subject=[hello there] folded=[one two] multi=2:1,2 missing=nil size=%d " ..
      "from=[a@conf.test] n=1 sfrom=[a@conf.test] sn=1"):format(#body), 1, true), data)
    local files = harness.maildir_new(dir .. "/md")
    assert.equals(1, #files)
    local stored = harness.read_file(files[1])
    local first = stored:find("X-Conf-First: 1\r\n", 1, true)
    local second = stored:find("X-Conf-Second: 2\r\n", 1, true)
    local subj = stored:find("Subject: hello there\r\n", 1, true)
    assert.truthy(first and second and subj, stored)
    assert.truthy(first < subj and second < subj, stored)
    assert.truthy(stored:sub(-#body) == body, stored)
  end)

  it("reset runs on RSET and when a transaction ends", function()
    os.remove(dir .. "/reset")
    local c = open(srv.port)
    ehlo(c)
    c:check("MAIL FROM:<a@conf.test>", 250)
    c:check("RSET", 250)
    c:check("MAIL FROM:<a@conf.test>", 250)
    c:check("RCPT TO:<b@conf.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: r\r\n\r\nx\r\n.\r\n"))
    c:expect(250)
    c:check("QUIT", 221)
    c:close()
    local n = harness.wait_for(function()
      local t = harness.read_file(dir .. "/reset") or ""
      local k = select(2, t:gsub("\n", ""))
      return k >= 2 and k
    end, 5)
    assert.truthy(n, "reset ran fewer than 2 times")
  end)

  it("policy rejections do not count as session errors", function()
    local c = open(srv.port)
    ehlo(c)
    c:check("MAIL FROM:<a@conf.test>", 250)
    for _ = 1, 15 do c:check("RCPT TO:<no@conf.test>", 550, "550 5.1.1 Recipient rejected") end
    c:check("RCPT TO:<b@conf.test>", 250)
    c:check("QUIT", 221)
    c:close()
  end)
end)

describe("SPEC 2.1 per-hook error policy at connect", function()
  it("on_error.connect = reject: a failing connect hook refuses with 554, then 503 but QUIT", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.conf.test", on_error = { connect = "reject" } }
function kurir.on.connect(s) error("down") end
]] }
    local c = client.open(srv.port)
    local code, text = c:reply()
    assert.equals(554, code, text)
    c:check("EHLO client.conf.test", 503)
    c:check("MAIL FROM:<a@conf.test>", 503)
    c:check("QUIT", 221)
    c:close()
    harness.finish(srv)
  end)
end)
