-- bench/hooks.lua: a Lua hook at every stage of the session, each doing a
-- little real work of the kind a policy script does, so that the benchmark
-- shows what the hook calls themselves cost. Nothing is stored: data
-- accepts and discards on purpose (msg:discard(), so no message_dropped
-- warning is logged), as bench/discard.lua does.
--
--   kurir -l 127.0.0.1:2525 bench/hooks.lua

local kurir = require "kurir"

kurir.configure {
  limits = { connections = 10000, connections_per_ip = 10000 },
}

-- connect: client addresses refused outright (prefix match)
local blocked_prefixes = { "192.0.2.", "198.51.100.", "203.0.113." }

-- mail: sender domains refused
local blocked_senders = { ["spam.test"] = true, ["junk.test"] = true }

-- rcpt: the domains this server accepts mail for
local local_domains = {
  ["example.test"] = true,
  ["example.org"] = true,
  ["mail.example.test"] = true,
}

function kurir.on.connect(s)
  local ip = s.remote_ip
  for _, prefix in ipairs(blocked_prefixes) do
    if ip:sub(1, #prefix) == prefix then
      return 554, "5.7.1 Client address refused"
    end
  end
  s.messages = 0
end

function kurir.on.helo(s, name)
  if name == "" or name:find("[^%w%.%-%[%]:_]") then
    return 501, "5.5.2 Bad HELO name"
  end
  s.helo_name = name:lower()
end

function kurir.on.mail(_s, from)
  local domain = from.domain and from.domain:lower() or ""
  if blocked_senders[domain] then
    return 550, "5.7.1 Sender domain refused"
  end
end

function kurir.on.rcpt(_s, rcpt)
  local domain = rcpt.domain and rcpt.domain:lower() or ""
  if not local_domains[domain] then
    return 550, "5.1.1 No such domain"
  end
end

function kurir.on.data(s, msg)
  local subject = msg:header("Subject") or ""
  if subject:find("VIAGRA", 1, true) then
    return 554, "5.7.1 Message refused"
  end
  s.messages = (s.messages or 0) + 1
  msg:discard()
  return 250, "2.0.0 Ok: " .. msg.id
end
