-- kurir.route: routes as data. A route is a table { agent = NAME, ... }
-- whose metatable carries __kurir_route; the engine stores its fields
-- (strings, numbers, booleans, lists of them) with each queued recipient,
-- so a route survives a restart. The factories check their arguments when
-- the script calls them, so a bad route fails at load time with the
-- script's file:line. kurir.maildir lives in kurir.maildir (it can also
-- deliver before the 250); the others deliver from the queue.

local route = {}

local Route = { __kurir_route = true }
Route.__index = Route

function Route:__tostring()
  local label = self.path or (self.argv and table.concat(self.argv, " ")) or self.host or self.socket
    or self.name or ""
  return self.agent .. "(" .. label .. ")"
end

local FIELDS = { user = true, domain = true, address = true }

local function check_template(fname, t, what)
  if type(t) ~= "string" or t == "" then
    error(fname .. ": expected " .. what .. ", got " .. type(t), 3)
  end
  if t:find("[%z\r\n]") then
    error(fname .. ": control characters in \"" .. t .. "\"", 3)
  end
  for name in t:gmatch("%%{([^}]*)}") do
    if not FIELDS[name] then
      error(fname .. ": unknown placeholder %{" .. name .. "} in \"" .. t ..
        "\" (%{user}, %{domain}, %{address})", 3)
    end
  end
end

--- kurir.mbox "path/%{user}": append to an mbox file (fcntl-locked).
function route.mbox(path)
  check_template("kurir.mbox", path, "a file name template string")
  return setmetatable({ agent = "mbox", path = path }, Route)
end

--- kurir.pipe { "cmd", "arg", ..., timeout = seconds }: run a command (no
-- shell) with the message on stdin. Exit 0 delivered, 75 retried, other
-- codes a permanent failure.
function route.pipe(spec)
  if type(spec) ~= "table" or type(spec[1]) ~= "string" then
    error("kurir.pipe: expected { \"command\", \"arg\", ... }, got " .. type(spec), 2)
  end
  if spec[1]:sub(1, 1) ~= "/" then
    error("kurir.pipe: the command must be an absolute path, got \"" .. spec[1] .. "\"", 2)
  end
  local argv = {}
  for i, a in ipairs(spec) do
    if type(a) ~= "string" then
      error("kurir.pipe: argument " .. i .. " is a " .. type(a) .. ", expected a string", 2)
    end
    check_template("kurir.pipe", a, "a string argument")
    argv[i] = a
  end
  for k in pairs(spec) do
    if math.type(k) ~= "integer" and k ~= "timeout" then
      error("kurir.pipe: unknown option '" .. tostring(k) .. "' (timeout)", 2)
    end
  end
  local timeout = spec.timeout or 60
  if type(timeout) ~= "number" or timeout <= 0 then
    error("kurir.pipe: timeout must be a positive number of seconds", 2)
  end
  return setmetatable({ agent = "pipe", argv = argv, timeout = timeout }, Route)
end

local Discard = setmetatable({}, { __index = Route })
Discard.__index = Discard
Discard.__kurir_route = true
Discard.__tostring = Route.__tostring

--- kurir.discard(): accept and drop on purpose (delivered at once, before
-- the 250; no "message_dropped" warning).
function Discard.deliver(_, msg)
  if type(msg) == "userdata" or (type(msg) == "table" and msg.discard) then msg:discard() end
  return true, {}
end

function route.discard()
  return setmetatable({ agent = "discard" }, Discard)
end

local TLS = { none = true, opportunistic = true, required = true }

local function check_host_port(fname, spec)
  if spec.host ~= nil and (type(spec.host) ~= "string" or spec.host == "" or spec.host:find("[%s%c]")) then
    error(fname .. ": host must be a host name or address", 3)
  end
  if spec.port ~= nil and (math.type(spec.port) ~= "integer" or spec.port < 1 or spec.port > 65535) then
    error(fname .. ": port must be an integer 1-65535", 3)
  end
end

