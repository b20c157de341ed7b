-- bench/lua_heavy.lua: a data hook that does real Lua work per message
-- (1,000 rounds of byte reads, plain finds and arithmetic over a header
-- value; nothing allocated, so the garbage collector does not blur the
-- figure), to show what the CPU budget costs per VM instruction rather
-- than per hook call. Discards.
--
--   kurir -w 1 -l 127.0.0.1:2525 bench/lua_heavy.lua

local kurir = require "kurir"

kurir.configure {
  limits = { connections = 10000, connections_per_ip = 10000 },
}

local words = { "VIAGRA", "lottery", "invoice", "urgent" }

function kurir.on.data(s, msg)
  local subject = msg:header("Subject") or "a fairly ordinary subject line"
  local n, score = #subject, 0
  for i = 1, 1000 do
    local b = subject:byte(i % n + 1)
    if b >= 65 and b <= 90 then score = score + 1 end
    if subject:find(words[i % #words + 1], 1, true) then score = score + 10 end
  end
  s.score = score
  msg:discard()
  return 250, "2.0.0 Ok: " .. msg.id
end
