-- kurir.relay: the SMTP and LMTP client of the queue (kurir.relay and
-- kurir.lmtp routes), on kurir.connect, so every wait (connect, TLS,
-- replies, DNS) suspends only this delivery's task.
--
--   relay.deliver(route, m, key) -> { {code, text}, ... }  (one per m.rcpts)
--
-- m.rcpts are the recipients of one queued message with the same route
-- (and, for MX delivery, the same domain): they go in ONE transaction
-- (MAIL, a RCPT each, DATA) and each gets its own result; over LMTP each
-- accepted recipient gets its own reply after DATA. When the peer offers
-- PIPELINING, MAIL, the RCPTs and DATA go out in one write (RFC 2920).
--
-- With route.host: that smart host (port 25 by default, 24 for LMTP);
-- route.socket: an LMTP server's Unix socket. Without either: the MX
-- records of the recipient's domain by preference (random order among
-- equals), the domain itself (A/AAAA) when it has none, a null MX (RFC
-- 7505) is a permanent 5.1.10; every host is tried before the result is a
-- temporary failure. STARTTLS: tls = "none", "opportunistic" (default:
-- used when offered, certificate not checked) or "required" (must be
-- offered, certificate and host name verified against the system CA store
-- or route.ca). AUTH with auth_user/auth_password: PLAIN, or LOGIN when
-- the server offers LOGIN and not PLAIN. DSN parameters (RET, ENVID,
-- NOTIFY, ORCPT) are passed on when the peer offers DSN; SIZE when it
-- offers SIZE. A message with 8-bit bytes to a peer without 8BITMIME fails
-- permanently with 5.6.3 (RFC 6152 3; kurir does not convert).
--
-- Connection reuse: after a transaction the connection is kept for
-- m.connection_idle seconds (queue.connection_idle) and the next delivery
-- with the same route and host takes it (no new connect, greeting, EHLO,
-- TLS or AUTH), up to m.connection_messages transactions
-- (queue.connection_messages). Kept connections are per route and host,
-- and each was running a delivery before, so queue.concurrency still
-- bounds the connections to a destination. An idle connection the peer
-- closed meanwhile is noticed on its first reply and the transaction is
-- made again on a new one (nothing of the message was sent yet).

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

-- The same result for every recipient.
local function all(rcpts, code, text)
  local out = {}
  for i = 1, #rcpts do out[i] = { code, text } end
  return out
end

local function extensions(lines)
  local ext = {}
  for i = 2, #lines do
    local kw, rest = lines[i]:sub(5):match("^(%S+)%s*(.*)$")
    if kw then ext[kw:upper()] = rest end
  end
  return ext
end

local function offers(list, mech)
  return (" " .. (list or ""):upper() .. " "):find(" " .. mech .. " ", 1, true) ~= nil
end

-- ---- idle connections kept for reuse ----------------------------------------

relay.pool = {}        -- key -> { conn, ... } (most recently used last)
local reaping = false

local function quit(conn)
  pcall(function()
    conn.sock:settimeout(5)
    cmd(conn.sock, "QUIT")
  end)
  conn.sock:close()
end

