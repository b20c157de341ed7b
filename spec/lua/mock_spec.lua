-- kurir.mock: argument parsing, the configuration it declares, and its
-- auth and data hooks, against a fake kurir module.

local config = require "kurir.config"
local mock = require "kurir.mock"
local maildir = require "kurir.maildir"

local HOOKS = {}
for _, h in ipairs(config.hook_names) do HOOKS[h] = true end

-- The Maildirs that agent:prepare() was asked to create (the engine's C
-- side, faked: nothing is created on disk here).
local prepared = {}
maildir.prepare_dir = function(dir)
  prepared[#prepared + 1] = dir
  return true
end

-- What the engine builds in C, in Lua terms.
local function fake_kurir()
  local state = config.new()
  local kurir = { state = state, logged = {} }
  kurir.on = setmetatable({}, {
    __newindex = function(t, k, v)
      if not HOOKS[k] then error("unknown hook '" .. tostring(k) .. "'", 2) end
      rawset(t, k, v)
    end,
  })
  kurir.configure = function(t) config.merge(state, t, 2) end
  kurir.maildir = maildir.new
  -- the engine's reply rows (C, kurir.reply): the name stands for the text
  kurir.reply = function(name, arg) return 451, name .. (arg and " " .. arg or "") end
  -- the store and the HTTP API: an empty Maildir, no MIME parser, a
  -- recorded HTTP handler
  kurir.fs = { list = function() return {} end }
  kurir.mime = function() return nil, "no parser in this fake" end
  kurir.http = { handle = function(fn) kurir.http_handler = fn end }
  kurir.now = os.time
  kurir.log = function(...) kurir.logged[#kurir.logged + 1] = table.concat({ ... }, " ") end
  return kurir
end

local function setup(args)
  local kurir = fake_kurir()
  local opts = mock.setup(kurir, args)
  return kurir, config.finalize(kurir.state, nil, "mock.test"), opts
end

local function session()
  local s = { id = "S1", logged = {} }
  function s.log(self, event, fields) self.logged[#self.logged + 1] = { event = event, fields = fields } end
  return s
end

local function message(fail)
  local msg = {
    id = "Q7", size = 123,
    from = { address = "app@src.test", user = "app", domain = "src.test", params = {} },
    rcpts = {
      { address = "a@x.test", user = "a", domain = "x.test", params = {} },
      { address = "b@y.test", user = "b", domain = "y.test", params = {} },
    },
    stored = {},
  }
  function msg.header(_, name) if name == "Subject" then return "Hello there" end end
  function msg.store_maildir(self, dir, prefix)
    if fail then return nil, "No space left on device" end
    self.stored[#self.stored + 1] = { dir = dir, prefix = prefix }
    -- the file the store's index reads back
    os.execute("mkdir -p '" .. dir .. "/new'")
    local f = io.open(dir .. "/new/1700000000.M1P2Q3.host", "wb")
    if f then
      f:write(prefix, "Subject: Hello there\r\n\r\nbody\r\n")
      f:close()
    end
    return "new/1700000000.M1P2Q3.host"
  end
  return msg
end

describe("kurir.mock arguments", function()
  it("defaults to ./mail on 127.0.0.1:1025 without TLS, the web UI on 127.0.0.1:8025", function()
    local kurir, cfg, opts = setup({ [0] = "scripts/mock.lua" })
    assert.same("./mail", opts.maildir)
    assert.same({ { host = "127.0.0.1", port = 1025, tls = false },
      { host = "127.0.0.1", port = 8025, tls = false, http = true } }, cfg.listen)
    assert.same(1, cfg.workers)   -- one process: one place for its messages and logs
    assert.is_nil(cfg.tls)
    assert.is_false(cfg.auth.plaintext)
    assert.same({ "mock server: every message is stored in the Maildir ./mail" }, kurir.logged)
  end)

  it("works with no arg table at all", function()
    local _, cfg = setup(nil)
    assert.same(1025, cfg.listen[1].port)
  end)

  it("creates the Maildir at start, not at the first delivery", function()
    prepared = {}
    setup({ "--maildir", "/tmp/prep" })
    assert.same({ "/tmp/prep" }, prepared)
  end)

  it("takes --maildir in both spellings", function()
    assert.same("/tmp/x", select(3, setup({ "--maildir", "/tmp/x" })).maildir)
    assert.same("/tmp/y", select(3, setup({ "--maildir=/tmp/y" })).maildir)
  end)

  it("turns on a self-signed certificate with --tls", function()
    local _, cfg = setup({ "--tls" })
    assert.same({ self_signed = true, client_cert = 0 }, cfg.tls)
    assert.is_false(cfg.auth.plaintext)
  end)

  it("uses --cert/--key files, implying --tls", function()
    local _, cfg, opts = setup({ "--cert", "c.pem", "--key=k.pem" })
    assert.is_true(opts.tls)
    assert.same({ cert = "c.pem", key = "k.pem", self_signed = false, client_cert = 0 }, cfg.tls)
  end)

  it("takes repeated --listen, smtps included", function()
    local _, cfg = setup({ "--listen", "[::1]:2525", "--tls", "--listen", "smtps://127.0.0.1:1465", "--http", "off" })
    assert.same({ { host = "::1", port = 2525, tls = false }, { host = "127.0.0.1", port = 1465, tls = true } },
      cfg.listen)
  end)

  it("moves the web UI with --http ADDR:PORT (port 0 too)", function()
    local _, cfg = setup({ "--http", "127.0.0.1:0" })
    assert.same({ host = "127.0.0.1", port = 0, tls = false, http = true }, cfg.listen[2])
    assert.has_error(function() setup({ "--http", "nowhere:1" }) end)
  end)

  it("takes --max-messages, --max-bytes and --mailbox-order", function()
    local _, _, opts = setup({ "--max-messages", "5", "--max-bytes=1000", "--mailbox-order", "header,tag" })
    assert.same(5, opts.max_messages)
    assert.same(1000, opts.max_bytes)
    assert.same({ "header", "tag" }, opts.mailbox_order)
    assert.has_error(function() setup({ "--max-messages", "-1" }) end)
    assert.has_error(function() setup({ "--mailbox-order", "auth,colour" }) end)
  end)

  it("offers AUTH without TLS with --auth-plaintext", function()
    local _, cfg = setup({ "--auth-plaintext" })
    assert.is_true(cfg.auth.plaintext)
  end)

  local bad = {
    { { "--x" }, "mock.lua: unknown option --x (try --help)" },
    { { "--maildir" }, "mock.lua: --maildir needs a value" },
    { { "--maildir", "" }, "mock.lua: --maildir needs a value" },
    { { "--maildir=" }, "mock.lua: --maildir needs a value" },
    { { "--listen", "nowhere:25" }, "mock.lua: bad --listen value 'nowhere:25': bad address 'nowhere'" ..
      " (an IPv4 literal, [IPv6] or localhost)" },
    { { "--cert", "c.pem" }, "mock.lua: --cert and --key go together" },
    { { "--key", "k.pem" }, "mock.lua: --cert and --key go together" },
    { { "mail" }, "mock.lua: unexpected argument 'mail' (try --help)" },
    { { "--tls=yes" }, "mock.lua: --tls takes no value" },
  }
  for _, b in ipairs(bad) do
    it("refuses " .. table.concat(b[1], " "), function()
      local ok, err = pcall(mock.setup, fake_kurir(), b[1])
      assert.is_false(ok)
      assert.same(b[2], err)
    end)
  end

  it("refuses a --listen smtps:// without --tls when the configuration is finalised", function()
    local kurir = fake_kurir()
    mock.setup(kurir, { "--listen", "smtps://127.0.0.1:1465" })
    assert.is_false((pcall(config.finalize, kurir.state)))
  end)

  it("prints the usage and exits 0 on --help", function()
    local out = {}
    local real_stdout, real_exit = io.stdout, os.exit
    -- luacheck: push ignore 122
    io.stdout = { write = function(self, s) out[#out + 1] = s; return self end, flush = function() end }
    os.exit = function(code) error({ exit = code }, 0) end
    local ok, err = pcall(mock.setup, fake_kurir(), { "--help" })
    io.stdout, os.exit = real_stdout, real_exit
    -- luacheck: pop
    assert.is_false(ok)
    assert.same({ exit = 0 }, err)
    assert.same(mock.usage, table.concat(out))
    assert.truthy(mock.usage:find("--maildir DIR", 1, true))
  end)
end)

describe("kurir.mock hooks", function()
  it("registers auth and data, and the stages where faults apply", function()
    local kurir = setup({})
    local names = {}
    for k in pairs(kurir.on) do names[#names + 1] = k end
    table.sort(names)
    assert.same({ "auth", "connect", "data", "helo", "mail", "rcpt" }, names)
    assert.is_function(kurir.http_handler)
  end)

  it("accepts any credentials and logs user and mechanism, never the password", function()
    local kurir = setup({ "--tls" })
    local s = session()
    local r = { kurir.on.auth(s, { user = "alice", mechanism = "PLAIN", password = "s3cret" }) }
    assert.same({ true }, r)
    assert.same({ { event = "auth", fields = { user = "alice", mechanism = "PLAIN" } } }, s.logged)
  end)

  it("stores the message in the Maildir, logs one line and answers with the queue id", function()
    local box = os.tmpname()
    os.remove(box)
    local kurir = setup({ "--maildir", box })
    local s, msg = session(), message(false)
    local code, text = kurir.on.data(s, msg)
    assert.same(250, code)
    assert.same("2.0.0 Ok: queued as Q7", text)
    assert.same({ { dir = box, prefix = "Return-Path: <app@src.test>\r\n" ..
      "Delivered-To: a@x.test\r\nDelivered-To: b@y.test\r\n" } }, msg.stored)
    assert.same({ { event = "stored", fields = {
      id = "Q7", from = "app@src.test", to = "a@x.test,b@y.test", subject = "Hello there", size = 123,
      mailbox = "default", file = box .. "/new/1700000000.M1P2Q3.host" } } }, s.logged)
    os.execute("rm -rf '" .. box .. "'")
  end)

  it("logs an empty subject when there is none", function()
    local kurir = setup({})
    local s, msg = session(), message(false)
    msg.header = function() return nil end
    kurir.on.data(s, msg)
    assert.same("", s.logged[1].fields.subject)
  end)

  it("answers 451 4.3.0 when the message cannot be stored", function()
    local kurir = setup({})
    local s = session()
    local code, text = kurir.on.data(s, message(true))
    assert.same(451, code)
    assert.same("store_failed", text)   -- 4.3.0 Could not store the message, try again later
    assert.same("store_failed", s.logged[1].event)
    assert.truthy(tostring(s.logged[1].fields.error):find("./mail: No space left on device", 1, true))
  end)
end)

describe("scripts/mock.lua", function()
  it("hands kurir and arg to kurir.mock", function()
    local kurir = fake_kurir()
    local saved_kurir, saved_arg = package.loaded.kurir, _G.arg
    package.loaded.kurir = kurir
    _G.arg = { [0] = "scripts/mock.lua", "--maildir", "/tmp/m" }
    local ok, err = pcall(dofile, "scripts/mock.lua")
    package.loaded.kurir, _G.arg = saved_kurir, saved_arg
    assert.is_true(ok, err)
    assert.is_function(kurir.on.data)
    assert.same({ "mock server: every message is stored in the Maildir /tmp/m" }, kurir.logged)
  end)
end)
