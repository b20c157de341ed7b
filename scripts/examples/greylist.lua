-- greylist.lua: greylisting and tarpitting, with per-session values.
--
--   kurir scripts/examples/greylist.lua [DELAY-SECONDS]
--
-- A (client address, sender, recipient) triplet seen for the first time
-- gets 451 4.7.1; the same triplet retried after DELAY seconds (default
-- 300) is accepted, as real MTAs retry and most spam engines do not.
-- Clients that try many unknown recipients are slowed down: each refusal
-- makes the next answer wait a little longer (kurir.sleep suspends only
-- this session). The triplet table lives in this process's Lua state, so
-- it starts empty after a restart or SIGHUP; that only means one more
-- retry for some senders.

local kurir = require "kurir"

local DELAY = tonumber(arg[1]) or 300
local FORGET = 36 * 3600          -- a triplet not seen again for this long is dropped
local MAX_TRIPLETS = 100000       -- memory bound
local users = { postmaster = true, alice = true, bob = true }

kurir.configure {
  listen = { "127.0.0.1:2525" },
  on_error = { rcpt = "continue" },   -- a bug in this script must not block mail
}

local seen, count = {}, 0

local function prune(now)
  local n = 0
  for k, first in pairs(seen) do
    if now - first > FORGET then
      seen[k] = nil
      n = n + 1
    end
  end
  count = count - n
  if count >= MAX_TRIPLETS then       -- still full: start over rather than grow
    seen, count = {}, 0
  end
end

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
  local first = seen[key]
  if not first then
    if count >= MAX_TRIPLETS then prune(now) end
    seen[key] = now
    count = count + 1
    s:log("greylisted", { from = s.from.address, to = rcpt.address })
    return 451, "4.7.1 Greylisted, please try again in " .. DELAY .. " seconds"
  end
  if now - first < DELAY then
    return 451, "4.7.1 Greylisted, please try again later"
  end
end

local store = kurir.maildir "mail/%{user}"

function kurir.on.data(_, msg)
  local ok, err = store:deliver(msg)
  if not ok then return 451, "4.3.0 Could not store the message: " .. err end
end
