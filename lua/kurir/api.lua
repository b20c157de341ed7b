-- kurir.api: the parts of the `kurir` module written in Lua.
--
-- The engine builds the C part of `kurir` (hooks, sleep, spawn, log, dns,
-- the raw socket connect) and then calls api.complete on it once per
-- script load, before the script runs. A failure to load any of the
-- modules below fails the load with its message.

local config = require "kurir.config"
local maildir = require "kurir.maildir"
local net = require "kurir.net"

local api = {}

--- Add kurir.configure, kurir.maildir, the route factories and kurir.connect by
-- name to the module table `kurir`; returns the configuration state that
-- kurir.configure merges into (the engine finalizes it after the script).
function api.complete(kurir)
  local state = config.new()
  kurir.configure = function(t) config.merge(state, t, 2) end
  kurir.maildir = maildir.new
  maildir.prepare_dir = rawget(kurir, "_maildir_prepare")   -- C: create a Maildir now
  kurir._maildir_prepare = nil
  -- routes as data: kurir.mbox, pipe, relay, lmtp, deliver, discard
  require("kurir.route").install(kurir)
  kurir.connect = net.wrap(kurir.connect, kurir.dns)
  return state
end

return api
