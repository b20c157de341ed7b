-- kurir.maildir: template expansion, grouping per directory, the exact
-- header prefix handed to msg:store_maildir, and failures.

local maildir = require "kurir.maildir"

local function addr(address)
  local user, domain = address:match("^(.*)@(.*)$")
  if not user then user, domain = address, "" end
  return { address = address, user = user, domain = domain, params = {} }
end

-- A message whose store_maildir records its calls; fail_dir makes that
-- directory fail.
local function fake_msg(from, rcpts, fail_dir)
  local msg = { id = "Q1", size = 10, from = addr(from), rcpts = {}, calls = {} }
  for i, r in ipairs(rcpts) do msg.rcpts[i] = addr(r) end
  function msg.store_maildir(self, dir, prefix)
    self.calls[#self.calls + 1] = { dir = dir, prefix = prefix }
    if dir == fail_dir then return nil, "Permission denied" end
    return "new/" .. #self.calls .. ".host"
  end
  return msg
end

describe("kurir.maildir.new", function()
  it("makes an agent with kind and a readable name", function()
    local a = maildir.new("mail/%{user}")
    assert.same("maildir", a.kind)
    assert.same("maildir(mail/%{user})", tostring(a))
    assert.is_function(a.deliver)
  end)

  it("refuses a missing template and unknown placeholders at the caller's line", function()
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() local a = maildir.new(); return a end)
    assert.is_false(ok)
    assert.same("spec/lua/maildir_spec.lua:" .. line ..
      ": kurir.maildir: expected a directory template string, got nil", err)
    assert.is_false((pcall(maildir.new, "")))
    ok, err = pcall(maildir.new, "mail/%{local}")
    assert.is_false(ok)
    assert.truthy(err:find("unknown placeholder %{local}", 1, true), err)
  end)
end)

describe("kurir.maildir prepare", function()
  it("refuses a template whose directory depends on the recipient", function()
    local ok, err = pcall(function() return maildir.new("mail/%{user}"):prepare() end)
    assert.is_false(ok)
    assert.truthy(err:find("cannot prepare \"mail/%{user}\" before delivery", 1, true), err)
  end)

  it("hands a fixed directory to the engine and reports its error", function()
    local saved = maildir.prepare_dir
    local seen
    maildir.prepare_dir = function(dir) seen = dir return nil, dir .. ": Permission denied" end
    local ok, err = pcall(function() return maildir.new("/x/mail"):prepare() end)
    maildir.prepare_dir = saved
    assert.same("/x/mail", seen)
    assert.is_false(ok)
    assert.truthy(err:find("kurir.maildir: cannot create /x/mail: Permission denied", 1, true), err)
  end)
end)

describe("kurir.maildir expansion", function()
  local function expand(template, address)
    return maildir.new(template):expand(addr(address))
  end

  it("fills user, domain and address", function()
    assert.same("mail/bob", expand("mail/%{user}", "bob@example.test"))
    assert.same("mail/example.test/bob", expand("mail/%{domain}/%{user}", "bob@example.test"))
    assert.same("mail/bob@example.test/x", expand("mail/%{address}/x", "bob@example.test"))
    assert.same("/srv/all", expand("/srv/all", "bob@example.test"))
  end)

  it("lowercases the domain, keeps the local part", function()
    assert.same("mail/example.test/Bob", expand("mail/%{domain}/%{user}", "Bob@EXAMPLE.Test"))
    assert.same("Bob@example.test", expand("%{address}", "Bob@EXAMPLE.Test"))
  end)

  it("cannot escape the directory", function()
    assert.same("mail/%2E.%2F..%2Fetc", expand("mail/%{user}", "../../etc@x.test"))
    assert.same("mail/%2E..", expand("mail/%{user}", "...@x.test"))
    assert.same("mail/%2E", expand("mail/%{user}", ".@x.test"))
    assert.same("mail/a%2Fb", expand("mail/%{user}", "a/b@x.test"))
    assert.same("mail/a%00b%0Ac%7F", expand("mail/%{user}", "a\0b\nc\127@x.test"))
    assert.same("mail/%2Ex@y", expand("mail/%{address}", ".x@y"))
    assert.same("mail/%/postmaster", expand("mail/%{domain}/%{user}", "postmaster"))
    assert.same("mail/%", expand("mail/%{user}", "@x.test"))
  end)

  it("never maps two local parts to one Maildir (the encoding is reversible)", function()
    local seen = {}
    for _, a in ipairs { "a/b@x.test", "a_b@x.test", "a%2Fb@x.test", "a%b@x.test", "_@x.test", "@x.test",
                         ".a@x.test", "%2Ea@x.test" } do
      local d = expand("mail/%{user}", a)
      assert.is_nil(seen[d], a .. " and " .. tostring(seen[d]) .. " share " .. d)
      seen[d] = a
    end
    assert.same("mail/a_b", expand("mail/%{user}", "a_b@x.test"))
    assert.same("mail/a%252Fb", expand("mail/%{user}", "a%2Fb@x.test"))
  end)

  it("does not expand ~/", function()
    assert.same("~/Maildir", expand("~/Maildir", "bob@x.test"))
  end)
end)

