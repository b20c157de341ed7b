-- kurir.default: what happens at the end of DATA when the script has no
-- `data` hook. The engine runs default.data(s, msg) in the session
-- coroutine as if it were the hook. Each recipient must carry a `route`
-- (an agent with a deliver method, set by the script at RCPT time);
-- recipients sharing a route are handed over in one deliver call. Mail is
-- never dropped silently: a recipient without a route refuses the whole
-- message with 451 4.3.5 before anything is delivered.

local default = {}

local function deliver_method(route)
  local t = type(route)
  if t ~= "table" and t ~= "userdata" then return nil end
  local ok, d = pcall(function() return route.deliver end)
  if not ok then return nil end
  if type(d) == "function" then return d end
  local mt = getmetatable(d)
  if type(mt) == "table" and mt.__call then return d end
  return nil
end

local function log(s, event, fields)
  if type(s) ~= "nil" then
    local ok, logf = pcall(function() return s.log end)
    if ok and logf then s:log(event, fields) end
  end
end

local Discard = {}
Discard.__index = Discard
Discard.__tostring = function() return "kurir.discard" end

--- Drop the message on purpose: deliver succeeds and stores nothing.
function Discard.deliver(_, msg)
  msg:discard()
  return true
end

--- kurir.discard(): a route (or agent) that drops messages on purpose,
-- so that no "message_dropped" warning is logged.
function default.discard()
  return setmetatable({}, Discard)
end

--- Checked when the rcpt hook returns: nil when route is unset or a
-- delivery agent, else why not.
function default.check_route(route)
  if route == nil or deliver_method(route) then return nil end
  local shown = type(route) == "string" and string.format("string %q", route) or type(route)
  return "rcpt.route must be a delivery agent with a deliver method (e.g. kurir.maildir \"mail/%{user}\"), got " ..
    shown
end

--- Deliver msg to the route of each recipient; return nothing on success
-- (the engine's normal 250) or 451 (the reason of a failed delivery is
-- logged, not sent to the client).
function default.data(s, msg)
  local routes, groups = {}, {}
  for _, rcpt in ipairs(msg.rcpts) do
    local route = rcpt.route
    if not deliver_method(route) then
      return 451, "4.3.5 No delivery configured for <" .. tostring(rcpt.address) .. ">"
    end
    local g = groups[route]
    if not g then
      g = {}
      groups[route] = g
      routes[#routes + 1] = route
    end
    g[#g + 1] = rcpt
  end
  for _, route in ipairs(routes) do
    local ok, err = route:deliver(msg, groups[route])
    if not ok then
      err = err ~= nil and tostring(err) or "no reason given"
      log(s, "delivery_failed", { id = msg.id, route = tostring(route), error = err })
      -- the reason stays in the log: it may name server paths or local parts
      return 451, "4.3.0 Delivery failed, try again later"
    end
  end
end

return default
