-- End to end: scripted faults (lua/kurir/faults.lua) in the mock, set from
-- a script and at run time through PUT/DELETE /api/v1/faults, scoped per
-- mailbox: fail the first N attempts, a code at a stage for matching
-- addresses, delays, dropped connections (at a stage and mid-DATA), rate
-- limits and greylisting.

local socket = require "socket"
local harness = require "harness"
local http = require "http_client"
local client = require "smtp_client"
local send = require "mail_send"

teardown(harness.cleanup)

local function start(script)
  local o = {
    listen = { "127.0.0.1:0", "http://127.0.0.1:0" },
  }
  if script then
    o.script = script
    o.args = { "--maildir", "{dir}/mail" }
  else
    o.script_file = "scripts/mock.lua"
    o.args = { "--maildir", "{dir}/mail" }
  end
  local srv = harness.start(o)
  srv.http = http.port_of(srv)
  return srv
end

local function put_faults(srv, mailbox, json)
  local r = http.request(srv.http, "PUT", "/api/v1/faults" .. (mailbox and ("?mailbox=" .. mailbox) or ""), json,
    { ["Content-Type"] = "application/json" })
  return r
end

-- one transaction up to RCPT; returns the RCPT reply code and the client
local function rcpt(port, to)
  local c = client.open(port)
  c:expect(220)
  c:ehlo("f.test")
  c:check("MAIL FROM:<s@example.test>", 250)
  local code = c:cmd("RCPT TO:<" .. to .. ">")
  return code, c
end

