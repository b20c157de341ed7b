-- bench/lua_heavy.lua: a data hook that does real Lua work (1,000 rounds of
-- string building, matching and table use per message), to show what the
-- CPU budget costs per VM instruction rather than per hook call. Discards.
--
--   kurir -w 1 -l 127.0.0.1:2525 bench/lua_heavy.lua

local kurir = require "kurir"

kurir.configure {
  limits = { connections = 10000, connections_per_ip = 10000 },
}

local words = { "alpha", "bravo", "charlie", "delta", "echo", "foxtrot" }

function kurir.on.data(s, msg)
  local score, seen = 0, {}
  for i = 1, 1000 do
    local w = words[i % #words + 1]
    local key = w .. ":" .. (i % 17)
    if not seen[key] then
      seen[key] = true
      score = score + #key
    end
    if key:find("^[a-d]") then score = score + 1 end
  end
  s.score = score
  msg:discard()
  return 250, "2.0.0 Ok: " .. msg.id
end
