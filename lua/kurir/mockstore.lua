-- kurir.mockstore: the mock server's message store. The Maildir is the
-- store: one file per message in new/ (unread) or cur/ (read, the Maildir
-- ":2,S" flag), so that mail survives a restart and any Maildir reader can
-- open it. In memory sits an index rebuilt from the files at start; each
-- entry holds what the API lists and searches (ids, mailbox, envelope,
-- decoded headers, size, time, attachment count, TLS and AUTH facts).
-- Facts that only the session knew (mailbox, TLS version, AUTH user) are
-- appended to DIR/.kurir-meta, one line per message, and read back at
-- start; without that line the mailbox is worked out again from the file
-- (+tag of the first Delivered-To, X-Kurir-Mailbox, "default").
--
-- Besides the index the store keeps the open wait-for-message requests
-- (answered from add(), in the same loop turn as the 250) and the event
-- subscribers (Server-Sent Events), both as kurir.http_request objects.

local query = require "kurir.mockquery"

local store = {}

local Store = {}
Store.__index = Store

local SEARCH_TEXT_MAX = 64 * 1024

--- store.new{ dir =, kurir =, max_messages =, max_bytes = }
function store.new(o)
  assert(type(o.dir) == "string", "mockstore.new: dir")
  return setmetatable({
    dir = o.dir,
    kurir = o.kurir,
    max_messages = o.max_messages or 0,   -- 0 = no cap
    max_bytes = o.max_bytes or 0,
    list = {},                            -- oldest first
    by_id = {},
    bytes = 0,
    waiters = {},
    prune_at = 1024,
    subscribers = {},
    listeners = {},                       -- Lua functions(event, entry)
  }, Store)
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

-- "1700000000.M123456P42R0a1b2c3d.host:2,S" -> id, received, flags
local function parse_name(name)
  local base, info = name:match("^([^:]+):?(.*)$")
  if not base then return nil end
  local secs, usec = base:match("^(%d+)%.M(%d+)")
  local id = base:match("^([^%.]+%.[^%.]+)")
  if not secs or not id or not id:match("^[%w%.]+$") then return nil end
  local flags = info:match("^2,(%a*)$") or ""
  return id, tonumber(secs) + tonumber(usec) / 1e6, flags
end

local function first_header(parsed, name)
  local lname = name:lower()
  for _, h in ipairs(parsed.headers or {}) do
    if h.name:lower() == lname then return h.value end
  end
end

