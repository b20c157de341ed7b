-- kurir.default: what happens at the end of DATA when the script has no
-- `data` hook (or its data hook returns nothing). The engine runs
-- default.data(s, msg) in the session coroutine as if it were the hook.
-- Each recipient must carry a `route` (set by the script at RCPT time):
--
--   * a route that can deliver at once (kurir.maildir, kurir.discard, or an
--     object with a deliver method) is delivered before the 250, one call
--     per route for the recipients sharing it;
--   * every other route (kurir.mbox, kurir.pipe, ...), a recipient that
--     asked for a success notification (NOTIFY=SUCCESS), and a recipient
--     whose immediate delivery failed temporarily go to the queue:
--     msg:enqueue() makes the message durable before the 250, and the
--     queue delivers, retries and bounces.
--
-- Mail is never dropped silently: a recipient without a route refuses the
-- whole message with 451 4.3.5 before anything is delivered, and a
-- recipient that was delivered is never the reason for a 451 once the rest
-- is safely queued.

local default = {}

-- The reply texts live in C (proto/reply.c), as kurir.reply(name, arg).
local function reply(name, arg)
  return require("kurir").reply(name, arg)
end

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

local function queueable(route)
  local mt = getmetatable(route)
  return type(route) == "table" and type(mt) == "table" and rawget(mt, "__kurir_route") == true
end

local function wants_success(rcpt)
  local n = type(rcpt.params) == "table" and rcpt.params.NOTIFY
  return type(n) == "string" and n:upper():find("SUCCESS", 1, true) ~= nil
end

local function log(s, event, fields)
  if type(s) ~= "nil" then
    local ok, logf = pcall(function() return s.log end)
    if ok and logf then s:log(event, fields) end
  end
end

--- kurir.discard(): a route that drops messages on purpose (no
-- "message_dropped" warning); made by kurir.route.
function default.discard()
  return require("kurir.route").discard()
end

--- Checked when the rcpt hook returns: nil when route is unset, a route
-- made by a factory or a delivery agent, else why not.
function default.check_route(route)
  if route == nil or deliver_method(route) or queueable(route) then return nil end
  local shown = type(route) == "string" and string.format("string %q", route) or type(route)
  return "rcpt.route must be a delivery agent or a route (kurir.maildir \"mail/%{user}\", kurir.mbox, " ..
    "kurir.pipe, kurir.relay, kurir.lmtp, kurir.deliver, kurir.discard), got " .. shown
end

--- Deliver or queue msg for each recipient's route; return nothing on
-- success (the engine's normal 250 with the queue id) or 451 with the
-- reason.
function default.data(s, msg)
  local routes, groups, queued = {}, {}, {}
  for _, rcpt in ipairs(msg.rcpts) do
    local route = rcpt.route
    local now = deliver_method(route)
    if not now and not queueable(route) then
      return reply("no_delivery", "<" .. tostring(rcpt.address) .. ">")
    end
    if queueable(route) and (not now or wants_success(rcpt)) then
      queued[#queued + 1] = rcpt
    else
      local g = groups[route]
      if not g then
        g = {}
        groups[route] = g
        routes[#routes + 1] = route
      end
      g[#g + 1] = rcpt
    end
  end
  local delivered = 0
  for _, route in ipairs(routes) do
    local ok, err = route:deliver(msg, groups[route])
    if ok then
      delivered = delivered + #groups[route]
    else
      err = err ~= nil and tostring(err) or "no reason given"
      log(s, "delivery_failed", { id = msg.id, route = tostring(route), error = err })
      if not queueable(route) then
        -- an object the queue cannot store: the client must try again
        -- (recipients delivered already by then get a second copy; use
        -- factory routes, which fall back to the queue instead)
        if delivered > 0 then
          log(s, "delivery_partial", { id = msg.id, delivered = delivered })
        end
        -- the reason stays in the log: it may name server paths or local parts
        return reply("delivery_failed")
      else
        for _, r in ipairs(groups[route]) do queued[#queued + 1] = r end
      end
    end
  end
  if #queued > 0 then
    local ok, err = msg:enqueue(queued)
    if not ok then
      log(s, "queue_failed", { id = msg.id, error = tostring(err) })
      return reply("queue_failed")
    end
  end
end

--- Wrap a script's data hook: when it returns nothing (or true), the
-- routes of the recipients deliver as without a data hook; a message none
-- of whose recipients has a route is simply accepted, as before routes.
-- The results pass through as varargs (no table per message).
local function after_data(s, msg, ...)
  local n, first = select("#", ...), ...
  if n == 0 or (n == 1 and (first == nil or first == true)) then
    for _, rcpt in ipairs(msg.rcpts) do
      if rcpt.route ~= nil then return default.data(s, msg) end
    end
  end
  return ...
end

function default.wrap(hook)
  return function(s, msg)
    return after_data(s, msg, hook(s, msg))
  end
end

return default
