-- kurir.faults: deterministic, stateful fault injection for test suites.
--
--   local faults = require("kurir.faults").new(kurir)
--   faults:add { stage = "rcpt", match = "^flaky@", first = 2 }       -- 451 twice per recipient, then accept
--   faults:add { stage = "mail", match = "@blocked%.test$", code = 550, text = "5.7.1 Go away" }
--   faults:add { stage = "data", delay = 3 }                          -- every DATA answered 3 s late
--   faults:add { stage = "data", drop = true }                        -- connection cut, no reply to DATA
--   faults:add { stage = "data", drop = 100 }                         -- cut after 100 bytes of the body
--   faults:add { rate = { messages = 10, per = 60 } }                 -- 421 past 10 messages a minute
--   faults:add { rate = { connections = 5, per = 1 } }                -- 421 past 5 connections a second
--   faults:add { greylist = 300 }                                     -- 451 4.7.1 until retried 300 s later
--   local code, text = faults:check("rcpt", s, rcpt)                 -- from a hook
--
-- Rules apply in the order added; the first that answers wins. `match` is
-- a Lua pattern tried on the stage's subject: the remote IP (connect), the
-- HELO name (helo), the sender (mail), the recipient (rcpt), any recipient
-- (data). `mailbox` scopes a rule to one mailbox (the AUTH user or +tag,
-- as the mock files mail), so that parallel tests each get their own
-- faults; rules set over HTTP (PUT /api/v1/faults) are scoped that way.
-- Counters (first N, rate, greylist) live in the fault set and start over
-- when its rules are replaced.

local faults = {}

local Set = {}
Set.__index = Set

local STAGES = { connect = true, helo = true, mail = true, rcpt = true, data = true }
local KEYS = {
  stage = true, match = true, code = true, text = true, first = true, delay = true, drop = true,
  rate = true, greylist = true, mailbox = true,
}

local DEFAULT_TEXT = {
  [421] = "4.7.0 Fault injected: closing connection",
  [450] = "4.2.1 Fault injected: mailbox unavailable",
  [451] = "4.3.0 Fault injected: try again later",
  [452] = "4.3.1 Fault injected: insufficient storage",
  [550] = "5.1.1 Fault injected: mailbox unavailable",
  [552] = "5.3.4 Fault injected: message too big",
  [554] = "5.0.0 Fault injected: transaction failed",
}

function faults.new(kurir)
  return setmetatable({ kurir = kurir, rules = {} }, Set)
end

local function bad(fmt, ...)
  return nil, string.format(fmt, ...)
end

