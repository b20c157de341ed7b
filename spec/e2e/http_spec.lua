-- End to end: http:// listeners on kurir's own event loop (core/http/http.c).
-- A script answers requests through kurir.http.handle; a request it does
-- not answer at once stays open (a suspended connection) until Lua
-- answers it or its deadline does, and nothing of it blocks SMTP.

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"
local http = require "http_client"

teardown(harness.cleanup)

local SCRIPT = [[
local kurir = require "kurir"
local waiting = {}
kurir.http.handle(function(req)
  if req.path == "/wait" then
    req:deadline(tonumber(req.query.t), 408, "timed out\n", { ["Content-Type"] = "text/plain" })
    waiting[#waiting + 1] = req
  elseif req.path == "/fire" then
    local n = 0
    for _, w in ipairs(waiting) do
      if w:respond(200, "fired\n") then n = n + 1 end
    end
    waiting = {}
    req:respond(200, tostring(n))
  elseif req.path == "/boom" then
    error("handler bug")
  elseif req.path == "/echo" then
    req:respond(200, req.method .. " " .. req.path .. " a=" .. tostring(req.query.a) .. " body=" .. req.body,
      { ["Content-Type"] = "text/plain", ["X-Test"] = req:header("X-In") or "none" })
  elseif req.path == "/later" then
    waiting[#waiting + 1] = req
  else
    req:respond(404, "no\n")
  end
end)
function kurir.on.data(s, msg)
  for _, w in ipairs(waiting) do w:respond(200, "stored " .. msg.id) end
  waiting = {}
  return 250, "2.0.0 Ok: queued as " .. msg.id
end
]]

describe("http:// listener", function()
  local srv, port

  lazy_setup(function()
    srv = harness.start { script = SCRIPT, listen = { "127.0.0.1:0", "http://127.0.0.1:0" } }
    port = http.port_of(srv)
  end)

  lazy_teardown(function() harness.finish(srv) end)

  it("binds port 0 and names the real port in the listening line", function()
    assert.truthy(port > 0)
    assert.truthy(srv:log():find("event=listening address=http://127.0.0.1:" .. port, 1, true))
  end)

  it("hands method, path, decoded query, headers and body to the handler", function()
    local r = http.request(port, "POST", "/echo?a=x%20y", "payload", { ["X-In"] = "hi" })
    assert.equals(200, r.status)
    assert.equals("POST /echo a=x y body=payload", r.body)
    assert.equals("hi", r.headers["x-test"])
    assert.equals("text/plain", r.headers["content-type"])
  end)

  it("answers at the deadline when Lua does not (408)", function()
    local t0 = socket.gettime()
    local r = http.get(port, "/wait?t=0.3")
    assert.equals(408, r.status)
    assert.equals("timed out\n", r.body)
    assert.truthy(socket.gettime() - t0 >= 0.25)
  end)

  it("answers a suspended request later from other Lua code; a late answer returns false", function()
    local waiter = http.send(port, "GET", "/wait?t=" .. 10 * harness.scale)
    local timed_out = http.send(port, "GET", "/wait?t=0.05")
    local r2 = http.read_response(timed_out)
    timed_out:close()
    assert.equals(408, r2.status)
    local fire = http.get(port, "/fire")
    assert.equals("1", fire.body)    -- the timed-out one says false
    local r = http.read_response(waiter)
    waiter:close()
    assert.equals(200, r.status)
    assert.equals("fired\n", r.body)
  end)

  it("answers a waiting request from the data hook before the client reads its 250", function()
    local waiter = http.send(port, "GET", "/later")
    -- the request is registered once its handler ran: a second request on
    -- another connection is handled after it (one loop, in order)
    assert.equals(404, http.get(port, "/nothing").status)
    local c = client.open(srv.port)
    c:expect(220)
    c:ehlo("x.test")
    c:check("MAIL FROM:<a@x.test>", 250)
    c:check("RCPT TO:<b@x.test>", 250)
    c:check("DATA", 354)
    c:send("Subject: t\r\n\r\nbody\r\n.\r\n")
    local reply = c:expect(250)
    waiter:settimeout(0.5 * harness.scale)
    local r = assert(http.read_response(waiter))
    waiter:close()
    assert.equals(200, r.status)
    assert.equals("stored " .. reply:match("queued as (%S+)"), r.body)
    c:check("QUIT", 221)
    c:close()
  end)

  it("turns a handler error into 500 and a log line", function()
    local r = http.get(port, "/boom")
    assert.equals(500, r.status)
    assert.truthy(srv:wait_log("event=http_handler_error path=/boom"))
  end)

  it("refuses huge headers and malformed requests without disturbing SMTP", function()
    -- the server may answer and close before it read all of it: ignore
    -- the send result, read the answer
    local b = assert(socket.tcp())
    b:settimeout(5 * harness.scale)
    assert(b:connect("127.0.0.1", port))
    b:send("GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("a", 20 * 1024) .. "\r\n\r\n")
    local status = b:receive("*l")
    b:close()
    assert.truthy(status and status:match("^HTTP/1%.1 431"), tostring(status))
    local s = assert(socket.tcp())
    s:settimeout(5 * harness.scale)
    assert(s:connect("127.0.0.1", port))
    s:send("GARBAGE\r\n\r\n")
    local line = s:receive("*l")
    s:close()
    assert.truthy(line == nil or line:match("^HTTP/1%.%d 4%d%d"), line)
    -- a slow client holding a half-sent request does not hold up SMTP
    local slow = assert(socket.tcp())
    assert(slow:connect("127.0.0.1", port))
    slow:send("GET /echo HTTP/1.1\r\nHost: x\r\n")
    local c = client.open(srv.port)
    c:expect(220)
    c:check("NOOP", 250)
    c:check("QUIT", 221)
    c:close()
    slow:close()
    assert.equals(200, http.get(port, "/echo").status)
  end)
end)

describe("http:// listener under hostile clients", function()
  local srv, port

  lazy_setup(function()
    srv = harness.start { script = SCRIPT, listen = { "127.0.0.1:0", "http://127.0.0.1:0" } }
    port = http.port_of(srv)
  end)

  lazy_teardown(function() harness.finish(srv) end)

  it("keeps serving SMTP and HTTP while 200 clients trickle half a request each", function()
    local slow = {}
    for i = 1, 200 do
      local s = assert(socket.tcp())
      assert(s:connect("127.0.0.1", port))
      s:send("GET /echo?n=" .. i .. " HTTP/1.1\r\nHost: x\r\nX-Slow: ")
      slow[#slow + 1] = s
    end
    local c = client.open(srv.port)
    c:expect(220)
    c:ehlo("x.test")
    c:check("MAIL FROM:<a@x.test>", 250)
    c:check("RCPT TO:<b@x.test>", 250)
    c:check("DATA", 354)
    c:send("Subject: t\r\n\r\nbody\r\n.\r\n")
    c:expect(250)
    c:check("QUIT", 221)
    c:close()
    assert.equals(200, http.get(port, "/echo").status)
    for _, s in ipairs(slow) do s:close() end
  end)

  it("answers 413 to a body over 1 MiB without calling the handler", function()
    local s = http.send(port, "POST", "/echo", string.rep("b", 1024 * 1024 + 1))
    local r = assert(http.read_response(s))
    s:close()
    assert.equals(413, r.status)
  end)

  it("survives requests cut at every point", function()
    local req = "POST /echo?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
    for cut = 1, #req - 1, 3 do
      local s = assert(socket.tcp())
      assert(s:connect("127.0.0.1", port))
      s:send(req:sub(1, cut))
      s:close()
    end
    local r = http.request(port, "POST", "/echo?a=1", "body")
    assert.equals("POST /echo a=1 body=body", r.body)
  end)
end)

describe("http:// listener on the command line", function()
  it("rejects a bad http:// address with exit 2", function()
    local rc, out = harness.run { args = { "-l", "http://nowhere:80", "{script}" }, script = "" }
    assert.equals(2, rc, out)
  end)

  it("answers 404 when the script has no handler", function()
    local srv = harness.start { script = "", listen = { "127.0.0.1:0", "http://127.0.0.1:0" } }
    local r = http.get(http.port_of(srv), "/")
    assert.equals(404, r.status)
    harness.finish(srv)
  end)
end)
