-- kurir.relay: the SMTP and LMTP client of the queue (kurir.relay and
-- kurir.lmtp routes), on kurir.connect, so every wait (connect, TLS,
-- replies, DNS) suspends only this delivery's task.
--
--   relay.deliver(route, m) -> code, text
--
-- With route.host: that smart host (port 25 by default, 24 for LMTP).
-- Without: the MX records of the recipient's domain by preference (random
-- order among equals), the domain itself (A/AAAA) when it has none, a null
-- MX (RFC 7505) is a permanent 5.1.10; every host is tried before the
-- result is a temporary failure. STARTTLS: tls = "none", "opportunistic"
-- (default: used when offered, certificate not checked) or "required"
-- (must be offered, certificate and host name verified against the system
-- CA store or route.ca). AUTH PLAIN with auth_user/auth_password. DSN
-- parameters (RET, ENVID, NOTIFY, ORCPT) are passed on when the peer
-- offers DSN; SIZE when it offers SIZE.

local relay = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function relay.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {}
    for k = 3, 0, -1 do
      local v = (n >> (6 * k)) & 63
      q[#q + 1] = B64:sub(v + 1, v + 1)
    end
    if not b then q[3], q[4] = "=", "=" elseif not c then q[4] = "=" end
    out[#out + 1] = table.concat(q)
  end
  return table.concat(out)
end

-- One reply: code, text (lines joined by "\n"), lines; nil, err.
local function reply(sock)
  local lines = {}
  while true do
    local line, err = sock:receive("l")
    if not line then return nil, err end
    lines[#lines + 1] = line
    local code, sep = line:match("^(%d%d%d)([ -]?)")
    if not code then return nil, "bad reply: " .. line end
    if sep ~= "-" then
      local text = {}
      for i, l in ipairs(lines) do text[i] = l:sub(5) end
      return tonumber(code), table.concat(text, "\n"), lines
    end
  end
end

local function cmd(sock, line)
  local ok, err = sock:send(line .. "\r\n")
  if not ok then return nil, err end
  return reply(sock)
end

local function xtext(s)
  return (s:gsub("[^\33-\42\44-\60\62-\126]", function(c) return string.format("+%02X", c:byte()) end))
end

-- Dot-stuffing: a line starting with "." gets another one.
local function stuff(data)
  data = data:gsub("\r\n%.", "\r\n..")
  if data:sub(1, 1) == "." then data = "." .. data end
  if data:sub(-2) ~= "\r\n" then data = data .. "\r\n" end
  return data
end

local function temp(text) return 451, text end

-- Deliver m to one host. Returns code, text, and whether another host
-- may be tried (connection-level trouble).
local function session(kurir, route, m, host, port, lmtp)
  local mode = route.tls or "opportunistic"
  local sock, err = kurir.connect(host, port, { timeout = 60 })
  if not sock then return 451, "4.4.1 connect to " .. host .. ":" .. port .. ": " .. tostring(err), true end
  local function fail(code, text, next_host)
    sock:close()
    return code, text, next_host
  end
  local code, text = reply(sock)
  if code ~= 220 then
    return fail(code and code >= 500 and 554 or 451, "4.4.2 " .. host .. " greeted with: " ..
      tostring(code) .. " " .. tostring(text), true)
  end
  local me = kurir.hostname and kurir.hostname() or "localhost"
  local hello = lmtp and "LHLO " or "EHLO "
  local lines
  code, text, lines = cmd(sock, hello .. me)
  local ext = {}
  if code == 250 then
    for i = 2, #lines do
      local kw, rest = lines[i]:sub(5):match("^(%S+)%s*(.*)$")
      if kw then ext[kw:upper()] = rest end
    end
  elseif not lmtp then
    code, text = cmd(sock, "HELO " .. me)
    if code ~= 250 then return fail(451, "4.4.2 " .. host .. " refused HELO: " .. tostring(text), true) end
  else
    return fail(451, "4.4.2 " .. host .. " refused LHLO: " .. tostring(text), true)
  end
  if mode ~= "none" and ext.STARTTLS then
    code, text = cmd(sock, "STARTTLS")
    if code == 220 then
      local verify = mode == "required"
      local ok, terr = sock:starttls { verify = verify, ca = route.ca, servername = route.host or host }
      if not ok then return fail(451, "4.7.5 TLS with " .. host .. ": " .. tostring(terr), true) end
      code, text, lines = cmd(sock, hello .. me)
      if code ~= 250 then return fail(451, "4.4.2 " .. host .. " after STARTTLS: " .. tostring(text), true) end
      ext = {}
      for i = 2, #lines do
        local kw, rest = lines[i]:sub(5):match("^(%S+)%s*(.*)$")
        if kw then ext[kw:upper()] = rest end
      end
    elseif mode == "required" then
      return fail(451, "4.7.5 " .. host .. " refused STARTTLS: " .. tostring(text), true)
    end
  elseif mode == "required" then
    return fail(451, "4.7.5 TLS required but " .. host .. " does not offer STARTTLS", true)
  end
  if route.auth_user then
    local token = relay.base64("\0" .. route.auth_user .. "\0" .. (route.auth_password or ""))
    code, text = cmd(sock, "AUTH PLAIN " .. token)
    if code ~= 235 then
      return fail(code and code >= 500 and 550 or 451,
        (code and code >= 500 and "5.7.8 " or "4.7.0 ") .. host .. " refused AUTH: " .. tostring(text), false)
    end
  end
  local data, rerr = require("kurir.agents").message(m):raw()
  if not data then return fail(451, "4.3.0 cannot read the queued message: " .. tostring(rerr), false) end
  local mail = "MAIL FROM:<" .. m.from .. ">"
  if ext.SIZE then mail = mail .. " SIZE=" .. #data end
  if data:find("[\128-\255]") and ext["8BITMIME"] then mail = mail .. " BODY=8BITMIME" end
  local rcpt = "RCPT TO:<" .. m.rcpt .. ">"
  if ext.DSN then
    if m.ret then mail = mail .. " RET=" .. m.ret end
    if m.envid then mail = mail .. " ENVID=" .. xtext(m.envid) end
    local n = m.notify or 0
    if n > 0 then
      local words = {}
      if n & 1 ~= 0 then words = { "NEVER" } else
        if n & 2 ~= 0 then words[#words + 1] = "SUCCESS" end
        if n & 4 ~= 0 then words[#words + 1] = "FAILURE" end
        if n & 8 ~= 0 then words[#words + 1] = "DELAY" end
      end
      rcpt = rcpt .. " NOTIFY=" .. table.concat(words, ",")
    end
    if m.orcpt then rcpt = rcpt .. " ORCPT=" .. m.orcpt end
  end
  code, text = cmd(sock, mail)
  if code ~= 250 then return fail(code or 451, tostring(text or "no reply to MAIL"), false) end
  code, text = cmd(sock, rcpt)
  if code ~= 250 and code ~= 251 then return fail(code or 451, tostring(text or "no reply to RCPT"), false) end
  code, text = cmd(sock, "DATA")
  if code ~= 354 then return fail(code or 451, tostring(text or "no reply to DATA"), false) end
  local ok, serr = sock:send(stuff(data) .. ".\r\n")
  if not ok then return fail(451, "4.4.2 " .. host .. ": " .. tostring(serr), false) end
  code, text = reply(sock)   -- LMTP: one reply per recipient; we send one
  if not code then return fail(451, "4.4.2 " .. host .. " gave no reply after DATA: " .. tostring(text), false) end
  cmd(sock, "QUIT")
  sock:close()
  return code, text, false
end

local function shuffle_equal(mx)
  table.sort(mx, function(a, b) return a.preference < b.preference end)
  local i = 1
  while i <= #mx do
    local j = i
    while j < #mx and mx[j + 1].preference == mx[i].preference do j = j + 1 end
    for k = j, i + 1, -1 do
      local r = math.random(i, k)
      mx[k], mx[r] = mx[r], mx[k]
    end
    i = j + 1
  end
  return mx
end

function relay.deliver(route, m)
  local kurir = require "kurir"
  local lmtp = route.agent == "lmtp"
  local port = tonumber(route.port) or (lmtp and 24 or 25)
  local hosts = {}
  if route.host then
    hosts[1] = route.host
  else
    local domain = m.rcpt:match("@([^@]*)$") or ""
    if domain == "" then return 550, "5.1.2 no domain in <" .. m.rcpt .. ">" end
    if domain:match("^%[.*%]$") then
      hosts[1] = domain:sub(2, -2):gsub("^IPv6:", "")
    else
      local mx, err = kurir.dns.mx(domain)
      if mx == nil then
        if err == "NXDOMAIN" then return 550, "5.1.2 " .. domain .. " does not exist" end
        return temp("4.4.3 MX lookup for " .. domain .. ": " .. tostring(err))
      end
      if mx and #mx > 0 then
        if #mx == 1 and (mx[1].host == "" or mx[1].host == ".") then
          return 556, "5.1.10 " .. domain .. " accepts no mail (null MX)"
        end
        for _, r in ipairs(shuffle_equal(mx)) do
          if r.host ~= "" and r.host ~= "." then hosts[#hosts + 1] = r.host end
        end
      else
        hosts[1] = domain   -- no MX: the domain's own address (RFC 5321 5.1)
      end
    end
  end
  local last_code, last_text = 451, "4.4.1 no host to try"
  for _, host in ipairs(hosts) do
    local code, text, next_host = session(kurir, route, m, host, port, lmtp)
    if not next_host or (code and code < 400) then return code, text end
    last_code, last_text = code, text
  end
  if last_code >= 500 then last_code = 451 end
  return last_code, last_text
end

return relay