--- Check one rule table; returns a normalised copy or nil, err.
function faults.rule(r)
  if type(r) ~= "table" then return bad("a fault rule must be a table, got %s", type(r)) end
  for k in pairs(r) do
    if not KEYS[k] then return bad("unknown fault key '%s'", tostring(k)) end
  end
  local out = { mailbox = r.mailbox, match = r.match, state = {} }
  if r.mailbox ~= nil and (type(r.mailbox) ~= "string" or r.mailbox == "") then
    return bad("mailbox: expected a non-empty string")
  end
  if r.match ~= nil then
    if type(r.match) ~= "string" then return bad("match: expected a Lua pattern string") end
    local ok, err = pcall(string.find, "", r.match)
    if not ok then return bad("match: bad pattern: %s", err) end
  end
  if r.rate ~= nil then
    local rate = r.rate
    if type(rate) ~= "table" or type(rate.per) ~= "number" or rate.per <= 0 then
      return bad("rate: expected { connections = N or messages = N, per = seconds }")
    end
    local n = rate.connections or rate.messages
    if math.type(n) ~= "integer" and not (type(n) == "number" and n == math.floor(n)) or n < 0 then
      return bad("rate: connections or messages must be an integer >= 0")
    end
    out.rate = { limit = math.tointeger(n), per = rate.per, kind = rate.connections and "connections" or "messages" }
    out.stage = rate.connections and "connect" or "data"
    out.code = r.code or 421
  elseif r.greylist ~= nil then
    if type(r.greylist) ~= "number" or r.greylist < 0 then return bad("greylist: expected seconds >= 0") end
    out.greylist = r.greylist
    out.stage = "rcpt"
    out.code = r.code or 451
    out.text = r.text or string.format("4.7.1 Greylisted, please try again in %g seconds", r.greylist)
  else
    if not STAGES[r.stage] then
      return bad("stage: expected connect, helo, mail, rcpt or data, got %s", tostring(r.stage))
    end
    out.stage = r.stage
    if r.delay ~= nil then
      if type(r.delay) ~= "number" or r.delay < 0 then return bad("delay: expected seconds >= 0") end
      out.delay = r.delay
    end
    if r.drop ~= nil then
      if r.drop ~= true and (math.type(r.drop) ~= "integer" or r.drop < 0) then
        if not (type(r.drop) == "number" and r.drop >= 0 and r.drop == math.floor(r.drop)) then
          return bad("drop: expected true or a byte count")
        end
      end
      if r.drop ~= true and r.stage ~= "data" then return bad("drop = N (bytes) is for stage data") end
      out.drop = r.drop == true or math.tointeger(r.drop)
    end
    if r.first ~= nil then
      if type(r.first) ~= "number" or r.first < 1 or r.first ~= math.floor(r.first) then
        return bad("first: expected an integer >= 1")
      end
      out.first = math.tointeger(r.first)
    end
    if r.code ~= nil then out.code = r.code
    elseif out.first then out.code = 451
    elseif not out.delay and not out.drop then
      return bad("a %s rule needs code, first, delay or drop", r.stage)
    end
  end
  if out.code ~= nil and (math.type(out.code) ~= "integer" and not (type(out.code) == "number" and
      out.code == math.floor(out.code)) or out.code < 200 or out.code > 599) then
    return bad("code: expected an SMTP reply code 200-599")
  end
  out.code = out.code and math.tointeger(out.code)
  if r.text ~= nil then
    if type(r.text) ~= "string" or r.text:find("[\r\n]") then return bad("text: expected one line") end
    out.text = r.text
  end
  return out
end