describe("faults at run time (PUT /api/v1/faults)", function()
  local srv

  lazy_setup(function() srv = start() end)
  lazy_teardown(function() harness.finish(srv) end)

  it("fails the first N attempts for a recipient, then accepts", function()
    local r = put_faults(srv, "flaky", '{"rules": [{"stage": "rcpt", "first": 2}]}')
    assert.equals(200, r.status, r.body)
    local codes = {}
    for i = 1, 3 do
      local code, c = rcpt(srv.port, "u+flaky@example.test")
      codes[i] = code
      c:close()
    end
    assert.same({ 451, 451, 250 }, codes)
    -- another mailbox is not affected
    local code, c = rcpt(srv.port, "u+other@example.test")
    c:close()
    assert.equals(250, code)
  end)

  it("answers a given code at a stage for matching addresses, lists and clears rules", function()
    local r = put_faults(srv, nil, [[{"rules": [
      {"stage": "mail", "match": "@blocked%.test$", "code": 550, "text": "5.7.1 Blocked sender"},
      {"stage": "rcpt", "match": "^nobody@", "code": 550}]}]])
    assert.equals(200, r.status, r.body)
    local c = client.open(srv.port)
    c:expect(220)
    c:ehlo("f.test")
    c:check("MAIL FROM:<x@blocked.test>", 550, "550 5.7.1 Blocked sender")
    c:check("MAIL FROM:<x@fine.test>", 250)
    c:check("RCPT TO:<nobody@example.test>", 550)
    c:check("RCPT TO:<somebody@example.test>", 250)
    c:check("QUIT", 221)
    c:close()
    local l = http.get(srv.http, "/api/v1/faults")
    assert.equals(3, #l.json.rules)   -- with the flaky one
    assert.equals(200, http.request(srv.http, "DELETE", "/api/v1/faults?mailbox=flaky").status)
    assert.equals(2, #http.get(srv.http, "/api/v1/faults").json.rules)
    assert.equals(200, http.request(srv.http, "DELETE", "/api/v1/faults").status)
    assert.equals(0, #http.get(srv.http, "/api/v1/faults").json.rules)
    assert.truthy(http.get(srv.http, "/api/v1/faults").body:find('"rules":[]', 1, true))
  end)

  it("refuses bad rules with 400 and changes nothing", function()
    for _, body in ipairs {
      "not json", '{"rules": [{"stage": "nowhere", "code": 451}]}', '{"rules": [{"stage": "rcpt"}]}',
      '{"rules": [{"stage": "rcpt", "code": 99}]}', '{"rules": [{"stage": "rcpt", "match": "[", "code": 451}]}',
      '{"rules": [{"stage": "rcpt", "code": 451, "bogus": 1}]}', '{"rules": [{"stage": "mail", "drop": 10}]}',
    } do
      local r = put_faults(srv, "x", body)
      assert.equals(400, r.status, body)
      assert.truthy(r.json.error, body)
    end
    assert.equals(0, #http.get(srv.http, "/api/v1/faults").json.rules)
  end)

  it("delays a stage", function()
    put_faults(srv, "slow", '{"rules": [{"stage": "rcpt", "delay": 0.4}]}')
    local t0 = socket.gettime()
    local code, c = rcpt(srv.port, "u+slow@example.test")
    c:close()
    assert.equals(250, code)
    assert.truthy(socket.gettime() - t0 >= 0.35)
    http.request(srv.http, "DELETE", "/api/v1/faults")
  end)

  it("drops the connection at a stage, with no reply", function()
    put_faults(srv, "dropped", '{"rules": [{"stage": "rcpt", "drop": true}]}')
    local c = client.open(srv.port)
    c:expect(220)
    c:ehlo("f.test")
    c:check("MAIL FROM:<s@example.test>", 250)
    assert(c:send("RCPT TO:<u+dropped@example.test>\r\n"))
    local line, err = c:line(5)
    assert.is_nil(line)
    assert.truthy(err)
    c:close()
    assert.truthy(srv:wait_log("event=dropped stage=rcpt"))
    http.request(srv.http, "DELETE", "/api/v1/faults")
  end)

  it("drops the connection mid-DATA and stores nothing", function()
    put_faults(srv, "middata", '{"rules": [{"stage": "data", "drop": 10}]}')
    local c = client.open(srv.port)
    c:expect(220)
    c:ehlo("f.test")
    c:check("MAIL FROM:<s@example.test>", 250)
    c:check("RCPT TO:<u+middata@example.test>", 250)
    c:check("DATA", 354)
    c:send("Subject: cut\r\n\r\n" .. string.rep("x", 100) .. "\r\n")
    local line = c:line(5)
    assert.is_nil(line)
    c:close()
    assert.truthy(srv:wait_log("event=dropped stage=data bytes="))
    assert.equals(0, http.get(srv.http, "/api/v1/messages?mailbox=middata").json.total)
    http.request(srv.http, "DELETE", "/api/v1/faults")
    send.message(srv.port, { to = { "u+middata@example.test" } })
    assert.equals(1, http.get(srv.http, "/api/v1/messages?mailbox=middata").json.total)
  end)

  it("rate-limits messages with 421", function()
    put_faults(srv, nil, '{"rules": [{"rate": {"messages": 2, "per": 3600}}]}')
    send.message(srv.port, {})
    send.message(srv.port, {})
    local c = client.open(srv.port)
    c:expect(220)
    c:ehlo("f.test")
    c:check("MAIL FROM:<s@example.test>", 250)
    c:check("RCPT TO:<r@example.test>", 250)
    c:check("DATA", 354)
    c:send("Subject: third\r\n\r\nx\r\n.\r\n")
    c:expect(421)
    c:close()
    http.request(srv.http, "DELETE", "/api/v1/faults")
  end)

  it("rate-limits connections with 421", function()
    put_faults(srv, nil, '{"rules": [{"rate": {"connections": 1, "per": 3600}}]}')
    local c1 = client.open(srv.port)
    c1:expect(220)
    local c2 = client.open(srv.port)
    c2:expect(421)
    c1:close()
    c2:close()
    http.request(srv.http, "DELETE", "/api/v1/faults")
  end)

  it("greylists: 451 4.7.1 until the same triple retries after the delay", function()
    put_faults(srv, "grey", '{"rules": [{"greylist": 0.3}]}')
    local code, c = rcpt(srv.port, "u+grey@example.test")
    c:close()
    assert.equals(451, code)
    code, c = rcpt(srv.port, "u+grey@example.test")   -- too early
    c:close()
    assert.equals(451, code)
    socket.sleep(0.35)   -- the delay is the behaviour under test
    code, c = rcpt(srv.port, "u+grey@example.test")
    c:close()
    assert.equals(250, code)
    code, c = rcpt(srv.port, "u+grey@example.test")    -- remembered
    c:close()
    assert.equals(250, code)
    http.request(srv.http, "DELETE", "/api/v1/faults")
  end)
end)

describe("faults from a script", function()
  it("are set with opts.faults:add in a mock script, and kurir.faults works in any script", function()
    local srv = start [[
local kurir = require "kurir"
local opts = require("kurir.mock").setup(kurir, arg)
opts.faults:add { stage = "rcpt", match = "^twice@", first = 2, code = 452 }
]]
    local codes = {}
    for i = 1, 3 do
      local code, c = rcpt(srv.port, "twice@example.test")
      codes[i] = code
      c:close()
    end
    assert.same({ 452, 452, 250 }, codes)
    assert.equals(1, #http.get(srv.http, "/api/v1/faults").json.rules)
    harness.finish(srv)

    local plain = harness.start { script = [[
local kurir = require "kurir"
function kurir.on.data(s, msg) return 250, "2.0.0 kept" end
require("kurir.faults").new(kurir):add { stage = "mail", match = "^bad@", code = 553 }:install()
]] }
    local c = client.open(plain.port)
    c:expect(220)
    c:ehlo("f.test")
    c:check("MAIL FROM:<bad@example.test>", 553)
    c:check("MAIL FROM:<good@example.test>", 250)
    c:check("RCPT TO:<r@example.test>", 250)
    c:check("DATA", 354)
    c:send("Subject: s\r\n\r\nx\r\n.\r\n")
    c:expect(250)
    c:check("QUIT", 221)
    c:close()
    harness.finish(plain)
  end)

  it("refuses a bad rule at load time, naming it", function()
    local rc, out = harness.run { args = { "--check", "{script}" }, script = [[
local kurir = require "kurir"
require("kurir.faults").new(kurir):add { stage = "rcpt", code = 451, colour = "red" }
]] }
    assert.equals(1, rc)
    assert.truthy(out:find("unknown fault key 'colour'", 1, true), out)
    assert.truthy(out:find("script.lua:2", 1, true), out)
  end)
end)
