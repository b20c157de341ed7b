-- End to end: what a policy author trips over (issue 6 section 8). A hook
-- returning a string is logged with the hook's file:line and the value;
-- replacing kurir.on is an error (also for --check); rcpt.route that is not
-- an agent is caught at RCPT; a data hook that drops a message silently is
-- warned about unless it used msg:discard() / kurir.discard(); kurir.now()
-- and kurir.time(); require of a module next to the script.

local harness = require "harness"
local client = require "smtp_client"

teardown(harness.cleanup)

local function session(port)
  local c = client.open(port)
  c:expect(220)
  local code, text = c:ehlo("author.e2e.test")
  assert.equals(250, code, text)
  return c
end

local function message(c, rcpt, subject)
  c:check("MAIL FROM:<a@example.test>", 250)
  local code, text = c:cmd("RCPT TO:<" .. rcpt .. ">", 10)
  if code ~= 250 then return code, text end
  c:check("DATA", 354)
  assert(c:send("Subject: " .. (subject or "x") .. "\r\n\r\nbody\r\n.\r\n"))
  return c:reply(10)
end

describe("a hook returning a string", function()
  it("is an error logged with the hook's file:line and the value", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"

function kurir.on.rcpt(s, rcpt)
  return "550 go away"
end
]] }
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 451)
    local line = srv:wait_log("[^\n]*event=hook_error[^\n]*")
    assert.truthy(line, srv:describe())
    local f = harness.logfmt(line)
    assert.equals("rcpt", f.hook)
    assert.truthy(f.error:find("hook returned a string", 1, true), line)
    assert.truthy(f.where:match("script%.lua:3$"), line)
    assert.equals('"550 go away"', f.returned)
    assert.is_nil(f.traceback, line)
    c:close()
    harness.finish(srv)
  end)
end)

describe("kurir.on = { ... }", function()
  local SCRIPT = [[
local kurir = require "kurir"
kurir.on = { rcpt = function() return false end }
]]
  it("is refused at load time, naming the line", function()
    local rc, out = harness.run { args = { "--check", "{script}" }, script = SCRIPT }
    assert.equals(1, rc, out)
    assert.truthy(out:find("script.lua:2: kurir.on cannot be replaced", 1, true), out)
  end)
end)

describe("rcpt.route", function()
  it("that is not a delivery agent gets 451 at RCPT and a clear log line", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"
function kurir.on.rcpt(s, rcpt)
  if rcpt.user == "good" then rcpt.route = kurir.maildir(arg[1] .. "/%{user}") return end
  rcpt.route = "/var/mail/" .. rcpt.user
end
]], args = { "{dir}/mail" } }
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    local code, text = c:cmd("RCPT TO:<bad@example.test>")
    assert.equals(451, code, text)
    assert.truthy(text:match("^451 4%.3%.0 "), text)
    local line = srv:wait_log("[^\n]*event=bad_route[^\n]*")
    assert.truthy(line, srv:describe())
    assert.truthy(line:find('rcpt.route must be a delivery agent', 1, true), line)
    assert.truthy(line:find('string \\"/var/mail/bad\\"', 1, true), line)
    -- the session goes on; a good route is still taken
    c:check("RCPT TO:<good@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: x\r\n\r\nbody\r\n.\r\n"))
    c:expect(250)
    assert.equals(1, #harness.maildir_new(srv.dir .. "/mail/good"))
    c:close()
    harness.finish(srv)
  end)
end)

describe("a data hook that stores nothing", function()
  it("logs a warning per message unless it discarded on purpose", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"
function kurir.on.rcpt(s, rcpt)
  if rcpt.user == "route" then rcpt.route = kurir.discard() end
end
function kurir.on.data(s, msg)
  local subject = msg:header("Subject")
  if subject == "discard" then msg:discard() end
  if subject == "route" then return end
  if subject == "raw" then local _ = msg:raw() end
  return 250
end
]] }
    local c = session(srv.port)
    local code, text = message(c, "b@example.test", "forgotten")
    assert.equals(250, code, text)
    local id = text:match("queued as (%S+)")
    local line = srv:wait_log("[^\n]*event=message_dropped[^\n]*")
    assert.truthy(line, srv:describe())
    assert.equals(id, harness.logfmt(line).id)
    assert.truthy(line:find("level=warn", 1, true), line)
    for _, subject in ipairs { "discard", "raw" } do
      code, text = message(c, "b@example.test", subject)
      assert.equals(250, code, text)
    end
    c:check("QUIT", 221)
    assert.truthy(srv:wait_log("event=disconnect"))
    local _, n = srv:log():gsub("event=message_dropped", "")
    assert.equals(1, n, srv:describe())
    harness.finish(srv)
  end)

  it("does not warn for a recipient routed to kurir.discard()", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"
function kurir.on.rcpt(s, rcpt) rcpt.route = kurir.discard() end
]] }
    local c = session(srv.port)
    local code, text = message(c, "b@example.test", "dropped on purpose")
    assert.equals(250, code, text)
    c:check("QUIT", 221)
    assert.truthy(srv:wait_log("event=disconnect"))
    assert.is_nil(srv:log():find("message_dropped", 1, true), srv:describe())
    harness.finish(srv)
  end)
end)

describe("kurir.now() and kurir.time()", function()
  it("are fractional seconds: monotonic and wall clock", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"
function kurir.on.rcpt(s, rcpt)
  local t0, w0 = kurir.now(), kurir.time()
  kurir.sleep(0.05)
  local dt, dw = kurir.now() - t0, kurir.time() - w0
  return 250, string.format("2.1.5 %s %.3f %.3f %.0f", math.type(t0), dt, dw, w0)
end
]] }
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    local code, text = c:cmd("RCPT TO:<b@example.test>")
    assert.equals(250, code, text)
    local kind, dt, dw, w0 = text:match("2%.1%.5 (%a+) ([%d.]+) ([%d.]+) (%d+)")
    assert.equals("float", kind, text)
    assert.is_true(tonumber(dt) >= 0.045 and tonumber(dt) < 5, text)
    assert.is_true(tonumber(dw) >= 0.04 and tonumber(dw) < 5, text)
    assert.is_true(math.abs(tonumber(w0) - os.time()) < 60, text)
    c:close()
    harness.finish(srv)
  end)
end)

describe("package.path", function()
  it("has the script's own directory, whatever the working directory", function()
    local dir = harness.tmpdir()
    harness.write_file(dir .. "/helper.lua", 'return { greeting = "helped" }\n')
    harness.write_file(dir .. "/site.lua", [[
local kurir = require "kurir"
local helper = require "helper"
function kurir.on.rcpt(s, rcpt) return 250, "2.1.5 " .. helper.greeting end
]])
    local srv = harness.start { script_file = dir .. "/site.lua", cwd = "/" }
    local c = session(srv.port)
    c:check("MAIL FROM:<a@example.test>", 250)
    local code, text = c:cmd("RCPT TO:<b@example.test>")
    assert.equals(250, code, text)
    assert.truthy(text:find("helped", 1, true), text)
    c:close()
    harness.finish(srv)
    harness.rmtree(dir)
  end)
end)