local function all_headers(parsed, name)
  local out, lname = {}, name:lower()
  for _, h in ipairs(parsed.headers or {}) do
    if h.name:lower() == lname then out[#out + 1] = h.value end
  end
  return out
end

-- .kurir-meta lines: id TAB mailbox TAB tls TAB auth ("-" for none)
local function clean(v)
  if not v or v == false then return "-" end
  v = tostring(v):gsub("[%c]", "_")
  return v == "" and "-" or v
end

local function meta_line(id, m)
  return table.concat({ id, clean(m.mailbox), clean(m.tls), clean(m.auth) }, "\t") .. "\n"
end

local function read_meta(path)
  local meta = {}
  local f = io.open(path, "rb")
  if not f then return meta end
  for line in f:lines() do
    local id, mailbox, tls, auth = line:match("^([^\t]+)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
    if id then
      meta[id] = {
        mailbox = mailbox ~= "-" and mailbox or nil,
        tls = tls ~= "-" and tls or false,
        auth = auth ~= "-" and auth or false,
      }
    end
  end
  f:close()
  return meta
end

-- An index entry from the stored bytes.
function Store:entry_from(raw, file, id, received, flags, meta)
  local parsed = self.kurir.mime(raw) or { headers = {}, parts = {} }
  if not parsed.headers then parsed = { headers = {}, parts = {} } end
  local from = (first_header(parsed, "Return-Path") or ""):match("^%s*<?(.-)>?%s*$") or ""
  local to = {}
  for _, v in ipairs(all_headers(parsed, "Delivered-To")) do to[#to + 1] = v end
  meta = meta or {}
  local mailbox = meta.mailbox
  if not mailbox then
    local tag = to[1] and to[1]:match("^[^@+]*%+([^@]+)@?")
    local hdr = first_header(parsed, "X-Kurir-Mailbox")
    mailbox = tag or (hdr and hdr:match("^%s*(.-)%s*$")) or "default"
    if mailbox == "" then mailbox = "default" end
  end
  local attachments = 0
  for _, p in ipairs(parsed.parts or {}) do
    if p.attachment then attachments = attachments + 1 end
  end
  local e = {
    id = id,
    file = file,
    mailbox = mailbox,
    from = from,
    to = to,
    header_from = parsed.from and parsed.from.display or "",
    header_to = parsed.to and parsed.to.display or "",
    header_cc = parsed.cc and parsed.cc.display or "",
    subject = parsed.subject or "",
    date = parsed.date,
    message_id = parsed.message_id,
    size = #raw,
    received = received,
    attachments = attachments,
    tls = meta.tls or false,
    auth = meta.auth or false,
    read = flags:find("S", 1, true) ~= nil,
  }
  local addrs = {}
  for _, k in ipairs { "from", "to", "cc" } do
    for _, a in ipairs(parsed[k] and parsed[k].addresses or {}) do addrs[#addrs + 1] = a end
  end
  e.search_from = (e.from .. " " .. e.header_from):lower()
  local rcpt_text = table.concat(e.to, " ") .. " " .. e.header_to .. " " .. e.header_cc
  e.search_to = rcpt_text:lower()
  local text = parsed.text or ""
  if #text > SEARCH_TEXT_MAX then text = text:sub(1, SEARCH_TEXT_MAX) end
  e.search_text = table.concat({ e.subject, e.search_from, e.search_to, table.concat(addrs, " "), text }, "\n")
    :lower()
  return e
end

local function by_received(a, b)
  if a.received ~= b.received then return a.received < b.received end
  return a.id < b.id
end

--- Rebuild the index from the Maildir (new/ and cur/).
function Store:load()
  self.list, self.by_id, self.bytes = {}, {}, 0
  local meta = read_meta(self.dir .. "/.kurir-meta")
  for _, sub in ipairs { "new", "cur" } do
    local names = self.kurir.fs.list(self.dir .. "/" .. sub) or {}
    for _, name in ipairs(names) do
      local id, received, flags = parse_name(name)
      if id and not self.by_id[id] then
        local file = sub .. "/" .. name
        local raw = read_file(self.dir .. "/" .. file)
        if raw then
          local e = self:entry_from(raw, file, id, received, flags, meta[id])
          self.list[#self.list + 1] = e
          self.by_id[id] = e
          self.bytes = self.bytes + e.size
        end
      end
    end
  end
  table.sort(self.list, by_received)
  -- rewrite the side file with the messages that are still there
  local lines = {}
  for _, e in ipairs(self.list) do lines[#lines + 1] = meta_line(e.id, e) end
  -- (an empty store has none: the Maildir holds only cur/ new/ tmp/)
  local f = #lines > 0 and io.open(self.dir .. "/.kurir-meta.tmp", "wb")
  if #lines == 0 then os.remove(self.dir .. "/.kurir-meta") end
  if f then
    f:write(table.concat(lines))
    f:close()
    os.rename(self.dir .. "/.kurir-meta.tmp", self.dir .. "/.kurir-meta")
  end
  self:enforce_cap()
end

--- The mailbox of a message (SPEC 5): AUTH user, +tag of the first
-- recipient's local part, X-Kurir-Mailbox header, "default"; `order`
-- names the sources and their order.
function store.mailbox_of(s, msg, order)
  for _, source in ipairs(order or { "auth", "tag", "header" }) do
    local v
    if source == "auth" then
      v = s.user
    elseif source == "tag" then
      local r = msg.rcpts[1]
      v = r and r.user and r.user:match("^[^+]*%+(.+)$")
    elseif source == "header" then
      v = msg:header("X-Kurir-Mailbox")
      v = v and v:match("^%s*(.-)%s*$")
    end
    if v and v ~= "" then
      v = v:gsub("[%c;]", "_")
      if #v > 128 then v = v:sub(1, 128) end
      return v
    end
  end
  return "default"
end

--- Add the file just delivered (Maildir name "new/..."); meta = {
-- mailbox =, tls = version|false, auth = user|false }.
function Store:add_file(file, meta)
  local id, received, flags = parse_name(file:match("[^/]+$"))
  if not id then return nil, "not a Maildir file name: " .. file end
  local raw = read_file(self.dir .. "/" .. file)
  if not raw then return nil, "cannot read " .. file end
  local e = self:entry_from(raw, file, id, received, flags, meta)
  if meta then
    local f = io.open(self.dir .. "/.kurir-meta", "ab")
    if f then
      f:write(meta_line(id, meta))
      f:close()
    end
  end
  self.list[#self.list + 1] = e
  self.by_id[id] = e
  self.bytes = self.bytes + e.size
  self:notify("new", e)
  self:enforce_cap()
  return e
end

function Store:get(id)
  return self.by_id[id]
end

function Store:raw(e)
  return read_file(self.dir .. "/" .. e.file)
end

function Store:enforce_cap()
  while #self.list > 0 and ((self.max_messages > 0 and #self.list > self.max_messages) or
      (self.max_bytes > 0 and self.bytes > self.max_bytes and #self.list > 1)) do
    self:delete(self.list[1])
  end
end

function Store:delete(e)
  if not self.by_id[e.id] then return false end
  os.remove(self.dir .. "/" .. e.file)
  self.by_id[e.id] = nil
  for i, x in ipairs(self.list) do
    if x == e then
      table.remove(self.list, i)
      break
    end
  end
  self.bytes = self.bytes - e.size
  self:notify("deleted", e)
  return true
end

--- Mark read (new/X -> cur/X:2,S) or unread (back to new/).
function Store:set_read(e, read)
  if e.read == read then return true end
  local base = e.file:match("[^/]+$"):match("^([^:]+)")
  local target = read and ("cur/" .. base .. ":2,S") or ("new/" .. base)
  local ok, err = os.rename(self.dir .. "/" .. e.file, self.dir .. "/" .. target)
  if not ok then return nil, err end
  e.file, e.read = target, read
  self:notify("read", e)
  return true
end

--- Entries matching (mailbox, parsed query), newest first.
function Store:select(mailbox, q)
  local out = {}
  for i = #self.list, 1, -1 do
    local e = self.list[i]
    if (not mailbox or e.mailbox == mailbox) and query.match(q, e) then out[#out + 1] = e end
  end
  return out
end

function Store:mailboxes()
  local seen, out = {}, {}
  for _, e in ipairs(self.list) do
    local m = seen[e.mailbox]
    if not m then
      m = { name = e.mailbox, total = 0, unread = 0 }
      seen[e.mailbox] = m
      out[#out + 1] = m
    end
    m.total = m.total + 1
    if not e.read then m.unread = m.unread + 1 end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- Events ---------------------------------------------------------------------

--- fn(kind, entry) is called on "new", "deleted" and "read".
function Store:on_change(fn)
  self.listeners[#self.listeners + 1] = fn
end

function Store:notify(kind, e)
  for _, fn in ipairs(self.listeners) do fn(kind, e) end
  -- waiters: count matches incrementally; answer those that are satisfied.
  -- Waiters with the same filter share one answer body (cache), so that
  -- thousands of them cost one search and one JSON encoding, not
  -- thousands, inside the data hook's CPU budget.
  if kind == "new" or kind == "deleted" then
    local keep, cache = {}, {}
    for _, w in ipairs(self.waiters) do
      if not w.req.closed then
        if (not w.mailbox or e.mailbox == w.mailbox) and query.match(w.query, e) then
          w.have = w.have + (kind == "new" and 1 or -1)
        end
        if w.have >= w.count then
          w.done(w, cache)
        else
          keep[#keep + 1] = w
        end
      end
    end
    self.waiters = keep
  end
end

--- Register a wait: done(w, cache) is called once count matching messages
-- exist (at once if they do already; cache is nil then, else a table
-- shared by the waiters answered in the same turn). Returns true when
-- answered at once.
function Store:wait(req, mailbox, q, count, done)
  local w = { req = req, mailbox = mailbox, query = q, count = count, done = done }
  w.have = #self:select(mailbox, q)
  if w.have >= count then
    done(w)
    return true
  end
  -- waits that ended (timeout, client gone) are dropped here too, so
  -- that a run of timed-out waits without new mail does not pile up
  if #self.waiters >= self.prune_at then
    local keep = {}
    for _, x in ipairs(self.waiters) do
      if not x.req.closed then keep[#keep + 1] = x end
    end
    self.waiters = keep
    self.prune_at = math.max(1024, 2 * #keep)
  end
  self.waiters[#self.waiters + 1] = w
  return false
end

return store