-- One task closes what stayed idle too long; it ends when nothing is kept.
local function reap(kurir)
  while true do
    local now, soonest, expired = kurir.now(), nil, {}
    for key, list in pairs(relay.pool) do
      for i = #list, 1, -1 do
        local c = list[i]
        if now - c.since >= c.idle then
          table.remove(list, i)
          expired[#expired + 1] = c
        elseif not soonest or c.since + c.idle < soonest then
          soonest = c.since + c.idle
        end
      end
      if #list == 0 then relay.pool[key] = nil end
    end
    for _, c in ipairs(expired) do quit(c) end
    if not soonest then
      reaping = false
      return
    end
    kurir.sleep(math.max(0.01, soonest - kurir.now()))
  end
end

local function take(kurir, key)
  local list = relay.pool[key]
  while list and #list > 0 do
    local c = table.remove(list)
    if #list == 0 then relay.pool[key] = nil end
    if kurir.now() - c.since < c.idle then return c end
    quit(c)
  end
  return nil
end

local function give(kurir, key, conn, m)
  local idle = tonumber(m.connection_idle) or 0
  local max = tonumber(m.connection_messages) or 1
  if idle <= 0 or conn.count >= max then
    quit(conn)
    return
  end
  conn.since, conn.idle = kurir.now(), idle
  local list = relay.pool[key] or {}
  relay.pool[key] = list
  list[#list + 1] = conn
  if not reaping then
    reaping = true
    if not kurir.spawn(reap, kurir) then reaping = false end
  end
end

-- ---- one connection -----------------------------------------------------------

-- Connect, greeting, EHLO/LHLO, STARTTLS, AUTH. Returns conn, or nil,
-- code, text and whether another host may be tried.
local function open(kurir, route, host, port, lmtp)
  local mode = route.tls or "opportunistic"
  local where = port and (host .. ":" .. port) or host
  local sock, err = kurir.connect(host, port, { timeout = 60 })
  if not sock then return nil, 451, "4.4.1 connect to " .. where .. ": " .. tostring(err), true end
  local function fail(code, text, next_host)
    sock:close()
    return nil, code, text, next_host
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
    ext = extensions(lines)
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
      ext = extensions(lines)
    elseif mode == "required" then
      return fail(451, "4.7.5 " .. host .. " refused STARTTLS: " .. tostring(text), true)
    end
  elseif mode == "required" then
    return fail(451, "4.7.5 TLS required but " .. host .. " does not offer STARTTLS", true)
  end
  if route.auth_user then
    local user, pass = route.auth_user, route.auth_password or ""
    if offers(ext.AUTH, "LOGIN") and not offers(ext.AUTH, "PLAIN") then
      code, text = cmd(sock, "AUTH LOGIN")
      if code == 334 then code, text = cmd(sock, relay.base64(user)) end
      if code == 334 then code, text = cmd(sock, relay.base64(pass)) end
    else
      code, text = cmd(sock, "AUTH PLAIN " .. relay.base64("\0" .. user .. "\0" .. pass))
    end
    if code ~= 235 then
      return fail(code and code >= 500 and 550 or 451,
        (code and code >= 500 and "5.7.8 " or "4.7.0 ") .. host .. " refused AUTH: " .. tostring(text), false)
    end
  end
  return { sock = sock, ext = ext, host = host, lmtp = lmtp, count = 0 }
end

local function notify_words(n)
  if n & 1 ~= 0 then return "NEVER" end
  local words = {}
  if n & 2 ~= 0 then words[#words + 1] = "SUCCESS" end
  if n & 4 ~= 0 then words[#words + 1] = "FAILURE" end
  if n & 8 ~= 0 then words[#words + 1] = "DELAY" end
  return table.concat(words, ",")
end

-- One transaction on conn. Returns the results, whether the connection
-- can take another transaction, and whether it failed before any reply
-- (a kept connection the peer has closed: try again on a new one).
local function transaction(conn, m, rcpts, data)
  local sock, ext, host = conn.sock, conn.ext, conn.host
  if data:find("[\128-\255]") and not ext["8BITMIME"] then
    return all(rcpts, 554, "5.6.3 " .. host .. " does not offer 8BITMIME and the message has 8-bit " ..
      "content (kurir does not convert it)"), true, false
  end
  local mail = "MAIL FROM:<" .. m.from .. ">"
  if ext.SIZE then mail = mail .. " SIZE=" .. #data end
  if data:find("[\128-\255]") then mail = mail .. " BODY=8BITMIME" end
  if ext.DSN then
    if m.ret then mail = mail .. " RET=" .. m.ret end
    if m.envid then mail = mail .. " ENVID=" .. xtext(m.envid) end
  end
  local rlines = {}
  for i, r in ipairs(rcpts) do
    local line = "RCPT TO:<" .. r.address .. ">"
    if ext.DSN then
      if (r.notify or 0) > 0 then line = line .. " NOTIFY=" .. notify_words(r.notify) end
      if r.orcpt then line = line .. " ORCPT=" .. r.orcpt end
    end
    rlines[i] = line
  end
  local results = {}
  local function lost(err, first)
    local text = "4.4.2 " .. host .. ": " .. tostring(err)
    for i = 1, #rcpts do results[i] = results[i] or { 451, text } end
    return results, false, first
  end
  local pipelining = ext.PIPELINING ~= nil
  local mcode, mtext, dcode, dtext
  local rres = {}
  local accepted = {}
  if pipelining then
    local out = { mail }
    for _, l in ipairs(rlines) do out[#out + 1] = l end
    out[#out + 1] = "DATA"
    local ok, err = sock:send(table.concat(out, "\r\n") .. "\r\n")
    if not ok then return lost(err, true) end
    mcode, mtext = reply(sock)
    if not mcode then return lost(mtext, true) end
    for i = 1, #rcpts do
      local c, t = reply(sock)
      if not c then return lost(t, false) end
      rres[i] = { c, t }
    end
    dcode, dtext = reply(sock)
    if not dcode then return lost(dtext, false) end
  else
    mcode, mtext = cmd(sock, mail)
    if not mcode then return lost(mtext, true) end
    if mcode == 250 then
      for i = 1, #rcpts do
        local c, t = cmd(sock, rlines[i])
        if not c then return lost(t, false) end
        rres[i] = { c, t }
        if c == 250 or c == 251 then accepted[#accepted + 1] = i end
      end
      if #accepted > 0 then
        dcode, dtext = cmd(sock, "DATA")
        if not dcode then return lost(dtext, false) end
      end
      accepted = {}
    end
  end
  if mcode == 250 then
    for i = 1, #rcpts do
      local c = rres[i][1]
      if c == 250 or c == 251 then
        accepted[#accepted + 1] = i
      else
        results[i] = rres[i]
      end
    end
  else
    for i = 1, #rcpts do results[i] = { mcode, mtext } end
  end
  if dcode == 354 and #accepted == 0 then
    -- the server wants data although no recipient was taken (RFC 2920 3.1):
    -- an empty message ends it; its reply means nothing
    local ok = sock:send(".\r\n")
    if not ok or not reply(sock) then return results, false, false end
  elseif #accepted > 0 then
    if dcode ~= 354 then
      for _, i in ipairs(accepted) do results[i] = { dcode or 451, dtext } end
    else
      local ok, err = sock:send(stuff(data) .. ".\r\n")
      if not ok then return lost(err, false) end
      if conn.lmtp then   -- one reply per accepted recipient (RFC 2033 4.2)
        for _, i in ipairs(accepted) do
          local c, t = reply(sock)
          if not c then return lost("no reply after DATA: " .. tostring(t), false) end
          results[i] = { c, t }
        end
      else
        local c, t = reply(sock)
        if not c then return lost("no reply after DATA: " .. tostring(t), false) end
        for _, i in ipairs(accepted) do results[i] = { c, t } end
      end
      conn.count = conn.count + 1
      return results, true, false
    end
  end
  -- no message went through: a clean state for the next one
  local c = cmd(sock, "RSET")
  return results, c == 250, false
end

-- Deliver to one host: a kept connection or a new one. Returns the
-- results and whether another host may be tried.
local function session(kurir, route, m, rcpts, data, host, port, lmtp, key)
  local pkey = key .. "\0" .. host .. ":" .. tostring(port)
  local conn = take(kurir, pkey)
  while true do
    local fresh = false
    if not conn then
      local code, text, next_host
      conn, code, text, next_host = open(kurir, route, host, port, lmtp)
      if not conn then return all(rcpts, code, text), next_host end
      fresh = true
    end
    local results, reusable, stale = transaction(conn, m, rcpts, data)
    if stale and not fresh then
      conn.sock:close()   -- the peer closed it while it was kept: a new one
      conn = nil
    else
      if reusable then give(kurir, pkey, conn, m) else conn.sock:close() end
      return results, false
    end
  end
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

function relay.deliver(route, m, key)
  local kurir = require "kurir"
  local lmtp = route.agent == "lmtp"
  local rcpts = m.rcpts or { { address = m.rcpt, orcpt = m.orcpt, notify = m.notify } }
  local port = tonumber(route.port) or (lmtp and 24 or 25)
  local hosts = {}
  if route.socket then
    hosts[1], port = route.socket, nil
  elseif route.host then
    hosts[1] = route.host
  else
    local domain = rcpts[1].address:match("@([^@]*)$") or ""
    if domain == "" then return all(rcpts, 550, "5.1.2 no domain in <" .. rcpts[1].address .. ">") end
    if domain:match("^%[.*%]$") then
      hosts[1] = domain:sub(2, -2):gsub("^IPv6:", "")
    else
      local mx, err = kurir.dns.mx(domain)
      if mx == nil then
        if err == "NXDOMAIN" then return all(rcpts, 550, "5.1.2 " .. domain .. " does not exist") end
        return all(rcpts, 451, "4.4.3 MX lookup for " .. domain .. ": " .. tostring(err))
      end
      if mx and #mx > 0 then
        if #mx == 1 and (mx[1].host == "" or mx[1].host == ".") then
          return all(rcpts, 556, "5.1.10 " .. domain .. " accepts no mail (null MX)")
        end
        for _, r in ipairs(shuffle_equal(mx)) do
          if r.host ~= "" and r.host ~= "." then hosts[#hosts + 1] = r.host end
        end
      else
        hosts[1] = domain   -- no MX: the domain's own address (RFC 5321 5.1)
      end
    end
  end
  local data, rerr = require("kurir.agents").message(m):raw()
  if not data then return all(rcpts, 451, "4.3.0 cannot read the queued message: " .. tostring(rerr)) end
  local last = all(rcpts, 451, "4.4.1 no host to try")
  for _, host in ipairs(hosts) do
    local results, next_host = session(kurir, route, m, rcpts, data, host, port, lmtp, key or "")
    if not next_host then return results end
    last = results
  end
  -- connection trouble with every host: a temporary failure
  for _, r in ipairs(last) do
    if r[1] >= 500 then r[1] = 451 end
  end
  return last
end

return relay
