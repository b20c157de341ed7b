-- scripts/examples/*.lua: each example loads against the engine contract
-- (a kurir module like the one the engine builds) and its hooks answer as
-- the example says.

local config = require "kurir.config"
local maildir = require "kurir.maildir"
local default = require "kurir.default"

local HOOKS = {}
for _, h in ipairs(config.hook_names) do HOOKS[h] = true end

-- kurir.shared as one process sees it: a table with expiry on a clock
-- that the test moves (kurir.now).
local function fake_shared(kurir)
  local dicts = {}
  return function(name)
    if dicts[name] then return dicts[name] end
    local data, expires = {}, {}
    local d = {}
    local function live(k)
      if expires[k] and expires[k] <= kurir.now then data[k], expires[k] = nil, nil end
      return data[k]
    end
    function d.get(_, k) return live(k) end
    function d.set(_, k, v, ttl)
      data[k], expires[k] = v, (ttl and ttl > 0) and kurir.now + ttl or nil
      return true
    end
    function d.add(self, k, v, ttl)
      if live(k) ~= nil then return nil, "exists" end
      return self:set(k, v, ttl)
    end
    function d.incr(self, k, by, init, ttl)
      local v = live(k)
      if v == nil then
        if init == nil then return nil, "not found" end
        self:set(k, init, ttl)
        v = init
      end
      data[k] = v + (by or 1)
      return data[k]
    end
    dicts[name] = d
    return d
  end
end

local function fake_kurir()
  local state = config.new()
  local kurir = { state = state, slept = {}, version = "test" }
  kurir.on = setmetatable({}, {
    __newindex = function(t, k, v)
      if not HOOKS[k] then error("unknown hook '" .. tostring(k) .. "'", 2) end
      rawset(t, k, v)
    end,
  })
  kurir.configure = function(t) config.merge(state, t, 2) end
  kurir.maildir = maildir.new
  kurir.sleep = function(sec) kurir.slept[#kurir.slept + 1] = sec end
  kurir.log = function() end
  kurir.hostname = function() return "host.test" end
  kurir.now = 0
  kurir.shared = fake_shared(kurir)
  kurir.worker = function() return 0, 1 end
  return kurir
end

-- Run an example with `arg`; returns the fake kurir and the final config.
local function run(name, args)
  local kurir = fake_kurir()
  local saved = package.loaded.kurir
  package.loaded.kurir = kurir
  local env = setmetatable({ arg = args or {} }, { __index = _G })
  local chunk = assert(loadfile("scripts/examples/" .. name, "t", env))
  local ok, err = pcall(chunk)
  package.loaded.kurir = saved
  if not ok then error(err, 0) end
  return kurir, config.finalize(kurir.state, nil, "host.test")
end

local function addr(address)
  local user, domain = address:match("^(.*)@(.*)$")
  if not user then user, domain = address, "" end
  return { address = address, user = user, domain = domain, params = {} }
end

local function session(from)
  local s = { id = "S1", remote_ip = "127.0.0.1", logged = {}, from = from and addr(from) }
  function s.log(self, event, fields) self.logged[#self.logged + 1] = { event = event, fields = fields } end
  return s
end

local function message(from, rcpts)
  local msg = { id = "Q1", size = 3, from = addr(from), rcpts = {}, stored = {} }
  for i, r in ipairs(rcpts) do msg.rcpts[i] = type(r) == "table" and r or addr(r) end
  function msg.store_maildir(self, dir, prefix)
    self.stored[#self.stored + 1] = { dir = dir, prefix = prefix }
    return "new/" .. #self.stored
  end
  return msg
end

describe("scripts/examples/policy.lua", function()
  it("relays nothing, accepts its domain and <postmaster>, stores per user", function()
    local kurir, cfg = run("policy.lua")
    assert.same({ { host = "127.0.0.1", port = 2525, tls = false } }, cfg.listen)
    local s = session("x@y.test")
    assert.same({ 550, "5.7.1 Relaying denied" }, { kurir.on.rcpt(s, addr("a@other.test")) })
    assert.same({}, { kurir.on.rcpt(s, addr("a@Example.TEST")) })
    assert.same({}, { kurir.on.rcpt(s, addr("postmaster")) })
    local msg = message("x@y.test", { "a@example.test" })
    assert.same({}, { kurir.on.data(s, msg) })
    assert.same("mail/a", msg.stored[1].dir)
  end)

  it("takes the domain and Maildir from its arguments", function()
    local kurir = run("policy.lua", { "corp.test", "/srv/mail" })
    assert.same({ 550, "5.7.1 Relaying denied" }, { kurir.on.rcpt(session(), addr("a@example.test")) })
    local msg = message("x@y.test", { "a@corp.test" })
    kurir.on.data(session(), msg)
    assert.same("/srv/mail", msg.stored[1].dir)
  end)
end)

describe("scripts/examples/greylist.lua", function()
  it("greylists a new triplet, then accepts the retry", function()
    local kurir, cfg = run("greylist.lua", { "0" })
    assert.same("continue", cfg.on_error.rcpt)
    local s = session("sender@far.test")
    kurir.on.connect(s)
    local code, text = kurir.on.rcpt(s, addr("alice@example.test"))
    assert.same(451, code)
    assert.same("4.7.1 Greylisted, please try again in 0 seconds", text)
    assert.same("greylisted", s.logged[1].event)
    assert.same({}, { kurir.on.rcpt(s, addr("alice@example.test")) })
    assert.same(451, (kurir.on.rcpt(s, addr("bob@example.test"))))
  end)

  it("keeps a triplet greylisted until the delay is over", function()
    local kurir = run("greylist.lua", { "3600" })
    local s = session("sender@far.test")
    kurir.on.connect(s)
    assert.same(451, (kurir.on.rcpt(s, addr("bob@example.test"))))
    assert.same({ 451, "4.7.1 Greylisted, please try again later" }, { kurir.on.rcpt(s, addr("bob@example.test")) })
  end)

  it("keeps its triplets in kurir.shared, where they expire unless seen again", function()
    local kurir = run("greylist.lua", { "0" })
    local s = session("sender@far.test")
    kurir.on.connect(s)
    assert.same(451, (kurir.on.rcpt(s, addr("bob@example.test"))))
    local key = "127.0.0.1\0sender@far.test\0bob@example.test"
    assert.is_number(kurir.shared("greylist"):get(key))
    kurir.now = 36 * 3600 + 1
    assert.same(451, (kurir.on.rcpt(s, addr("bob@example.test"))))
  end)

  it("slows down a session after each unknown recipient", function()
    local kurir = run("greylist.lua")
    local s = session("sender@far.test")
    kurir.on.connect(s)
    assert.same({ 550, "5.1.1 No such user" }, { kurir.on.rcpt(s, addr("nobody@example.test")) })
    assert.same(550, (kurir.on.rcpt(s, addr("alice@other.test"))))
    kurir.on.rcpt(s, addr("alice@example.test"))
    assert.same({ 1, 2 }, kurir.slept)
    assert.same(2, s.refused)
  end)

  it("does not greylist authenticated clients", function()
    local kurir = run("greylist.lua")
    local s = session("me@example.test")
    kurir.on.connect(s)
    s.user = "me"
    assert.same({}, { kurir.on.rcpt(s, addr("bob@example.test")) })
  end)
end)

describe("scripts/examples/ratelimit.lua", function()
  it("refuses MAIL with 450 past the limit, per client address, for one window", function()
    local kurir, cfg = run("ratelimit.lua", { "2" })
    assert.same("continue", cfg.on_error.mail)
    local s = session("x@y.test")
    assert.is_nil(kurir.on.mail(s))
    assert.is_nil(kurir.on.mail(s))
    assert.same({ 450, "4.7.1 Too many messages from 127.0.0.1, try again later" }, { kurir.on.mail(s) })
    assert.same("ratelimited", s.logged[1].event)
    local other = session("x@y.test")
    other.remote_ip = "192.0.2.1"
    assert.is_nil(kurir.on.mail(other))
    kurir.now = 61
    assert.is_nil(kurir.on.mail(s))
  end)

  it("does not limit authenticated clients", function()
    local kurir = run("ratelimit.lua", { "1" })
    local s = session("x@y.test")
    s.user = "me"
    for _ = 1, 3 do assert.is_nil(kurir.on.mail(s)) end
  end)
end)

describe("scripts/examples/routes.lua", function()
  it("routes per domain at RCPT and delivers through the default delivery", function()
    local kurir, cfg = run("routes.lua")
    assert.same(2, #cfg.listen)
    assert.same(50, cfg.limits.recipients)
    assert.is_nil(rawget(kurir.on, "data"))
    local s = session("x@y.test")
    local r = { addr("a@example.test"), addr("list@Lists.Example.Test"), addr("c@customers.test"),
                addr("b@example.test"), addr("postmaster") }
    local misroute = addr("x@nowhere.test")
    for _, rc in ipairs(r) do assert.same({}, { kurir.on.rcpt(s, rc) }) end
    assert.same({ 550, "5.1.1 No such domain" }, { kurir.on.rcpt(s, misroute) })
    assert.is_nil(misroute.route)
    assert.equal(r[1].route, r[4].route)
    local msg = message("x@y.test", r)
    assert.same(0, select("#", default.data(s, msg)))
    local dirs = {}
    for i, st in ipairs(msg.stored) do dirs[i] = st.dir end
    assert.same({ "mail/example.test/a", "mail/example.test/b", "mail/lists",
                  "mail/customers/customers.test/c", "mail/postmaster" }, dirs)
  end)
end)

describe("scripts/examples/submission.lua", function()
  local users_file = os.tmpname()
  local f = assert(io.open(users_file, "w"))
  f:write("# address secret\nalice@example.test  wonderland\n\n  Bob@Example.test hunter2  \n")
  f:close()
  teardown(function() os.remove(users_file) end)

  local function cred(user, ok_secret)
    return { user = user, mechanism = "CRAM-MD5",
             verify = function(_, secret) return secret == ok_secret end }
  end

  it("requires TLS and AUTH and checks credentials from the users file", function()
    local kurir, cfg = run("submission.lua", { "c.pem", "k.pem", users_file })
    assert.same({ cert = "c.pem", key = "k.pem", self_signed = false, client_cert = 0 }, cfg.tls)
    assert.is_true(cfg.auth.required)
    assert.is_false(cfg.auth.plaintext)
    assert.same("reject", cfg.on_error.auth)
    assert.same(true, kurir.on.auth(session(), cred("alice@example.test", "wonderland")))
    assert.same(true, kurir.on.auth(session(), cred("bob@example.test", "hunter2")))
    assert.same(false, kurir.on.auth(session(), cred("alice@example.test", "hunter2")))
    assert.same(false, kurir.on.auth(session(), cred("eve@example.test", "x")))
    assert.same(false, kurir.on.auth(session(), cred(nil, "x")))
  end)

  it("lets users send only as themselves and queues to the outbox", function()
    local kurir = run("submission.lua", { "c.pem", "k.pem", users_file })
    local s = session()
    s.user = "alice@example.test"
    assert.same({}, { kurir.on.mail(s, addr("Alice@example.test")) })
    assert.same({ 553, "5.7.1 You may only send as alice@example.test" },
      { kurir.on.mail(s, addr("bob@example.test")) })
    local rc = addr("someone@far.test")
    kurir.on.rcpt(s, rc)
    assert.same("maildir(mail/outbox)", tostring(rc.route))
  end)

  it("fails to load, naming the file, without a users file", function()
    local ok, err = pcall(run, "submission.lua", { "c.pem", "k.pem", "/nonexistent/users" })
    assert.is_false(ok)
    assert.truthy(err:find("submission.lua: cannot read the users file: /nonexistent/users", 1, true), err)
  end)
end)
