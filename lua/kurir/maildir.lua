-- kurir.maildir: the Maildir delivery agent behind kurir.maildir "dir".
--
-- maildir.new(template) returns an agent; the template may contain
-- %{user}, %{domain} and %{address}, expanded per recipient. Expanded
-- values cannot escape the directory and two addresses never share one by
-- accident: the encoding is reversible, like a URL's. "%", "/", control
-- characters and a leading "." (so "." and ".." never appear) become %XX
-- (hex), and an empty value becomes "%" alone. deliver() groups the recipients by expanded directory
-- and stores one copy per directory through the engine's
-- msg:store_maildir(dir, prefix) (tmp -> new, fsync'ed), with Return-Path
-- and one Delivered-To line per recipient of that copy, as a local
-- delivery agent adds them.

local maildir = {}

local Agent = { __kurir_route = true }
Agent.__index = Agent
Agent.kind = "maildir"

local FIELDS = { user = true, domain = true, address = true }

local function hex(c)
  return string.format("%%%02X", c:byte())
end

local function safe(v)
  v = tostring(v or "")
  if v == "" then return "%" end
  return (v:gsub("[%%%c/\127]", hex):gsub("^%.", hex))
end

-- Header values come from SMTP command lines, which cannot hold CR or LF;
-- drop them anyway so that no caller can inject header lines.
local function oneline(v)
  return (tostring(v or ""):gsub("[\r\n]", ""))
end

function maildir.new(template)
  if type(template) ~= "string" or template == "" then
    error("kurir.maildir: expected a directory template string, got " .. type(template), 2)
  end
  for name in template:gmatch("%%{([^}]*)}") do
    if not FIELDS[name] then
      error("kurir.maildir: unknown placeholder %{" .. name .. "} in \"" .. template ..
        "\" (%{user}, %{domain}, %{address})", 2)
    end
  end
  -- agent + template: the route as data (a queued recipient stores them)
  return setmetatable({ agent = "maildir", template = template }, Agent)
end

--- The directory for one recipient address table.
function Agent:expand(rcpt)
  local user = rcpt.user or ""
  local domain = (rcpt.domain or ""):lower()
  local values = {
    user = safe(user),
    domain = safe(domain),
    address = safe(domain ~= "" and (user .. "@" .. domain) or user),
  }
  return (self.template:gsub("%%{(%a+)}", values))
end

--- Store msg for rcpts (default msg.rcpts): true, { file names } or nil, err.
function Agent:deliver(msg, rcpts)
  rcpts = rcpts or msg.rcpts
  local dirs, groups = {}, {}
  for _, r in ipairs(rcpts) do
    local dir = self:expand(r)
    local g = groups[dir]
    if not g then
      g = {}
      groups[dir] = g
      dirs[#dirs + 1] = dir
    end
    g[#g + 1] = r
  end
  local from = msg.from and msg.from.address or ""
  local names = {}
  for _, dir in ipairs(dirs) do
    local lines = { "Return-Path: <" .. oneline(from) .. ">\r\n" }
    for _, r in ipairs(groups[dir]) do
      lines[#lines + 1] = "Delivered-To: " .. oneline(r.address) .. "\r\n"
    end
    local name, err = msg:store_maildir(dir, table.concat(lines))
    if not name then
      return nil, dir .. ": " .. tostring(err or "store failed")
    end
    names[#names + 1] = name
  end
  return true, names
end

--- Create the Maildir now (dir, tmp/, new/, cur/, parents too), instead of
-- at the first delivery; only for a template without placeholders.
-- Returns true or raises an error naming the directory.
function Agent:prepare()
  if self.template:find("%{", 1, true) then
    error("kurir.maildir: cannot prepare \"" .. self.template ..
      "\" before delivery: its directory depends on the recipient", 2)
  end
  if not maildir.prepare_dir then
    error("kurir.maildir: prepare() needs the kurir engine", 2)
  end
  local ok, err = maildir.prepare_dir(self.template)
  if not ok then error("kurir.maildir: cannot create " .. tostring(err), 2) end
  return true
end

function Agent:__tostring()
  return "maildir(" .. self.template .. ")"
end

return maildir
