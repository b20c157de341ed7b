-- routes.lua: per-recipient routing with the default delivery.
--
--   kurir scripts/examples/routes.lua
--
-- The route is chosen at RCPT time, so that an unroutable recipient is
-- refused in the session instead of bounced later. There is no `data`
-- hook: at the end of DATA the engine hands each message to the route of
-- every recipient (one delivery per route) and answers 250 only when all
-- of them stored it; otherwise 451, and the client retries.

local kurir = require "kurir"

kurir.configure {
  listen = { "127.0.0.1:2525", "[::1]:2525" },
  limits = { recipients = 50 },
}

local routes = {
  ["example.test"]       = kurir.maildir "mail/example.test/%{user}",
  ["lists.example.test"] = kurir.maildir "mail/lists",          -- one shared Maildir
  ["customers.test"]     = kurir.maildir "mail/customers/%{domain}/%{user}",
}
local postmaster = kurir.maildir "mail/postmaster"

function kurir.on.rcpt(_, rcpt)
  if rcpt.user:lower() == "postmaster" then
    rcpt.route = postmaster                                      -- also <postmaster> alone
    return
  end
  rcpt.route = routes[rcpt.domain:lower()]
  if not rcpt.route then
    return 550, "5.1.1 No such domain"
  end
end
