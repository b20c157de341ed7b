-- submission.lua: a submission server (RFC 6409): TLS, AUTH required, and
-- senders limited to their own address.
--
--   kurir scripts/examples/submission.lua CERT KEY USERS
--
-- Ports 587 and 465 need root or CAP_NET_BIND_SERVICE; to try it
-- elsewhere, replace the listeners: kurir -l 127.0.0.1:2587 ...
--
-- USERS holds one "address secret" pair per line (# starts a comment).
-- The secrets are stored as they are, because CRAM-MD5 needs the secret
-- itself to check the client's answer; keep the file readable by kurir
-- only (chmod 600). If you offer only PLAIN and LOGIN you could store
-- hashes instead and compare cred.password yourself.
--
-- Accepted messages go to the Maildir mail/outbox until a relay agent
-- takes them further.

local kurir = require "kurir"

local cert = arg[1] or "/etc/kurir/cert.pem"
local key = arg[2] or "/etc/kurir/key.pem"
local users_file = arg[3] or "/etc/kurir/users"

local function load_users(path)
  local f, err = io.open(path, "r")
  if not f then error("submission.lua: cannot read the users file: " .. err, 0) end
  local users = {}
  for line in f:lines() do
    local user, secret = line:match("^%s*([^%s#]+)%s+(%S+)%s*$")
    if user then users[user:lower()] = secret end
  end
  f:close()
  return users
end

local users = load_users(users_file)

kurir.configure {
  listen = { "0.0.0.0:587", "smtps://0.0.0.0:465" },
  tls = { cert = cert, key = key },
  auth = { required = true, mechanisms = { "PLAIN", "LOGIN", "CRAM-MD5" } },
  on_error = { auth = "reject" },    -- a script error never lets anyone in
}

function kurir.on.auth(_, cred)
  local secret = users[(cred.user or ""):lower()]
  if secret and cred:verify(secret) then
    return true                      -- 235 2.7.0, s.user is set
  end
  return false                       -- 535 5.7.8
end

function kurir.on.mail(s, from)
  if from.address:lower() ~= s.user:lower() then
    return 553, "5.7.1 You may only send as " .. s.user
  end
end

local outbox = kurir.maildir "mail/outbox"

function kurir.on.rcpt(_, rcpt)
  rcpt.route = outbox
end
