-- kurir.mockapi: the mock server's HTTP API (/api/v1, docs/api.md) and
-- the web UI's static files (web/ in the source tree or the installed data
-- directory), answered through kurir.http.handle. JSON goes through
-- lua-cjson. Nothing here waits: a wait-for-message request is left open
-- (suspended in the C core) and answered by the store when the message
-- arrives or by its deadline (408); an event stream stays open and gets
-- one Server-Sent Event per new, read or deleted message.

local cjson = require "cjson"
local query = require "kurir.mockquery"

local api = {}

local LIST_LIMIT = 50
local LIST_LIMIT_MAX = 10000
local WAIT_MAX = 3600

-- JSON -----------------------------------------------------------------------

-- lua-cjson 2.1 writes an empty table as {}; arrays are marked so that an
-- empty list stays [] (the encoding of strings and numbers is cjson's).
local ARRAY = {}
local function array(t) return setmetatable(t or {}, ARRAY) end
api.array = array

local encode

local function encode_into(v, out)
  local t = type(v)
  if t == "table" then
    if getmetatable(v) == ARRAY or (next(v) ~= nil and #v > 0) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode_into(v[i], out)
      end
      out[#out + 1] = "]"
    else
      out[#out + 1] = "{"
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = cjson.encode(k)
        out[#out + 1] = ":"
        encode_into(v[k], out)
      end
      out[#out + 1] = "}"
    end
  elseif v == nil then
    out[#out + 1] = "null"
  else
    out[#out + 1] = cjson.encode(v)
  end
end

encode = function(v)
  local out = {}
  encode_into(v, out)
  return table.concat(out)
end
api.encode = encode

local JSON = { ["Content-Type"] = "application/json", ["Cache-Control"] = "no-store" }

local function reply(req, status, value)
  return req:respond(status, encode(value) .. "\n", JSON)
end

local function fail(req, status, msg)
  return reply(req, status, { error = msg })
end

-- Views ------------------------------------------------------------------------

local function iso(t)
  if not t then return nil end
  local secs = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. string.format(".%03dZ", math.floor((t - secs) * 1000))
end

--- The list form of an entry (SPEC 5: id, mailbox, from, to, subject, size).
function api.summary(e)
  return {
    id = e.id,
    mailbox = e.mailbox,
    from = e.from,
    to = array { table.unpack(e.to) },
    subject = e.subject,
    size = e.size,
    header_from = e.header_from,
    header_to = e.header_to,
    header_cc = e.header_cc,
    date = e.date and iso(e.date) or nil,
    received = iso(e.received),
    attachment_count = e.attachments,
    tls = e.tls,
    auth = e.auth,
    read = e.read,
    message_id = e.message_id,
  }
end

local function list_body(entries, offset, limit, total)
  local msgs = array()
  for i = offset + 1, math.min(#entries, offset + limit) do msgs[#msgs + 1] = api.summary(entries[i]) end
  return { total = total or #entries, offset = offset, count = #msgs, messages = msgs }
end

-- Parameters -------------------------------------------------------------------

local function int_param(v, name, default, min, max)
  if v == nil or v == "" then return default end
  local n = v:match("^%d+$") and tonumber(v)
  if not n or n < min or n > max then
    return nil, string.format("%s: expected an integer %d-%d, got '%s'", name, min, max, v)
  end
  return math.tointeger(n)
end

local function num_param(v, name, default, max)
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n ~= n or n < 0 or n > max then
    return nil, string.format("%s: expected seconds 0-%d, got '%s'", name, max, v)
  end
  return n
end

-- mailbox and query of a request: mailbox (nil = all), terms | nil, err
local function filter(req)
  local q = req.query
  local mailbox = q.mailbox
  if mailbox == "" then mailbox = nil end
  local terms, err = query.parse(q.query)
  if not terms then return nil, nil, "query: " .. err end
  return mailbox, terms
end

-- Static files -----------------------------------------------------------------

local TYPES = {
  html = "text/html; charset=utf-8", js = "text/javascript; charset=utf-8", css = "text/css; charset=utf-8",
  svg = "image/svg+xml", png = "image/png", ico = "image/x-icon", json = "application/json",
}

-- web/ beside lua/ (source tree and installed data directory alike)
local function web_root()
  local path = package.searchpath("kurir.mockapi", package.path)
  if not path then return nil end
  return path:gsub("/lua/kurir/mockapi%.lua$", "") .. "/web"
end

local function serve_static(self, req, name)
  -- names are one path segment of [%w._-], never "..": nothing can escape
  if not name:match("^[%w_%-][%w_%.%-]*$") or name:find("..", 1, true) then
    return fail(req, 404, "not found")
  end
  local f = self.web and io.open(self.web .. "/" .. name, "rb")
  if not f then return fail(req, 404, "not found") end
  local data = f:read("a")
  f:close()
  local ext = name:match("%.(%w+)$") or ""
  return req:respond(200, data, {
    ["Content-Type"] = TYPES[ext] or "application/octet-stream",
    ["Cache-Control"] = "no-cache",
    ["X-Content-Type-Options"] = "nosniff",
    -- The message's HTML is a srcdoc iframe, which inherits this policy on
    -- top of its own: images, styles, fonts and media may come from anywhere
    -- here so that "Load remote content" can show them; until then the
    -- iframe's own policy blocks them (web/app.js renderHtml). The UI's own
    -- code loads nothing remote, and scripts stay 'self'.
    ["Content-Security-Policy"] = "default-src 'self'; img-src * data:; style-src 'self' 'unsafe-inline' *; " ..
      "font-src *; media-src *; frame-src 'self' blob:; connect-src 'self'",
  })
end

-- Handlers ---------------------------------------------------------------------

local API = {}
API.__index = API

function API:list(req)
  local mailbox, terms, err = filter(req)
  if err then return fail(req, 400, err) end
  local limit, lerr = int_param(req.query.limit, "limit", LIST_LIMIT, 1, LIST_LIMIT_MAX)
  if not limit then return fail(req, 400, lerr) end
  local offset, oerr = int_param(req.query.offset, "offset", 0, 0, math.maxinteger)
  if not offset then return fail(req, 400, oerr) end
  local entries = self.store:select(mailbox, terms)
  return reply(req, 200, list_body(entries, offset, limit))
end

function API:delete_many(req)
  local mailbox, terms, err = filter(req)
  if err then return fail(req, 400, err) end
  local n = 0
  for _, e in ipairs(self.store:select(mailbox, terms)) do
    if self.store:delete(e) then n = n + 1 end
  end
  return reply(req, 200, { deleted = n })
end

local function part_list(parsed)
  local atts = array()
  for _, p in ipairs(parsed.parts or {}) do
    if p.attachment then
      atts[#atts + 1] = {
        part = p.index, filename = p.filename or "", content_type = p.content_type, size = p.size,
        content_id = p.content_id,
      }
    end
  end
  return atts
end

local function inline_parts(parsed)
  local out = array()
  for _, p in ipairs(parsed.parts or {}) do
    if p.content_id then
      out[#out + 1] = { part = p.index, content_id = p.content_id, content_type = p.content_type, size = p.size }
    end
  end
  return out
end

function API:message(req, e)
  local raw = self.store:raw(e)
  if not raw then return fail(req, 410, "the message file is gone") end
  local parsed = self.kurir.mime(raw) or { headers = {}, parts = {} }
  local v = api.summary(e)
  v.text = parsed.text or ""
  v.html = parsed.html or ""
  local headers = array()
  for _, h in ipairs(parsed.headers or {}) do headers[#headers + 1] = { name = h.name, value = h.value } end
  v.headers = headers
  v.attachments = part_list(parsed)
  v.inline = inline_parts(parsed)
  return reply(req, 200, v)
end

local function safe_filename(name)
  name = (name or ""):gsub('[%c"\\/]', "_")
  if name == "" then name = "part" end
  return name
end

function API:part(req, e, n)
  local raw = self.store:raw(e)
  if not raw then return fail(req, 410, "the message file is gone") end
  local parsed = self.kurir.mime(raw) or { parts = {} }
  local p = parsed.parts[n]
  if not p then return fail(req, 404, "no part " .. n) end
  local disposition = req.query.inline == "1" and "inline" or "attachment"
  return req:respond(200, p.data, {
    ["Content-Type"] = p.content_type .. (p.charset and ("; charset=" .. p.charset:gsub("[^%w%-_]", "")) or ""),
    ["Content-Disposition"] = disposition .. '; filename="' .. safe_filename(p.filename) .. '"',
    ["X-Content-Type-Options"] = "nosniff",
    ["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
  })
end

function API:raw(req, e)
  local raw = self.store:raw(e)
  if not raw then return fail(req, 410, "the message file is gone") end
  local headers = { ["Content-Type"] = "text/plain; charset=utf-8", ["X-Content-Type-Options"] = "nosniff" }
  if req.query.download == "1" then
    headers["Content-Type"] = "message/rfc822"
    headers["Content-Disposition"] = 'attachment; filename="' .. e.id .. '.eml"'
  end
  return req:respond(200, raw, headers)
end

function API:set_read(req, e)
  local read = true
  if req.body ~= "" then
    local ok, v = pcall(cjson.decode, req.body)
    if not ok or type(v) ~= "table" or type(v.read) ~= "boolean" then
      return fail(req, 400, 'expected a JSON body {"read": true|false}')
    end
    read = v.read
  end
  if req.method == "DELETE" then read = false end
  local ok, err = self.store:set_read(e, read)
  if not ok then return fail(req, 500, tostring(err)) end
  return reply(req, 200, api.summary(e))
end

function API:wait(req)
  local mailbox, terms, err = filter(req)
  if err then return fail(req, 400, err) end
  local count, cerr = int_param(req.query.count, "count", 1, 1, LIST_LIMIT_MAX)
  if not count then return fail(req, 400, cerr) end
  local timeout, terr = num_param(req.query.timeout, "timeout", 30, WAIT_MAX)
  if not timeout then return fail(req, 400, terr) end
  local store = self.store
  local key = (mailbox or "") .. "\0" .. (req.query.query or "") .. "\0" .. count
  local function done(_, cache)
    local body = cache and cache[key]
    if not body then
      body = encode(list_body(store:select(mailbox, terms), 0, math.max(count, LIST_LIMIT))) .. "\n"
      if cache then cache[key] = body end
    end
    req:respond(200, body, JSON)
  end
  if not store:wait(req, mailbox, terms, count, done) then
    req:deadline(timeout, 408, encode { error = "timeout", timeout = timeout } .. "\n", JSON)
  end
end

function API:events(req)
  local mailbox = req.query.mailbox
  if mailbox == "" then mailbox = nil end
  req:stream(200, {
    ["Content-Type"] = "text/event-stream",
    ["Cache-Control"] = "no-store",
    ["X-Accel-Buffering"] = "no",
  })
  req:send(": kurir events\nretry: 1000\n\n")
  self.subscribers[#self.subscribers + 1] = { req = req, mailbox = mailbox }
end

function API:broadcast(kind, e)
  if #self.subscribers == 0 then return end
  local data
  if kind == "deleted" then
    data = encode { id = e.id, mailbox = e.mailbox }
  else
    data = encode(api.summary(e))
  end
  local frame = "event: " .. kind .. "\ndata: " .. data .. "\n\n"
  local keep = {}
  for _, s in ipairs(self.subscribers) do
    if s.mailbox and s.mailbox ~= e.mailbox then
      keep[#keep + 1] = s
    elseif s.req:send(frame) then
      keep[#keep + 1] = s
    end
  end
  self.subscribers = keep
end

-- GET lists every rule; PUT [?mailbox=M] replaces the rules of that scope
-- with the body ({"rules": [...]} or a bare array); DELETE [?mailbox=M]
-- clears that scope, or everything without mailbox.
function API:faults_api(req)
  local mailbox = req.query.mailbox
  if mailbox == "" then mailbox = nil end
  local f = self.faults
  if req.method == "GET" then
    local rules = array()
    for _, r in ipairs(f:list()) do rules[#rules + 1] = r end
    return reply(req, 200, { rules = rules })
  elseif req.method == "PUT" then
    local ok, body = pcall(cjson.decode, req.body)
    if not ok or type(body) ~= "table" then return fail(req, 400, "expected a JSON body {\"rules\": [...]}") end
    local list = body.rules or body
    if type(list) ~= "table" then return fail(req, 400, "rules: expected an array") end
    -- JSON null arrives as cjson.null: drop such keys
    for _, r in ipairs(list) do
      if type(r) == "table" then
        for k, v in pairs(r) do if v == cjson.null then r[k] = nil end end
      end
    end
    local done, err = f:replace(mailbox, list)
    if not done then return fail(req, 400, err) end
    return reply(req, 200, { rules = #list, mailbox = mailbox })
  elseif req.method == "DELETE" then
    f:clear(mailbox, mailbox == nil)
    return reply(req, 200, { cleared = mailbox or "all" })
  end
  return fail(req, 405, "method not allowed")
end

function API:mailboxes(req)
  local out = array()
  for _, m in ipairs(self.store:mailboxes()) do out[#out + 1] = m end
  return reply(req, 200, { mailboxes = out })
end

function API:info(req)
  local waits = 0
  for _, w in ipairs(self.store.waiters) do
    if not w.req.closed then waits = waits + 1 end
  end
  local streams = 0
  for _, sub in ipairs(self.subscribers) do
    if not sub.req.closed then streams = streams + 1 end
  end
  return reply(req, 200, {
    waits = waits,
    event_streams = streams,
    version = self.kurir.version,
    messages = #self.store.list,
    bytes = self.store.bytes,
    max_messages = self.store.max_messages,
    max_bytes = self.store.max_bytes,
    maildir = self.store.dir,
  })
end

function API:handle(req)
  local path, method = req.path, req.method
  if path == "/" or path == "/index.html" then
    if method ~= "GET" and method ~= "HEAD" then return fail(req, 405, "method not allowed") end
    return serve_static(self, req, "index.html")
  end
  local asset = path:match("^/ui/(.*)$")
  if asset then return serve_static(self, req, asset) end
  local rest = path:match("^/api/v1(/.*)$")
  if not rest then return fail(req, 404, "not found") end

  if rest == "/messages" then
    if method == "GET" then return self:list(req) end
    if method == "DELETE" then return self:delete_many(req) end
    return fail(req, 405, "method not allowed")
  elseif rest == "/wait" then
    if method ~= "GET" then return fail(req, 405, "method not allowed") end
    return self:wait(req)
  elseif rest == "/events" then
    if method ~= "GET" then return fail(req, 405, "method not allowed") end
    return self:events(req)
  elseif rest == "/mailboxes" then
    return self:mailboxes(req)
  elseif rest == "/info" then
    return self:info(req)
  elseif rest == "/faults" and self.faults then
    return self:faults_api(req)
  end

  local id, sub = rest:match("^/messages/([^/]+)(.*)$")
  if not id then return fail(req, 404, "not found") end
  -- ids are looked up in the index, never used as file names
  local e = self.store:get(id)
  if not e then return fail(req, 404, "no message " .. id) end
  if sub == "" then
    if method == "GET" then return self:message(req, e) end
    if method == "DELETE" then
      self.store:delete(e)
      return reply(req, 200, { deleted = 1 })
    end
    return fail(req, 405, "method not allowed")
  elseif sub == "/raw" then
    return self:raw(req, e)
  elseif sub == "/read" then
    if method == "PUT" or method == "POST" or method == "DELETE" then return self:set_read(req, e) end
    return fail(req, 405, "method not allowed")
  end
  local n = sub:match("^/parts/(%d+)$")
  if n then return self:part(req, e, tonumber(n)) end
  return fail(req, 404, "not found")
end

--- Serve the API for store through kurir.http.handle.
-- o = { kurir =, store =, faults = (optional) }
function api.serve(o)
  local self = setmetatable({
    kurir = o.kurir, store = o.store, faults = o.faults,
    subscribers = {}, web = web_root(),
  }, API)
  o.store:on_change(function(kind, e) self:broadcast(kind, e) end)
  o.kurir.http.handle(function(req) return self:handle(req) end)
  return self
end

return api
