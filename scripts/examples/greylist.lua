-- greylist.lua: greylisting and tarpitting, with per-session values.
--
--   kurir scripts/examples/greylist.lua [DELAY-SECONDS]
--
-- A (client address, sender, recipient) triplet seen for the first time
-- gets 451 4.7.1; the same triplet retried after DELAY seconds (default
-- 300) is accepted, as real MTAs retry and most spam engines do not.
-- Clients that try many unknown recipients are slowed down: each refusal
-- makes the next answer wait a little longer (kurir.sleep suspends only
-- this session). The triplets live in a kurir.shared dictionary: every
-- worker process sees the same ones, and they survive SIGHUP reloads; the
-- dictionary's size bounds the memory (the least recently used triplets
-- go first) and each triplet expires FORGET seconds after it was last seen.

local kurir = require "kurir"

local DELAY = tonumber(arg[1]) or 300
local FORGET = 36 * 3600          -- a triplet not seen again for this long is dropped
local triplets = kurir.shared("greylist", "8m")   -- about 60,000 triplets
local users = { postmaster = true, alice = true, bob = true }

kurir.configure {
  listen = { "127.0.0.1:2525" },
  on_error = { rcpt = "continue" },   -- a bug in this script must not block mail
}

function kurir.on.connect(s)
  s.refused = 0                      -- per-session value, lives across hooks
end

function kurir.on.rcpt(s, rcpt)
  -- <postmaster> (no domain) must always be accepted (RFC 5321 4.5.1)
  if rcpt.domain == "" and rcpt.user:lower() == "postmaster" then return end
  if s.refused > 0 then
    kurir.sleep(math.min(s.refused, 10))
  end
  if rcpt.domain:lower() ~= "example.test" or not users[rcpt.user:lower()] then
    s.refused = s.refused + 1
    return 550, "5.1.1 No such user"
  end
  if s.user then return end          -- authenticated clients are never greylisted

  local now = os.time()
  local key = table.concat({ s.remote_ip, s.from.address:lower(), rcpt.address:lower() }, "\0")
  local first = triplets:get(key)
  if not first then
    -- add, not set: when another worker stored it first, its time stands
    triplets:add(key, now, FORGET)
    s:log("greylisted", { from = s.from.address, to = rcpt.address })
    return 451, "4.7.1 Greylisted, please try again in " .. DELAY .. " seconds"
  end
  if now - first < DELAY then
    return 451, "4.7.1 Greylisted, please try again later"
  end
  triplets:set(key, first, FORGET)   -- seen again: remembered for longer
end

local store = kurir.maildir "mail/%{user}"

function kurir.on.data(_, msg)
  local ok, err = store:deliver(msg)
  if not ok then return 451, "4.3.0 Could not store the message: " .. err end
end
