-- policy.lua: accept mail for one domain only and keep it in a Maildir.
--
--   kurir scripts/examples/policy.lua [DOMAIN [MAILDIR]]
--
-- Every other recipient domain gets 550 5.7.1 at RCPT time, so no mail is
-- accepted that would have to be bounced later.

local kurir = require "kurir"

local domain = (arg[1] or "example.test"):lower()
local store = kurir.maildir(arg[2] or "mail/%{user}")

kurir.configure { listen = { "127.0.0.1:2525" } }

function kurir.on.rcpt(_, rcpt)
  if rcpt.domain == "" then return end   -- <postmaster> must always be accepted
  if rcpt.domain:lower() ~= domain then
    return 550, "5.7.1 Relaying denied"
  end
end

function kurir.on.data(_, msg)
  local ok, err = store:deliver(msg)
  if not ok then
    return 451, "4.3.0 Could not store the message: " .. err
  end
end
