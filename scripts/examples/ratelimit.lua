-- ratelimit.lua: at most N messages a minute per client address, counted
-- across every worker process and across SIGHUP reloads.
--
--   kurir scripts/examples/ratelimit.lua [MESSAGES-PER-MINUTE]
--
-- Each MAIL FROM adds one to the client's count in a kurir.shared
-- dictionary; the count starts at the first message and expires a minute
-- later (a fixed window). Past the limit, MAIL gets 450 4.7.1 and the
-- client is expected to retry later, as MTAs do. The dictionary is shared
-- memory: `workers = N` processes see one count, not N. Messages are
-- stored in the Maildir ./mail.

local kurir = require "kurir"

local LIMIT = tonumber(arg[1]) or 30
local WINDOW = 60
local counts = kurir.shared("ratelimit", "1m")

kurir.configure {
  listen = { "127.0.0.1:2525" },
  on_error = { mail = "continue" },   -- a bug in this script must not block mail
}

function kurir.on.mail(s)
  if s.user then return end          -- authenticated clients are not limited
  local n, err = counts:incr(s.remote_ip, 1, 0, WINDOW)
  if not n then
    s:log("ratelimit_error", { error = err })
    return
  end
  if n > LIMIT then
    s:log("ratelimited", { count = n })
    return 450, "4.7.1 Too many messages from " .. s.remote_ip .. ", try again later"
  end
end

local store = kurir.maildir "mail"

function kurir.on.data(_, msg)
  local ok, err = store:deliver(msg)
  if not ok then return 451, "4.3.0 Could not store the message: " .. err end
end
