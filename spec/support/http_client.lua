-- http_client.lua - a small HTTP/1.1 client for the end-to-end specs
-- (luasocket; one request per connection, "Connection: close"). Responses
-- are parsed strictly enough for our own server: status line, headers,
-- a Content-Length body or a chunked one. Every read has a deadline.

local socket = require "socket"
local harness = require "harness"
local cjson = require "cjson"

local http = {}

local TIMEOUT = 10

local function read_response(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, "no status line: " .. tostring(err) end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return nil, "bad status line: " .. line end
  local headers = {}
  while true do
    local h = sock:receive("*l")
    if not h then return nil, "headers cut" end
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  local body
  if headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local size = sock:receive("*l")
      local n = size and tonumber(size:match("^%x+"), 16)
      if not n then return nil, "bad chunk size" end
      if n == 0 then sock:receive("*l") break end
      parts[#parts + 1] = sock:receive(n)
      sock:receive("*l")
    end
    body = table.concat(parts)
  elseif headers["content-length"] then
    body = sock:receive(tonumber(headers["content-length"])) or ""
  else
    body = sock:receive("*a") or ""
  end
  return { status = status, headers = headers, body = body }
end
http.read_response = read_response

--- Open a connection and send the request head (and body); returns the socket.
function http.send(port, method, path, body, headers)
  local sock = assert(socket.tcp())
  sock:settimeout(TIMEOUT * harness.scale)
  assert(sock:connect("127.0.0.1", port))
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1:" .. port, "Connection: close" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  assert(sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")))
  return sock
end

--- One request: returns { status, headers, body, json } (json when the
-- body is JSON).
function http.request(port, method, path, body, headers)
  local sock = http.send(port, method, path, body, headers)
  local r, err = read_response(sock)
  sock:close()
  assert(r, err)
  if (r.headers["content-type"] or ""):find("json", 1, true) and r.body ~= "" then
    r.json = cjson.decode(r.body)
  end
  return r
end

function http.get(port, path) return http.request(port, "GET", path) end

--- The port of the server's http:// listener, from its `listening` log line.
function http.port_of(server)
  local p = server:wait_log("event=listening address=http://[^\n]-:(%d+)")
  return assert(tonumber(p), "no http listener in the log\n" .. server:describe())
end

return http