--- Add a rule (raises on a bad one, naming the problem).
function Set:add(r)
  local rule, err = faults.rule(r)
  if not rule then error("kurir.faults: " .. err, 2) end
  self.rules[#self.rules + 1] = rule
  return self
end

--- Replace the rules of one mailbox scope (nil = unscoped) with list;
-- nil, err (nothing changed) when a rule is bad.
function Set:replace(mailbox, list)
  local new = {}
  for i, r in ipairs(list) do
    local copy = {}
    for k, v in pairs(r) do copy[k] = v end
    if mailbox then copy.mailbox = mailbox end
    local rule, err = faults.rule(copy)
    if not rule then return nil, "rules[" .. i .. "]: " .. err end
    new[#new + 1] = rule
  end
  self:clear(mailbox)
  for _, r in ipairs(new) do self.rules[#self.rules + 1] = r end
  return true
end

--- Drop the rules of one mailbox scope, or every rule (mailbox == nil and all).
function Set:clear(mailbox, all)
  local keep = {}
  for _, r in ipairs(self.rules) do
    if not all and r.mailbox ~= mailbox then keep[#keep + 1] = r end
  end
  self.rules = keep
end

-- The mailbox a recipient's mail would land in (AUTH user, else +tag).
local function mailbox_of(s, rcpt)
  if s.user and s.user ~= "" then return s.user end
  return rcpt and rcpt.user and rcpt.user:match("^[^+]*%+(.+)$") or nil
end

local function subjects(stage, s, arg)
  if stage == "connect" then return { { s.remote_ip } } end
  if stage == "helo" then return { { arg or "" } } end
  if stage == "mail" then return { { arg and arg.address or "", s.user } } end
  if stage == "rcpt" then return { { arg.address, mailbox_of(s, arg) } } end
  local out = {}
  for _, r in ipairs(arg and arg.rcpts or s.rcpts or {}) do out[#out + 1] = { r.address, mailbox_of(s, r) } end
  if #out == 0 then out[1] = { "" } end
  return out
end

local function now(self)
  return self.kurir and self.kurir.now and self.kurir.now() or os.time()
end

local function answer(rule, s)
  local text = rule.text or DEFAULT_TEXT[rule.code] or "Fault injected"
  s:log("fault", { stage = rule.stage, code = rule.code })
  return rule.code, text
end

-- one rule against one (address, mailbox): code, text | nil
local function apply(self, rule, s, stage, who, mbox)
  if rule.rate then
    local st = rule.state
    local t = now(self)
    if not st.start or t - st.start >= rule.rate.per then st.start, st.count = t, 0 end
    st.count = st.count + 1
    if st.count > rule.rate.limit then return answer(rule, s) end
    return nil
  end
  if rule.greylist then
    local key = (s.remote_ip or "") .. "|" .. (s.from and s.from.address or "") .. "|" .. who
    local seen = rule.state[key]
    local t = now(self)
    if seen == true then return nil end
    if not seen then
      rule.state[key] = t
      return answer(rule, s)
    end
    if t - seen < rule.greylist then return answer(rule, s) end
    rule.state[key] = true
    return nil
  end
  if rule.delay and rule.delay > 0 and self.kurir then self.kurir.sleep(rule.delay) end
  if rule.drop then
    if rule.drop == true then
      s:log("fault", { stage = stage, drop = "now" })
      s:drop()
      return 421, "4.7.0 Fault injected"   -- never sent: the connection is cut first
    end
    return nil
  end
  if rule.first then
    local key = who .. "|" .. (mbox or "")
    local n = (rule.state[key] or 0) + 1
    rule.state[key] = n
    if n > rule.first then return nil end
    return answer(rule, s)
  end
  if rule.code then return answer(rule, s) end
  return nil
end

--- Run the rules for stage; returns code, text when a rule answers.
-- stage "rcpt" also arms the mid-DATA drops (drop = N) for that recipient.
function Set:check(stage, s, arg)
  for _, rule in ipairs(self.rules) do
    local match_stage = rule.stage == stage or (stage == "rcpt" and rule.stage == "data" and
      type(rule.drop) == "number")
    if match_stage then
      for _, subj in ipairs(subjects(stage, s, arg)) do
        local who, mbox = subj[1] or "", subj[2]
        if (not rule.mailbox or rule.mailbox == mbox) and (not rule.match or who:find(rule.match)) then
          if stage == "rcpt" and rule.stage == "data" then
            s:drop(rule.drop)
          else
            local code, text = apply(self, rule, s, stage, who, mbox)
            if code then return code, text end
          end
          break
        end
      end
    end
  end
end

--- Rules as plain tables (for GET /api/v1/faults).
function Set:list()
  local out = {}
  for _, r in ipairs(self.rules) do
    local v = {
      stage = r.stage, match = r.match, code = r.code, text = r.text, first = r.first, delay = r.delay,
      drop = r.drop, greylist = r.greylist, mailbox = r.mailbox,
    }
    if r.rate then v.rate = { [r.rate.kind] = r.rate.limit, per = r.rate.per } end
    out[#out + 1] = v
  end
  return out
end

--- Wrap the script's hooks in kurir.on so that the rules run first.
function Set:install(kurir)
  kurir = kurir or self.kurir
  for stage in pairs(STAGES) do
    local orig = kurir.on[stage]
    if stage == "data" and not orig then
      -- no data hook of the script's own: the routes deliver as before
      orig = require("kurir.default").data
    end
    kurir.on[stage] = function(s, x)
      local code, text = self:check(stage, s, x)
      if code then return code, text end
      if orig then return orig(s, x) end
    end
  end
  return self
end

return faults
