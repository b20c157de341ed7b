-- smtp_client.lua - a raw SMTP client for the end-to-end specs.
--
-- Sends exactly the bytes it is given and parses replies strictly: every
-- reply line must end in CRLF, and a reply ends at the first line whose
-- fourth character is a space. All reads are bounded by a deadline.

local socket = require "socket"
local harness = require "harness"

local client = {}

local Conn = {}
Conn.__index = Conn

local TIMEOUT = 10

-- Connections not closed yet, so that a failing test's sockets can be
-- closed before its server is stopped (a graceful stop waits for them).
local open_conns = setmetatable({}, { __mode = "k" })

-- Connect to host (default 127.0.0.1) on port; nil, err on failure.
--   opts.bind: local source address (e.g. "127.0.0.2")
function client.connect(port, host, opts)
  host = host or "127.0.0.1"
  local sock = host:find(":", 1, true) and socket.tcp6() or socket.tcp()
  if not sock then return nil, "no socket" end
  if opts and opts.bind then
    local ok, err = sock:bind(opts.bind, 0)
    if not ok then sock:close() return nil, err end
  end
  sock:settimeout(TIMEOUT * harness.scale)
  local ok, err = sock:connect(host, port)
  if not ok then
    sock:close()
    return nil, err
  end
  sock:setoption("tcp-nodelay", true)
  local c = setmetatable({ sock = sock, buf = "", eof = false, port = port }, Conn)
  open_conns[c] = true
  return c
end

-- Like connect, but fails the test when the connection cannot be made.
function client.open(port, host, opts)
  local c, err = client.connect(port, host, opts)
  assert(c, "connect to " .. tostring(host or "127.0.0.1") .. ":" .. tostring(port) .. " failed: " ..
    tostring(err))
  return c
end

function Conn:send(bytes)
  self.sock:settimeout(TIMEOUT * harness.scale)
  local i = 1
  while i <= #bytes do
    local last, err = self.sock:send(bytes, i)
    if not last then return nil, err end
    i = last + 1
  end
  return true
end

-- Read more bytes into the buffer, waiting at most until deadline.
-- Returns true when bytes arrived, false on timeout, nil when closed.
function Conn:fill(deadline)
  if self.eof then return nil end
  local left = deadline - socket.gettime()
  if left < 0 then left = 0 end
  local r = socket.select({ self.sock }, nil, left)
  if not r or #r == 0 then
    if not self.sock:dirty() then return false end
  end
  self.sock:settimeout(0)
  local data, err, partial = self.sock:receive(65536)
  local got = data or partial
  if got and #got > 0 then self.buf = self.buf .. got end
  if err == "closed" then
    self.eof = true
    return got and #got > 0 or nil
  end
  if err and err ~= "timeout" then
    self.eof = true
    return nil
  end
  return got and #got > 0
end

-- One CRLF-terminated line (without CRLF), or nil, "closed"/"timeout".
function Conn:line(timeout)
  local deadline = socket.gettime() + (timeout or TIMEOUT) * harness.scale
  while true do
    local i = self.buf:find("\r\n", 1, true)
    if i then
      local line = self.buf:sub(1, i - 1)
      self.buf = self.buf:sub(i + 2)
      assert(not line:find("\n", 1, true), "reply line contains a bare LF: " .. string.format("%q", line))
      return line
    end
    local r = self:fill(deadline)
    if r == nil then return nil, "closed" end
    if r == false and socket.gettime() >= deadline then return nil, "timeout" end
  end
end

-- Read one complete reply. Returns code (number), text (lines joined with
-- "\n"), the lines table; or nil, "closed"/"timeout", lines read so far.
function Conn:reply(timeout)
  local lines = {}
  while true do
    local line, err = self:line(timeout)
    if not line then return nil, err, lines end
    lines[#lines + 1] = line
    assert(line:match("^%d%d%d[ -]") or line:match("^%d%d%d$"), "malformed reply line: " .. string.format("%q", line))
    assert(line:sub(1, 3) == lines[1]:sub(1, 3), "reply code changed inside a multi-line reply: " ..
      table.concat(lines, " | "))
    local sep = line:sub(4, 4)
    if sep == " " or sep == "" then
      return tonumber(line:sub(1, 3)), table.concat(lines, "\n"), lines
    end
  end
end

function Conn:cmd(line, timeout)
  local ok, err = self:send(line .. "\r\n")
  if not ok then return nil, err, {} end
  return self:reply(timeout)
end

-- EHLO; returns code, text, lines, and a set of the advertised keywords
-- (upper-case keyword -> rest of the line).
function Conn:ehlo(name)
  local code, text, lines = self:cmd("EHLO " .. (name or "client.e2e.test"))
  local ext = {}
  if code == 250 then
    for i = 2, #lines do
      local kw, rest = lines[i]:sub(5):match("^(%S+)%s*(.*)$")
      if kw then ext[kw:upper()] = rest end
    end
  end
  return code, text, lines, ext
end

-- Read a reply and assert its code (and, if given, that the full text
-- equals `text` exactly). Returns the text and lines.
function Conn:expect(code, text, timeout)
  local c, t, lines = self:reply(timeout)
  assert(c == code, "expected " .. code .. (text and (" " .. text) or "") .. ", got " .. tostring(c) ..
    " " .. tostring(t) .. (lines and #lines > 0 and (" [" .. table.concat(lines, " | ") .. "]") or ""))
  if text then
    assert(t == text, "expected reply " .. string.format("%q", text) .. ", got " .. string.format("%q", t))
  end
  return t, lines
end

-- Send a command and expect an exact reply (full text) or a code.
function Conn:check(line, code, text, timeout)
  assert(self:send(line .. "\r\n"))
  return self:expect(code, text, timeout)
end

-- Prove that no reply is pending beyond those read so far: the reply to
-- an unknown verb sent now must be the very next one (500).
function Conn:in_step()
  local code, text = self:cmd("XNEXT")
  assert(code == 500, "an extra reply before the one to XNEXT: " .. tostring(text))
end

-- True when the server closed the connection within timeout seconds
-- (bytes that arrive meanwhile stay buffered for line()/reply()).
function Conn:closed(timeout)
  local deadline = socket.gettime() + (timeout or TIMEOUT) * harness.scale
  while true do
    if self.eof then return true end
    local r = self:fill(deadline)
    if r == nil then return true end
    if r == false and socket.gettime() >= deadline then return false end
  end
end

-- True when bytes are waiting (or the peer closed) within timeout seconds.
function Conn:readable(timeout)
  if #self.buf > 0 or self.eof then return true end
  local r = self:fill(socket.gettime() + (timeout or 0))
  return r ~= false or #self.buf > 0
end

function Conn:close()
  if self.sock then self.sock:close() end
  self.sock = nil
  open_conns[self] = nil
end

-- Close every connection still open (connections to `port` only, if given).
function client.close_all(port)
  local list = {}
  for c in pairs(open_conns) do
    if not port or c.port == port then list[#list + 1] = c end
  end
  for _, c in ipairs(list) do c:close() end
end

client.Conn = Conn
return client
