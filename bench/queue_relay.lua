local kurir = require "kurir"
local sink = tonumber(arg[1])
kurir.configure {
  listen = "127.0.0.1:" .. arg[2],
  queue = { dir = arg[3], retry = { 1 } , concurrency = 20 },
  limits = { connections = 10000, connections_per_ip = 10000 },
}
local r = kurir.relay { host = "127.0.0.1", port = sink, tls = "none" }
function kurir.on.rcpt(s, rcpt) rcpt.route = r end
