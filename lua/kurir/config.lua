-- kurir.config: validation and normalisation of kurir.configure{} tables.
--
-- The engine keeps one state per script load (config.new), feeds every
-- kurir.configure{} call through config.merge, and after the script ran
-- asks config.finalize for the normalised table it reads back from C.
-- Every value is checked when it is merged, so that an error points at the
-- script line of the configure call; checks that need the whole picture
-- (TLS listeners without a certificate, ...) run in finalize and name the
-- line where the value was set. Nothing here touches files or sockets.

local config = {}

-- The hook names, as the engine lists them (core/lua/engine.c), in its order.
config.hook_names = require "kurir.hooks"

local HOOKS = {}
for _, name in ipairs(config.hook_names) do HOOKS[name] = true end

local POLICIES = { tempfail = true, reject = true, continue = true }
local CLIENT_CERT = { none = 0, request = 1, require = 2 }
local MECHANISMS = { PLAIN = true, LOGIN = true, ["CRAM-MD5"] = true }
local INT_MAX = 2147483647

-- The most worker processes one master runs (the slots of its shared
-- connection counters).
config.max_workers = 64

config.defaults = {
  listen = { { host = "127.0.0.1", port = 2525, tls = false } },
  limits = {
    line_length = 2048,
    text_line_length = 0,
    message_size = 33554432,
    header_size = 102400,
    recipients = 100,
    connections = 1000,
    connections_per_ip = 50,
    errors = 10,
    bare_lf = "reject",
    bare_cr = "accept",
    min_data_rate = 500,
    junk_commands = 100,
    ipv6_prefix = 64,
    spool_reserve = 16777216,
  },
  timeouts = { command = 300, data = 180, handshake = 30, hook = 60, shutdown = 30 },
  cpu_budget = 1.0,
  on_error = "tempfail",
  auth = {
    plaintext = false, required = false, mechanisms = { "PLAIN", "LOGIN", "CRAM-MD5" },
    failure_delay = 1.0,
  },
  -- servers = nil: the system's resolv.conf
  dns = { timeout = 5, tries = 2 },
  queue = {
    dir = "./queue", retry = { 60, 300, 900, 3600 }, lifetime = 5 * 86400, concurrency = 10,
    delay_warning = 4 * 3600, connection_idle = 2, connection_messages = 100,
  },
}

-- Errors raised while checking carry this marker so that merge can tell
-- them from bugs and re-raise them at the caller's level.
local Failure = {}

local function fail(fmt, ...)
  error(setmetatable({ msg = string.format(fmt, ...) }, Failure), 0)
end

local function describe(v)
  local t = type(v)
  if t == "string" then
    if #v > 40 then v = v:sub(1, 40) .. "..." end
    return string.format("%q", v)
  elseif t == "number" or t == "boolean" then
    return tostring(v)
  end
  return t
end

local function keyname(prefix, k)
  local part
  if type(k) == "string" then
    part = k
  else
    part = "[" .. tostring(k) .. "]"
  end
  if prefix == "" then return part end
  if part:sub(1, 1) == "[" then return prefix .. part end
  return prefix .. "." .. part
end

local function check_keys(t, allowed, prefix)
  for k in pairs(t) do
    if not allowed[k] then
      fail("unknown configuration key '%s'", keyname(prefix, k))
    end
  end
end

local function expect_table(v, name)
  if type(v) ~= "table" then fail("%s: expected a table, got %s", name, describe(v)) end
  return v
end

local function expect_boolean(v, name)
  if type(v) ~= "boolean" then fail("%s: expected true or false, got %s", name, describe(v)) end
  return v
end

local function expect_string(v, name)
  if type(v) ~= "string" or v == "" then
    fail("%s: expected a non-empty string, got %s", name, describe(v))
  end
  return v
end

-- Integer in [min, max]; floats with an integral value (1e6) are accepted.
local function expect_integer(v, name, min, max, what)
  local i = type(v) == "number" and math.tointeger(v) or nil
  if not i or i < min or i > max then
    fail("%s: expected %s, got %s", name, what, describe(v))
  end
  return i
end

local function expect_positive_number(v, name)
  if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge then
    fail("%s: expected a positive number, got %s", name, describe(v))
  end
  return v + 0.0
