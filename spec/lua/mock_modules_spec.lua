-- kurir.mockquery (search syntax), kurir.faults rule checking and the
-- JSON encoding of kurir.mockapi, without a server.

local query = require "kurir.mockquery"
local faults = require "kurir.faults"
local api = require "kurir.mockapi"

local function entry(o)
  local e = {
    subject = "Hello World", search_from = "app@example.test app <app@example.test>",
    search_to = "ana+t@example.test ana <ana@example.test>", search_text = "hello world\nbody words",
    received = 1700000000, attachments = 0, read = false,
  }
  for k, v in pairs(o or {}) do e[k] = v end
  return e
end

describe("kurir.mockquery", function()
  it("matches every kind of term, all terms at once", function()
    local function m(q, e) return query.match(assert(query.parse(q)), e or entry()) end
    assert.is_true(m(""))
    assert.is_true(m("from:APP"))
    assert.is_false(m("from:ana"))
    assert.is_true(m("to:ana"))
    assert.is_true(m("subject:world"))
    assert.is_true(m("body"))
    assert.is_false(m("body missing"))
    assert.is_true(m('subject:"hello world"'))
    assert.is_true(m("-subject:bye"))
    assert.is_false(m("has:attachment"))
    assert.is_true(m("has:attachment", entry { attachments = 2 }))
    assert.is_true(m("is:unread"))
    assert.is_true(m("is:read", entry { read = true }))
    assert.is_true(m("before:2023-11-15 after:2023-11-14"))
    assert.is_false(m("after:2023-11-14T22:13:21"))
    assert.is_true(m("after:2023-11-14T22:13:20"))
    assert.is_true(m("before:1700000001"))
  end)

  it("computes UTC times without the local time zone", function()
    assert.equals(0, query.parse_time("1970-01-01"))
    assert.equals(1700000000, query.parse_time("2023-11-14T22:13:20"))
    assert.equals(951782400, query.parse_time("2000-02-29"))
    assert.is_nil(query.parse_time("2023-13-01"))
    assert.is_nil(query.parse_time("yesterday"))
  end)

  it("refuses bad terms with a reason", function()
    local t, err = query.parse("before:soon")
    assert.is_nil(t)
    assert.truthy(err:find("before:", 1, true))
    assert.is_nil((query.parse('"open')))
    assert.is_nil((query.parse(string.rep("x", 5000))))
  end)
end)

describe("kurir.faults rules", function()
  it("normalises good rules and names what is wrong in bad ones", function()
    assert.equals(451, faults.rule { stage = "rcpt", first = 2 }.code)
    assert.equals(421, faults.rule { rate = { messages = 3, per = 1 } }.code)
    assert.equals("data", faults.rule { rate = { messages = 3, per = 1 } }.stage)
    assert.equals("connect", faults.rule { rate = { connections = 3, per = 1 } }.stage)
    assert.equals(100, faults.rule { stage = "data", drop = 100.0 }.drop)
    for _, case in ipairs {
      { {}, "stage" },
      { { stage = "rcpt" }, "needs code" },
      { { stage = "rcpt", code = 600 }, "code" },
      { { stage = "rcpt", code = 451, match = "[" }, "pattern" },
      { { stage = "rcpt", code = 451, text = "a\r\nb" }, "one line" },
      { { stage = "helo", drop = 5 }, "stage data" },
      { { rate = { per = 1 } }, "rate" },
      { { stage = "rcpt", code = 451, mailbox = "" }, "mailbox" },
      { { stage = "rcpt", code = 451, x = 1 }, "unknown fault key 'x'" },
    } do
      local r, err = faults.rule(case[1])
      assert.is_nil(r)
      assert.truthy(err:find(case[2], 1, true), err)
    end
    assert.has_error(function() faults.new():add { stage = "nowhere", code = 451 } end)
  end)

  it("replaces one scope and leaves the others", function()
    local f = faults.new()
    f:add { stage = "rcpt", code = 550 }
    assert.is_true(f:replace("a", { { stage = "mail", code = 451 } }))
    assert.is_true(f:replace("b", { { stage = "mail", code = 452 } }))
    assert.equals(3, #f:list())
    local ok, err = f:replace("a", { { stage = "bad" } })
    assert.is_nil(ok)
    assert.truthy(err:find("rules[1]", 1, true))
    assert.equals(3, #f:list())
    f:clear("a")
    assert.equals(2, #f:list())
    f:clear(nil, true)
    assert.equals(0, #f:list())
  end)
end)

describe("kurir.mockapi JSON", function()
  it("keeps empty arrays as [] and objects with sorted keys", function()
    assert.equals('{"a":[],"b":{},"c":[1,2],"d":"x\\"y"}',
      api.encode { a = api.array(), b = {}, c = { 1, 2 }, d = 'x"y' })
    assert.equals("null", api.encode(nil))
    assert.equals("[true,false]", api.encode { true, false })
  end)
end)
