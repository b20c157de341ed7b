-- bench/discard.lua: the cheapest possible kurir script, for measuring the
-- engine itself. Every hook is absent except data, which accepts the
-- message and throws it away on purpose (msg:discard(): nothing is stored,
-- nothing is fsync'ed, no message_dropped warning).
-- The limits are raised so that the benchmark's parallel sessions and its
-- idle connections (loadgen -i) are not refused.
--
--   kurir -l 127.0.0.1:2525 bench/discard.lua

local kurir = require "kurir"

kurir.configure {
  limits = { connections = 10000, connections_per_ip = 10000 },
}

function kurir.on.data(_s, msg)
  msg:discard()
  return 250
end
