-- kurir.default: end-of-DATA delivery through each recipient's route.

local default = require "kurir.default"

local function route(name, result, err)
  local r = { name = name, calls = {} }
  function r.deliver(self, msg, rcpts)
    local list = {}
    for i, x in ipairs(rcpts) do list[i] = x.address end
    self.calls[#self.calls + 1] = { msg = msg, rcpts = list }
    if result == nil and err == nil then return true end
    return result, err
  end
  return r
end

local function rcpt(address, r)
  local user, domain = address:match("^(.*)@(.*)$")
  return { address = address, user = user, domain = domain, params = {}, route = r }
end

local function session()
  local s = { logged = {} }
  function s.log(self, event, fields) self.logged[#self.logged + 1] = { event = event, fields = fields } end
  return s
end

-- kurir.default answers with the rows of C's reply table (kurir.reply,
-- texts pinned by tests/unit/test_reply.c and tests/runtime/test_session.c);
-- here a stand-in shows which row and argument it chose.
local saved_kurir
local fake_kurir = {
  reply = function(name, arg) return 451, name .. (arg and " " .. arg or "") end,
}

describe("kurir.default.data", function()
  setup(function()
    saved_kurir = package.loaded.kurir
    package.loaded.kurir = fake_kurir
  end)
  teardown(function()
    package.loaded.kurir = saved_kurir
  end)

  it("groups recipients by route, one deliver call per route, in first-seen order", function()
    local a, b = route("a"), route("b")
    local msg = { id = "Q1", rcpts = { rcpt("1@a.test", a), rcpt("2@b.test", b), rcpt("3@a.test", a) } }
    local n = select("#", default.data(session(), msg))
    assert.same(0, n)
    assert.same(1, #a.calls)
    assert.same(1, #b.calls)
    assert.equal(msg, a.calls[1].msg)
    assert.same({ "1@a.test", "3@a.test" }, a.calls[1].rcpts)
    assert.same({ "2@b.test" }, b.calls[1].rcpts)
  end)

  it("works with agents whose deliver comes from a metatable", function()
    local calls = 0
    local Agent = { __index = { deliver = function() calls = calls + 1; return true end } }
    local r = setmetatable({}, Agent)
    assert.is_nil(default.data(session(), { rcpts = { rcpt("x@y.test", r), rcpt("z@y.test", r) } }))
    assert.same(1, calls)
  end)

  it("refuses with 451 4.3.5 naming the recipient without a route, before delivering anything", function()
    local a = route("a")
    local msg = { id = "Q2", rcpts = { rcpt("1@a.test", a), rcpt("lost@nowhere.test", nil) } }
    local code, text = default.data(session(), msg)
    assert.same(451, code)
    assert.same("no_delivery <lost@nowhere.test>", text)
    assert.same(0, #a.calls)
  end)

  it("treats a route without a deliver method as no route", function()
    for _, bad in ipairs({ "maildir", 42, true, {}, { deliver = "x" } }) do
      local code, text = default.data(session(), { rcpts = { rcpt("u@d.test", bad) } })
      assert.same(451, code)
      assert.same("no_delivery <u@d.test>", text)
    end
  end)

  it("answers a generic 451 4.3.0 when a delivery fails, and logs the agent's reason", function()
    local a, b, c = route("a"), route("b", nil, "disk full"), route("c")
    local s = session()
    local msg = { id = "Q3", rcpts = { rcpt("1@a.test", a), rcpt("2@b.test", b), rcpt("3@c.test", c) } }
    local code, text = default.data(s, msg)
    assert.same(451, code)
    assert.same("delivery_failed", text)
    assert.same(1, #a.calls)
    assert.same(0, #c.calls)
    assert.same("delivery_failed", s.logged[1].event)
    assert.same("disk full", s.logged[1].fields.error)
    assert.same("Q3", s.logged[1].fields.id)
  end)

  it("treats false as failure even without a reason", function()
    local code, text = default.data(session(), { rcpts = { rcpt("1@a.test", route("a", false)) } })
    assert.same(451, code)
    assert.same("delivery_failed", text)
  end)

  it("accepts a message with no recipients without calling anything", function()
    assert.same(0, select("#", default.data(session(), { rcpts = {} })))
  end)
end)
