-- kurir.agents: the queue's Lua delivery agents, run by the engine in a
-- task for one recipient of a queued message (core/queue/agent_lua.c):
--
--   agents.run(route, m) -> code, text | true | false, why | nil, why
--
-- route is the stored route string ("agent key=value ..."), m the queued
-- message (id, from, rcpt, path and body_off of the queue file, ret, envid,
-- orcpt, notify, and rcpts: every recipient of this delivery, each
-- {address, orcpt, notify}). "lua" calls the function of kurir.deliver
-- for m.rcpt; "relay" and "lmtp" are SMTP/LMTP clients (kurir.relay) that
-- carry all of m.rcpts in one transaction and return a list of
-- {code, text}, one per recipient.

local agents = {}

-- functions registered by kurir.deliver, by name; filled again in the
-- same order when the script loads after a restart
agents.functions = {}

local function untoken(t)
  if t == "-" then return "" end
  return (t:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- The route string back as a table (lists for key.N).
function agents.parse(route)
  local agent, rest = route:match("^(%S+)%s*(.*)$")
  local r = { agent = untoken(agent or "") }
  for tok in (rest or ""):gmatch("%S+") do
    local k, v = tok:match("^([^=]*)=(.*)$")
    if k then
      k, v = untoken(k), untoken(v)
      local base, idx = k:match("^(.-)%.(%d+)$")
      if base then
        r[base] = r[base] or {}
        r[base][tonumber(idx)] = v
      else
        r[k] = v
      end
    end
  end
  return r
end

local Message = {}
Message.__index = Message

--- The queued message's bytes (the Received header kurir added included).
function Message:raw()
  local f, err = io.open(self.path, "rb")
  if not f then return nil, err end
  f:seek("set", self.body_off)
  local data = f:read("a")
  f:close()
  return data
end

local function user_domain(address)
  local user, domain = address:match("^(.*)@([^@]*)$")
  return user or address, domain or ""
end

--- The message view a kurir.deliver function gets, and its recipients.
function agents.message(m)
  local fu, fd = user_domain(m.from)
  local ru, rd = user_domain(m.rcpt)
  local rcpt = { address = m.rcpt, user = ru, domain = rd, params = { ORCPT = m.orcpt } }
  local msg = setmetatable({
    id = m.id,
    from = { address = m.from, user = fu, domain = fd, params = { RET = m.ret, ENVID = m.envid } },
    rcpts = { rcpt },
    path = m.path,
    body_off = m.body_off,
  }, Message)
  return msg, { rcpt }
end

function agents.run(route, m)
  local r = agents.parse(route)
  if r.agent == "lua" then
    local fn = agents.functions[r.name]
    if not fn then
      return 451, "4.3.5 no kurir.deliver function \"" .. tostring(r.name) .. "\" in the running script"
    end
    local msg, rcpts = agents.message(m)
    local a, b = fn(msg, rcpts)
    if type(a) == "table" then
      -- per recipient: { [address] = true | false | code, ... }
      local v = a[m.rcpt]
      if v == nil then v = a[1] end
      a, b = v, nil
    end
    return a, b
  end
  local relay = require "kurir.relay"
  return relay.deliver(r, m, route)   -- per recipient of m.rcpts
end

return agents