end

local function expect_choice(v, name, choices, list)
  if type(v) ~= "string" or choices[v] == nil then
    fail("%s: expected one of %s, got %s", name, list, describe(v))
  end
  return v
end

-- Addresses -----------------------------------------------------------------

local function ipv4(s)
  local parts = { s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
  if #parts ~= 4 then return false end
  for _, p in ipairs(parts) do
    if #p > 3 or (#p > 1 and p:sub(1, 1) == "0") or tonumber(p) > 255 then return false end
  end
  return true
end

local function ipv6(s)
  if #s < 2 or #s > 45 or s:find("[^%x:%.]") then return false end
  local head, tail = s, nil
  local dc = s:find("::", 1, true)
  if dc then
    if s:find("::", dc + 1, true) then return false end
    head, tail = s:sub(1, dc - 1), s:sub(dc + 2)
  end
  local groups = 0
  local function count(part, last)
    if part == "" then return true end
    local fields = {}
    for f in (part .. ":"):gmatch("([^:]*):") do fields[#fields + 1] = f end
    for i, f in ipairs(fields) do
      if last and i == #fields and f:find(".", 1, true) then
        if not ipv4(f) then return false end
        groups = groups + 2
      elseif f:match("^%x%x?%x?%x?$") then
        groups = groups + 1
      else
        return false
      end
    end
    return true
  end
  if dc then
    if not count(head, false) or not count(tail, true) then return false end
    return groups <= 7
  end
  return count(head, true) and groups == 8
end

local function check_host(host)
  if host == "localhost" then return "127.0.0.1" end
  if ipv4(host) or ipv6(host) then return host end
  return nil
end

-- A port number 1-65535 (0 too when allow_zero: a listener's "any free
-- port", which the `listening` log line then names).
local function check_port(p, allow_zero)
  local n = type(p) == "number" and math.tointeger(p) or nil
  if type(p) == "string" and p:match("^%d+$") and #p <= 5 then n = tonumber(p) end
  if not n or n < (allow_zero and 0 or 1) or n > 65535 then return nil end
  return n
end

--- Parse a listener "ADDR:PORT", "[v6]:PORT", "smtps://ADDR:PORT",
-- "http://ADDR:PORT" (the HTTP API and web UI; port 0 = any free port).
-- Returns { host = "...", port = n, tls = bool, http = bool } or nil, reason.
function config.parse_listen(str)
  if type(str) ~= "string" then return nil, "expected a string, got " .. describe(str) end
  local rest, tls, http = str, false, false
  local scheme, after = str:match("^(%a+)://(.*)$")
  if scheme then
    scheme = scheme:lower()
    if scheme == "smtps" then
      tls = true
    elseif scheme == "http" then
      http = true
    elseif scheme ~= "smtp" then
      return nil, "unknown scheme '" .. scheme .. "://' (smtp://, smtps:// or http://)"
    end
    rest = after
  end
  local host, port
  if rest:sub(1, 1) == "[" then
    host, port = rest:match("^%[([^%]]*)%]:(.*)$")
    if not host then
      return nil, "bad address '" .. rest .. "' (expected [IPv6]:PORT)"
    end
    if not ipv6(host) then
      return nil, "bad IPv6 address '" .. host .. "'"
    end
  else
    host, port = rest:match("^([^:]*):([^:]*)$")
    if not host then
      if rest:find(":.*:") then
        return nil, "IPv6 addresses need brackets: '[ADDR]:PORT', got '" .. rest .. "'"
      end
      return nil, "missing port in '" .. rest .. "' (expected ADDR:PORT)"
    end
    local h = check_host(host)
    if not h then
      return nil, "bad address '" .. host .. "' (an IPv4 literal, [IPv6] or localhost)"
    end
    host = h
  end
  local n = check_port(port, true)
  if not n then
    return nil, "bad port '" .. port .. "' (0-65535; 0 = any free port)"
  end
  return { host = host, port = n, tls = tls, http = http or nil }
end

local LISTEN_KEYS = { host = true, port = true, tls = true, http = true }

local function check_listener(v, name)
  if type(v) == "string" then
    local l, err = config.parse_listen(v)
    if not l then fail("%s: %s", name, err) end
    return l
  elseif type(v) == "table" then
    check_keys(v, LISTEN_KEYS, name)
    local host = v.host
    if type(host) == "string" and host:match("^%[.*%]$") then host = host:sub(2, -2) end
    local h = type(host) == "string" and check_host(host) or nil
    if not h then
      fail("%s.host: expected an IPv4 or IPv6 address or localhost, got %s", name, describe(v.host))
    end
    local http = false
    if v.http ~= nil then http = expect_boolean(v.http, name .. ".http") end
    local port = check_port(v.port, true)
    if not port or type(v.port) ~= "number" then
      fail("%s.port: expected a port number 0-65535 (0 = any free port), got %s", name, describe(v.port))
    end
    local tls = false
    if v.tls ~= nil then tls = expect_boolean(v.tls, name .. ".tls") end
    if tls and http then fail("%s: tls and http cannot be combined (HTTPS is not offered)", name) end
    return { host = h, port = port, tls = tls, http = http or nil }
  end
  fail("%s: expected \"ADDR:PORT\" or { host = ..., port = ... }, got %s", name, describe(v))
end

-- A string or a non-empty array of them, each checked by check_one.
local function check_list(v, name, check_one, empty_msg)
  if type(v) == "string" then return { check_one(v, name) } end
  expect_table(v, name)
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      fail("unknown configuration key '%s'", keyname(name, k))
    end
  end
  if n == 0 then fail("%s: %s", name, empty_msg) end
  local out = {}
  for i = 1, n do out[i] = check_one(v[i], keyname(name, i)) end
  return out
end

local function check_listen_list(v, name)
  return check_list(v, name, check_listener, "expected at least one address")
end

-- Sections ------------------------------------------------------------------

local LIMITS = {
  line_length = function(v, n)
    return expect_integer(v, n, 512, INT_MAX, "an integer >= 512 (RFC 5321 minimum)")
  end,
  text_line_length = function(v, n)
    return expect_integer(v, n, 0, INT_MAX, "an integer >= 0 (0 = unlimited)")
  end,
  message_size = function(v, n)
    return expect_integer(v, n, 1, math.maxinteger, "a positive integer")
  end,
  header_size = function(v, n)
    return expect_integer(v, n, 1024, math.maxinteger, "an integer >= 1024")
  end,
  recipients = function(v, n) return expect_integer(v, n, 1, INT_MAX, "a positive integer") end,
  connections = function(v, n) return expect_integer(v, n, 1, INT_MAX, "a positive integer") end,
  connections_per_ip = function(v, n) return expect_integer(v, n, 1, INT_MAX, "a positive integer") end,
  errors = function(v, n) return expect_integer(v, n, 1, INT_MAX, "a positive integer") end,
  bare_lf = function(v, n)
    return expect_choice(v, n, { reject = true, accept = true }, "\"reject\", \"accept\"")
  end,
  bare_cr = function(v, n)
    return expect_choice(v, n, { reject = true, accept = true }, "\"reject\", \"accept\"")
  end,
  min_data_rate = function(v, n)
    return expect_integer(v, n, 0, INT_MAX, "bytes per second, an integer >= 0 (0 = no rate deadline)")
  end,
  junk_commands = function(v, n)
    return expect_integer(v, n, 0, INT_MAX, "an integer >= 0 (0 = unlimited)")
  end,
  ipv6_prefix = function(v, n)
    return expect_integer(v, n, 1, 128, "a prefix length 1-128")
  end,
  spool_reserve = function(v, n)
    return expect_integer(v, n, 0, math.maxinteger, "bytes, an integer >= 0 (0 = no check)")
  end,
}

local TIMEOUTS = {}
for k in pairs(config.defaults.timeouts) do TIMEOUTS[k] = expect_positive_number end

local TLS = {
  cert = expect_string, key = expect_string, chain = expect_string, ca = expect_string,
  self_signed = expect_boolean, required = expect_boolean,
  client_cert = function(v, n)
    expect_choice(v, n, CLIENT_CERT, "\"none\", \"request\", \"require\"")
    return CLIENT_CERT[v]
  end,
}

local function check_mechanisms(v, name)
  expect_table(v, name)
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      fail("unknown configuration key '%s'", keyname(name, k))
    end
  end
  if n == 0 then fail("%s: expected a non-empty list of PLAIN, LOGIN, CRAM-MD5", name) end
  local out, seen = {}, {}
  for i = 1, n do
    local m = type(v[i]) == "string" and v[i]:upper() or nil
    if not m or not MECHANISMS[m] then
      fail("%s: expected PLAIN, LOGIN or CRAM-MD5, got %s", keyname(name, i), describe(v[i]))
    end
    if seen[m] then fail("%s: %s is listed twice", name, m) end
    seen[m] = true
    out[i] = m
  end
  return out
end

local AUTH = {
  plaintext = expect_boolean, required = expect_boolean, mechanisms = check_mechanisms,
  failure_delay = function(v, n)
    if type(v) ~= "number" or v ~= v or v < 0 or v > 60 then
      fail("%s: expected seconds between 0 and 60, got %s", n, describe(v))
    end
    return v + 0.0
  end,
}

-- A DNS server "ADDR", "ADDR:PORT", "IPv6" or "[IPv6]:PORT" (port 53 by
-- default), normalised to "ADDR:PORT" / "[IPv6]:PORT" for c-ares.
local function check_dns_server(v, name)
  if type(v) ~= "string" then
    fail("%s: expected \"ADDR\" or \"ADDR:PORT\", got %s", name, describe(v))
  end
  local host, port
  if v:sub(1, 1) == "[" then
    host, port = v:match("^%[([^%]]*)%]:(.*)$")
    if not host then host, port = v:match("^%[([^%]]*)%]$"), "53" end
    if not host or not ipv6(host) then fail("%s: bad address %s (expected [IPv6]:PORT)", name, describe(v)) end
  elseif ipv6(v) then
    host, port = v, "53"
  else
    host, port = v:match("^([^:]*):([^:]*)$")
    if not host then host, port = v, "53" end
    host = check_host(host)
    if not host then
      fail("%s: bad address %s (an IPv4 literal or [IPv6], with an optional :PORT)", name, describe(v))
    end
  end
  local n = check_port(port)
  if not n then fail("%s: bad port in %s (1-65535)", name, describe(v)) end
  if host:find(":", 1, true) then return "[" .. host .. "]:" .. n end
  return host .. ":" .. n
end

local DNS = {
  servers = function(v, name)
    return check_list(v, name, check_dns_server,
      "expected at least one server (leave servers out for resolv.conf)")
  end,
  timeout = function(v, n)
    expect_positive_number(v, n)
    if v < 0.001 or v > 3600 then fail("%s: expected seconds between 0.001 and 3600, got %s", n, describe(v)) end
    return v + 0.0
  end,
  tries = function(v, n) return expect_integer(v, n, 1, 100, "an integer 1-100") end,
}

-- A user or group: a name from the system's databases or a numeric id.
local function check_account(v, n)
  if math.type(v) == "integer" and v >= 0 and v < 4294967295 then return tostring(v) end
  expect_string(v, n)
  if #v > 64 or v:find("[%s%c:/]") then
    fail("%s: expected a user or group name or a numeric id, got %s", n, describe(v))
  end
  return v
end
local QUEUE = {
  dir = function(v, n)
    expect_string(v, n)
    if v == "" then fail("%s: expected a directory, got an empty string", n) end
    return v
  end,
  retry = function(v, n)
    return check_list(v, n, function(x, xn)
      expect_positive_number(x, xn)
      return x + 0.0
    end, "expected at least one retry interval in seconds")
  end,
  lifetime = function(v, n) expect_positive_number(v, n) return v + 0.0 end,
  concurrency = function(v, n) return expect_integer(v, n, 1, 10000, "an integer 1-10000") end,
  -- false or 0: no delay warnings
  delay_warning = function(v, n)
    if v == false then return 0.0 end
    if type(v) ~= "number" or v ~= v or v < 0 then
      fail("%s: expected a number of seconds (0 or false: no warnings), got %s", n, describe(v))
    end
    return v + 0.0
  end,
  -- 0: a connection is closed after its transaction
  connection_idle = function(v, n)
    if type(v) ~= "number" or v ~= v or v < 0 or v > 3600 then
      fail("%s: expected 0-3600 seconds, got %s", n, describe(v))
    end
    return v + 0.0
  end,
  connection_messages = function(v, n) return expect_integer(v, n, 1, 100000, "an integer 1-100000") end,
}

local function check_policy(v, n)
  return expect_choice(v, n, POLICIES, "\"tempfail\", \"reject\", \"continue\"")
end

local function section(checks, v, name)
  expect_table(v, name)
  check_keys(v, checks, name)
  local out = {}
  for k, val in pairs(v) do out[k] = checks[k](val, name .. "." .. k) end
  return out
end

local TOP = {
  hostname = function(v, n)
    expect_string(v, n)
    if #v > 255 or v:find("[%s%c]") then
      fail("%s: expected a host name without spaces or control characters, got %s", n, describe(v))
    end
    return v
  end,
  listen = check_listen_list,
  spool = expect_string,
  user = check_account,
  group = check_account,
  run_as_root = expect_boolean,
  limits = function(v, n) return section(LIMITS, v, n) end,
  timeouts = function(v, n) return section(TIMEOUTS, v, n) end,
  cpu_budget = expect_positive_number,
  workers = function(v, n) return expect_integer(v, n, 1, config.max_workers, "an integer from 1 to 64") end,
  on_error = function(v, n)
    if type(v) == "string" then return { default = check_policy(v, n) } end
    local checks = { default = check_policy }
    for h in pairs(HOOKS) do checks[h] = check_policy end
    return section(checks, v, n)
  end,
  tls = function(v, n) return section(TLS, v, n) end,
  auth = function(v, n) return section(AUTH, v, n) end,
  dns = function(v, n) return section(DNS, v, n) end,
  queue = function(v, n) return section(QUEUE, v, n) end,
}

-- Sections whose keys merge one by one across configure calls; the others
-- (hostname, listen, spool, user, group, workers, ...) are replaced as a whole.
local MERGED = { limits = true, timeouts = true, on_error = true, tls = true, auth = true, dns = true,
  queue = true }

--- A fresh configuration state for one script load.
function config.new()
  return { values = {}, where = {} }
end

local function position(level)
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline and info.currentline > 0 then
    return info.short_src .. ":" .. info.currentline
  end
  return nil
end

--- Check table t and merge it into state. Errors are raised at `level`
-- counted from merge's caller (1 = the caller of merge, as for error()).
function config.merge(state, t, level)
  level = level or 1
  local ok, patch = pcall(function()
    if type(t) ~= "table" then fail("kurir.configure: expected a table, got %s", describe(t)) end
    check_keys(t, TOP, "")
    local p = {}
    for k, v in pairs(t) do p[k] = TOP[k](v, k) end
    return p
  end)
  if not ok then
    if getmetatable(patch) == Failure then error(patch.msg, level + 1) end
    error(patch, 0)
  end
  local where = position(level + 1)
  for k, v in pairs(patch) do
    if MERGED[k] then
      local cur = state.values[k] or {}
      for kk, vv in pairs(v) do cur[kk] = vv end
      state.values[k] = cur
    else
      state.values[k] = v
    end
    state.where[k] = where
  end
end

local function copy_list(list)
  local out = {}
  for i, v in ipairs(list) do
    if type(v) == "table" then
      local c = {}
      for k, x in pairs(v) do c[k] = x end
      out[i] = c
    else
      out[i] = v
    end
  end
  return out
end

local function raise_at(state, key, fmt, ...)
  local msg = string.format(fmt, ...)
  local where = state.where[key]
  if where then msg = where .. ": " .. msg end
  error(msg, 0)
end

local function listener_string(l)
  local host = l.host:find(":", 1, true) and ("[" .. l.host .. "]") or l.host
  return (l.tls and "smtps://" or l.http and "http://" or "") .. host .. ":" .. l.port
end

--- The normalised configuration, every key present with its default.
-- overrides.listen (from -l) replaces the script's listeners when present.
-- Raises an error message (naming the script line where it can) on
-- inconsistent settings.
function config.finalize(state, overrides, default_hostname)
  local v = state.values
  local d = config.defaults
  local cfg = {}

  cfg.hostname = v.hostname or default_hostname or "localhost"
  cfg.spool = v.spool or os.getenv("TMPDIR") or "/tmp"
  if cfg.spool == "" then cfg.spool = "/tmp" end
  cfg.cpu_budget = v.cpu_budget or d.cpu_budget
  -- nil: the number of cores (chosen by the C side, which can count them)
  cfg.workers = v.workers
  cfg.user = v.user
  cfg.group = v.group
  cfg.run_as_root = v.run_as_root == true
  if cfg.group and not cfg.user then
    raise_at(state, "group", "group: needs user as well (kurir drops to user, with group as its group)")
  end
  if cfg.run_as_root and cfg.user then
    raise_at(state, "run_as_root", "run_as_root = true cannot be combined with user")
  end

  local listen_key = "listen"
  if overrides and overrides.listen ~= nil then
    local ok, l = pcall(check_listen_list, overrides.listen, "-l")
    if not ok then
      if getmetatable(l) == Failure then error(l.msg, 0) end
      error(l, 0)
    end
    cfg.listen = l
    listen_key = nil
  else
    cfg.listen = copy_list(v.listen or d.listen)
  end

  cfg.limits = {}
  for k, def in pairs(d.limits) do
    local x = v.limits and v.limits[k]
    if x == nil then x = def end
    cfg.limits[k] = x
  end

  cfg.timeouts = {}
  for k, def in pairs(d.timeouts) do
    local x = v.timeouts and v.timeouts[k]
    cfg.timeouts[k] = x or def
  end

  cfg.on_error = {}
  local oe = v.on_error or {}
  local default_policy = oe.default or d.on_error
  for _, h in ipairs(config.hook_names) do
    cfg.on_error[h] = oe[h] or default_policy
  end

  local a = v.auth or {}
  cfg.auth = {
    plaintext = a.plaintext == true,
    required = a.required == true,
    mechanisms = copy_list(a.mechanisms or d.auth.mechanisms),
    failure_delay = a.failure_delay or d.auth.failure_delay,
  }

  local dn = v.dns or {}
  cfg.dns = {
    servers = dn.servers and copy_list(dn.servers) or nil,
    timeout = dn.timeout or d.dns.timeout,
    tries = dn.tries or d.dns.tries,
  }

  local q = v.queue or {}
  cfg.queue = {
    dir = q.dir or d.queue.dir,
    retry = copy_list(q.retry or d.queue.retry),
    lifetime = q.lifetime or d.queue.lifetime,
    concurrency = q.concurrency or d.queue.concurrency,
    delay_warning = q.delay_warning or d.queue.delay_warning,
    connection_idle = q.connection_idle or d.queue.connection_idle,
    connection_messages = q.connection_messages or d.queue.connection_messages,
  }

  if v.tls then
    local t = v.tls
    cfg.tls = {
      cert = t.cert, key = t.key, chain = t.chain, ca = t.ca,
      self_signed = t.self_signed == true,
      required = t.required == true or nil,   -- absent: false
      client_cert = t.client_cert or 0,
    }
    local tc = cfg.tls
    if tc.self_signed then
      if tc.cert or tc.key then
        raise_at(state, "tls", "tls: self_signed = true cannot be combined with cert/key")
      end
    else
      if not tc.cert or not tc.key then
        raise_at(state, "tls", "tls: needs both cert and key (or self_signed = true)")
      end
    end
    if tc.chain and not tc.cert then
      raise_at(state, "tls", "tls.chain: needs tls.cert")
    end
  end

  -- "file:line" of the configure call that set tls, so that the engine
  -- can name it when a certificate or key file turns out to be bad
  cfg.tls_where = cfg.tls and state.where.tls or nil

  if not cfg.tls then
    for _, l in ipairs(cfg.listen) do
      if l.tls then
        local msg = "listen: " .. listener_string(l) .. " is implicit TLS but no tls is configured" ..
          " (tls = { cert = ..., key = ... } or { self_signed = true })"
        if listen_key then raise_at(state, listen_key, "%s", msg) end
        error(msg, 0)
      end
    end
    if cfg.auth.required and not cfg.auth.plaintext then
      raise_at(state, "auth",
        "auth.required: no client could authenticate: configure tls, or set auth.plaintext = true")
    end
  end

  return cfg
end

return config