describe("kurir.maildir deliver", function()
  it("stores one copy per directory with Return-Path and Delivered-To lines", function()
    local agent = maildir.new("mail/%{user}")
    local msg = fake_msg("sender@src.test", { "a@x.test", "b@x.test", "a@y.test" })
    local ok, names = agent:deliver(msg)
    assert.is_true(ok)
    assert.same({ "new/1.host", "new/2.host" }, names)
    assert.same({
      { dir = "mail/a", prefix = "Return-Path: <sender@src.test>\r\nDelivered-To: a@x.test\r\n" ..
        "Delivered-To: a@y.test\r\n" },
      { dir = "mail/b", prefix = "Return-Path: <sender@src.test>\r\nDelivered-To: b@x.test\r\n" },
    }, msg.calls)
  end)

  it("stores once for a fixed directory", function()
    local msg = fake_msg("s@src.test", { "a@x.test", "b@y.test" })
    local ok, names = maildir.new("./mail"):deliver(msg)
    assert.is_true(ok)
    assert.same({ "new/1.host" }, names)
    assert.same(1, #msg.calls)
    assert.same("Return-Path: <s@src.test>\r\nDelivered-To: a@x.test\r\nDelivered-To: b@y.test\r\n",
      msg.calls[1].prefix)
  end)

  it("writes Return-Path: <> for the null sender", function()
    local msg = fake_msg("", { "a@x.test" })
    msg.from = { address = "", user = "", domain = "", params = {} }
    maildir.new("m"):deliver(msg)
    assert.same("Return-Path: <>\r\nDelivered-To: a@x.test\r\n", msg.calls[1].prefix)
  end)

  it("delivers only the recipients it is given", function()
    local msg = fake_msg("s@src.test", { "a@x.test", "b@x.test" })
    local ok = maildir.new("m/%{user}"):deliver(msg, { msg.rcpts[2] })
    assert.is_true(ok)
    assert.same({ { dir = "m/b", prefix = "Return-Path: <s@src.test>\r\nDelivered-To: b@x.test\r\n" } },
      msg.calls)
  end)

  it("never lets an address add header lines", function()
    local msg = fake_msg("s@src.test", { "a@x.test" })
    msg.from.address = "evil\r\nX-Injected: 1"
    msg.rcpts[1].address = "a@x.test\r\nX-Other: 2"
    maildir.new("m"):deliver(msg)
    assert.same("Return-Path: <evilX-Injected: 1>\r\nDelivered-To: a@x.testX-Other: 2\r\n", msg.calls[1].prefix)
  end)

  it("returns nil and the directory with the reason when a store fails", function()
    local msg = fake_msg("s@src.test", { "a@x.test", "b@x.test", "c@x.test" }, "m/b")
    local ok, err = maildir.new("m/%{user}"):deliver(msg)
    assert.is_nil(ok)
    assert.same("m/b: Permission denied", err)
    assert.same(2, #msg.calls)
  end)

  it("serves as a route for kurir.default", function()
    local default = require "kurir.default"
    local agent = maildir.new("m/%{domain}")
    local msg = fake_msg("s@src.test", { "a@x.test", "b@y.test" })
    for _, r in ipairs(msg.rcpts) do r.route = agent end
    assert.same(0, select("#", default.data(nil, msg)))
    assert.same(2, #msg.calls)
    assert.same("m/x.test", msg.calls[1].dir)
    assert.same("m/y.test", msg.calls[2].dir)
  end)
end)
