-- The script test_session.c runs: a few hooks whose answers the test
-- knows. `arg[1] == "tls"` configures TLS (self-signed) with tls.required.
local kurir = require "kurir"

kurir.configure {
  hostname = "mx.test",
  tls = arg[1] == "tls" and { self_signed = true, required = true } or nil,
}

function kurir.on.rcpt(_, rcpt)
  if rcpt.user == "reject" then return 550, "5.7.1 no thanks" end
  if rcpt.user == "bye" then return 421, "4.7.0 going away" end
  if rcpt.user ~= "noroute" then rcpt.route = kurir.discard() end
end

function kurir.on.command(_, verb, arg)
  if verb == "XPING" then return 250, "pong" end
  if verb == "XREPLY" then return kurir.reply(arg, "<x@example.test>") end
end