--- kurir.relay { host =, port =, tls =, auth = { user =, password = }, ca = }:
-- SMTP to a smart host, or without host to the recipient domain's MX.
function route.relay(spec)
  spec = spec or {}
  if type(spec) ~= "table" then error("kurir.relay: expected a table, got " .. type(spec), 2) end
  for k in pairs(spec) do
    if k ~= "host" and k ~= "port" and k ~= "tls" and k ~= "auth" and k ~= "ca" then
      error("kurir.relay: unknown option '" .. tostring(k) .. "' (host, port, tls, auth, ca)", 2)
    end
  end
  check_host_port("kurir.relay", spec)
  local tls = spec.tls or "opportunistic"
  if not TLS[tls] then
    error("kurir.relay: tls must be \"none\", \"opportunistic\" or \"required\", got " .. tostring(tls), 2)
  end
  local r = { agent = "relay", host = spec.host, port = spec.port, tls = tls, ca = spec.ca }
  if spec.auth ~= nil then
    local a = spec.auth
    if type(a) ~= "table" or type(a.user) ~= "string" or type(a.password) ~= "string" then
      error("kurir.relay: auth must be { user = \"...\", password = \"...\" }", 2)
    end
    r.auth_user, r.auth_password = a.user, a.password
  end
  return setmetatable(r, Route)
end

--- kurir.lmtp { host =, port = } or kurir.lmtp { socket = "/path" }: LMTP
-- (RFC 2033) over TCP or a Unix socket.
function route.lmtp(spec)
  if type(spec) ~= "table" then
    error("kurir.lmtp: expected { host = ..., port = ... } or { socket = \"/path\" }", 2)
  end
  for k in pairs(spec) do
    if k ~= "host" and k ~= "port" and k ~= "socket" then
      error("kurir.lmtp: unknown option '" .. tostring(k) .. "' (host, port, socket)", 2)
    end
  end
  if spec.socket ~= nil then
    local p = spec.socket
    if spec.host ~= nil or spec.port ~= nil then
      error("kurir.lmtp: socket = cannot be combined with host or port", 2)
    end
    if type(p) ~= "string" or p:sub(1, 1) ~= "/" or p:find("[%z\r\n]") then
      error("kurir.lmtp: socket must be an absolute path, got " .. tostring(p), 2)
    end
    if #p > 107 then
      error("kurir.lmtp: socket path longer than 107 bytes: " .. p, 2)
    end
    return setmetatable({ agent = "lmtp", socket = p, tls = "none" }, Route)
  end
  if spec.host == nil then error("kurir.lmtp: host (or socket) is required", 2) end
  check_host_port("kurir.lmtp", spec)
  return setmetatable({ agent = "lmtp", host = spec.host, port = spec.port or 24, tls = "none" }, Route)
end

--- kurir.deliver(fn [, name]): a Lua agent. fn(msg, rcpts) runs in a task
-- (it may sleep, resolve and connect) and returns true (delivered),
-- false, why (failed), nil, why (retried) or code, text. The route stores
-- the name (default: "lua1", "lua2", ... in the order the script makes
-- them), so a message queued before a restart finds its function again.
local counter = 0
function route.deliver(fn, name)
  if type(fn) ~= "function" then error("kurir.deliver: expected a function, got " .. type(fn), 2) end
  if name ~= nil and (type(name) ~= "string" or name == "") then
    error("kurir.deliver: the name must be a non-empty string", 2)
  end
  if name == nil then
    counter = counter + 1
    name = "lua" .. counter
  end
  require("kurir.agents").functions[name] = fn
  return setmetatable({ agent = "lua", name = name }, Route)
end

--- Is v a route made by a factory?
function route.is_route(v)
  local mt = getmetatable(v)
  return type(v) == "table" and type(mt) == "table" and rawget(mt, "__kurir_route") == true
end

--- Install the factories on the kurir module table.
function route.install(kurir)
  kurir.mbox = route.mbox
  kurir.pipe = route.pipe
  kurir.discard = route.discard
  kurir.relay = route.relay
  kurir.lmtp = route.lmtp
  kurir.deliver = route.deliver
end

--- Route a message kurir makes itself (a DSN to address): the script's
-- rcpt hook decides, with s.internal = true. Returns the route or nil, why.
function route.internal(hook, id, address)
  if not hook then return nil, "the script has no rcpt hook to route it" end
  local user, domain = address:match("^(.*)@([^@]*)$")
  local rcpt = { address = address, user = user or address, domain = domain or "", params = {} }
  local kurir = require "kurir"
  local s = {
    internal = true,
    id = id,
    from = { address = "", user = "", domain = "", params = {} },
    rcpts = {},
    log = function(_, event, fields)
      if kurir.log then kurir.log(event, fields) end
    end,
  }
  local code, text = hook(s, rcpt)
  if code == false or (math.type(code) == "integer" and code >= 300) then
    return nil, "the rcpt hook refused <" .. address .. ">: " .. tostring(code) .. " " .. tostring(text or "")
  end
  if not route.is_route(rcpt.route) then
    return nil, "the rcpt hook set no route for <" .. address .. ">"
  end
  return rcpt.route
end

return route
