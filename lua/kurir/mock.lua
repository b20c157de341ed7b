-- kurir.mock: the developer mock server (scripts/mock.lua, and what
-- `kurir` runs with no script). Every sender and recipient is accepted,
-- every message is stored in one Maildir and logged on one line (the
-- Subject decoded from RFC 2047 encoded words); with
-- --tls any AUTH credentials are accepted and logged (never the secret).
-- The Maildir is also the store behind the HTTP API and web UI
-- (kurir.mockstore, kurir.mockapi) served on 127.0.0.1:8025 by default.

local config = require "kurir.config"
local mockstore = require "kurir.mockstore"
local mockapi = require "kurir.mockapi"
local faults = require "kurir.faults"

local mock = {}

mock.usage = [[
usage: kurir [-l [smtps://|http://]ADDR:PORT]... scripts/mock.lua [OPTIONS]

A mock mail server for tests: accepts every message and stores it in a
Maildir (new/ holds one file per message, cur/ the ones marked read), with
a web UI and JSON API (docs/api.md) on http://127.0.0.1:8025.

  --maildir DIR        where to store messages (default ./mail; created
                       with cur/ new/ tmp/ at start)
  --listen ADDR:PORT   listen there (repeatable; default 127.0.0.1:1025;
                       smtps://ADDR:PORT for implicit TLS); kurir's own -l
                       options replace these (http:// ones included)
  --http ADDR:PORT     the web UI and HTTP API (default 127.0.0.1:8025;
                       port 0 = any free port); --http off for none
  --max-messages N     keep at most N messages, dropping the oldest
  --max-bytes N        keep at most N bytes of messages, dropping the oldest
  --mailbox-order L    where a message's mailbox comes from, in order
                       (default auth,tag,header): auth = the AUTH user,
                       tag = +tag of the first recipient, header =
                       X-Kurir-Mailbox; else "default"
  --tls                offer STARTTLS (and AUTH) with a self-signed
                       certificate made at start
  --cert FILE          use this certificate instead (implies --tls)
  --key FILE           and this private key
  --auth-plaintext     offer AUTH without TLS too
  --help               this text
]]

local function die(fmt, ...)
  error("mock.lua: " .. string.format(fmt, ...), 0)
end

--- Parse the script arguments; returns the options table.
function mock.parse(arg)
  local opts = {
    maildir = "./mail", tls = false, listen = {}, auth_plaintext = false,
    http = "127.0.0.1:8025", max_messages = 0, max_bytes = 0, mailbox_order = { "auth", "tag", "header" },
  }
  arg = arg or {}
  local n = #arg
  local i = 1
  local function value(name, inline)
    local v = inline
    if v == nil then
      i = i + 1
      v = arg[i]
    end
    if v == nil or v == "" then die("%s needs a value", name) end
    return v
  end
  while i <= n do
    local a = arg[i]
    local name, inline = a:match("^(%-%-[^=]+)=(.*)$")
    name = name or a
    local function flag()
      if inline then die("%s takes no value", name) end
      return true
    end
    if name == "--help" or name == "-h" then
      opts.help = flag()
    elseif name == "--maildir" then
      opts.maildir = value(name, inline)
    elseif name == "--tls" then
      opts.tls = flag()
    elseif name == "--cert" then
      opts.cert = value(name, inline)
    elseif name == "--key" then
      opts.key = value(name, inline)
    elseif name == "--auth-plaintext" then
      opts.auth_plaintext = flag()
    elseif name == "--http" then
      local v = value(name, inline)
      if v == "off" then
        opts.http = false
      else
        local l, err = config.parse_listen("http://" .. v:gsub("^http://", ""))
        if not l then die("bad --http value '%s': %s", v, err) end
        opts.http = v:gsub("^http://", "")
      end
    elseif name == "--max-messages" or name == "--max-bytes" then
      local v = value(name, inline)
      local num = v:match("^%d+$") and math.tointeger(tonumber(v))
      if not num then die("%s: expected a non-negative integer, got '%s'", name, v) end
      opts[name:sub(3):gsub("%-", "_")] = num
    elseif name == "--mailbox-order" then
      local v = value(name, inline)
      local order = {}
      for part in v:gmatch("[^,]+") do
        if part ~= "auth" and part ~= "tag" and part ~= "header" then
          die("--mailbox-order: unknown source '%s' (auth, tag, header)", part)
        end
        order[#order + 1] = part
      end
      opts.mailbox_order = order
    elseif name == "--listen" then
      local v = value(name, inline)
      local l, err = config.parse_listen(v)
      if not l then die("bad --listen value '%s': %s", v, err) end
      opts.listen[#opts.listen + 1] = v
    elseif name:sub(1, 1) == "-" then
      die("unknown option %s (try --help)", name)
    else
      die("unexpected argument '%s' (try --help)", a)
    end
    i = i + 1
  end
  if (opts.cert == nil) ~= (opts.key == nil) then
    die("--cert and --key go together")
  end
  if opts.cert then opts.tls = true end
  if #opts.listen == 0 then opts.listen = { "127.0.0.1:1025" } end
  return opts
end

-- RFC 2047 encoded words -----------------------------------------------------

local B64 = {}
do
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do B64[alphabet:byte(i)] = i - 1 end
end

local function base64_decode(s)
  s = s:gsub("=+$", "")
  if s:find("[^%w+/]") or #s % 4 == 1 then return nil end
  local out, bits, n = {}, 0, 0
  for i = 1, #s do
    bits = (bits << 6) | B64[s:byte(i)]
    n = n + 6
    if n >= 8 then
      n = n - 8
      out[#out + 1] = string.char((bits >> n) & 0xFF)
    end
  end
  return table.concat(out)
end

local function q_decode(s)
  if s:find("[%s?]") then return nil end
  local bad = false
  local out = s:gsub("_", " "):gsub("=(..)", function(h)
    if not h:match("^%x%x$") then bad = true return "" end
    return string.char(tonumber(h, 16))
  end)
  if bad or out:find("=", 1, true) then return nil end
  return out
end

-- Bytes in charset -> UTF-8, or nil when the charset is not known.
local function to_utf8(bytes, charset)
  charset = charset:lower():gsub("%*.*$", "")   -- RFC 2231 language suffix
  if charset == "utf-8" or charset == "utf8" or charset == "us-ascii" then
    if not utf8.len(bytes) then return nil end
    if charset == "us-ascii" and bytes:find("[\128-\255]") then return nil end
    return bytes
  elseif charset == "iso-8859-1" or charset == "latin1" or charset == "iso_8859-1" then
    return (bytes:gsub("[\128-\255]", function(c) return utf8.char(c:byte()) end))
  end
  return nil
end

local function decode_word(charset, enc, text)
  local bytes
  enc = enc:upper()
  if enc == "B" then bytes = base64_decode(text) elseif enc == "Q" then bytes = q_decode(text) end
  return bytes and to_utf8(bytes, charset)
end

--- Decode the RFC 2047 encoded words of a header value (charsets UTF-8,
-- US-ASCII, ISO-8859-1; B and Q). Whitespace between two encoded words
-- goes; a word that cannot be decoded stays as it is.
function mock.decode_header(value)
  local out, pos, last_decoded = {}, 1, false
  while true do
    local s, e, charset, enc, text = value:find("=%?([^?%s]+)%?([BbQq])%?([^?%s]*)%?=", pos)
    if not s then break end
    local between = value:sub(pos, s - 1)
    local decoded = decode_word(charset, enc, text)
    if not (decoded and last_decoded and between:match("^%s*$")) then out[#out + 1] = between end
    out[#out + 1] = decoded or value:sub(s, e)
    last_decoded = decoded ~= nil
    pos = e + 1
  end
  out[#out + 1] = value:sub(pos)
  return table.concat(out)
end

local function recipients(msg)
  local list = {}
  for i, r in ipairs(msg.rcpts) do list[i] = r.address end
  return table.concat(list, ",")
end

--- Configure kurir as the mock server from the script arguments.
function mock.setup(kurir, arg)
  local opts = mock.parse(arg)
  if opts.help then
    io.stdout:write(mock.usage)
    io.stdout:flush()
    os.exit(0)
  end

  local listen = { table.unpack(opts.listen) }
  if opts.http then listen[#listen + 1] = "http://" .. opts.http end
  -- one process: the mock's messages, its store index and logs stay in one place
  local settings = { listen = listen, workers = 1 }
  if opts.tls then
    if opts.cert then
      settings.tls = { cert = opts.cert, key = opts.key }
    else
      settings.tls = { self_signed = true }
    end
  end
  settings.auth = { plaintext = opts.auth_plaintext }
  kurir.configure(settings)

  local dir = opts.maildir
  local store = kurir.maildir(dir)
  -- Created now, so that a fixture can list new/ before the first message.
  store:prepare()
  local index = mockstore.new {
    dir = dir, kurir = kurir, max_messages = opts.max_messages, max_bytes = opts.max_bytes,
  }
  index:load()
  -- scripted faults: opts.faults:add{...} in a script, PUT /api/v1/faults at run time
  opts.faults = faults.new(kurir)
  mockapi.serve { kurir = kurir, store = index, faults = opts.faults }
  for _, stage in ipairs { "connect", "helo", "mail", "rcpt" } do
    kurir.on[stage] = function(s, x) return opts.faults:check(stage, s, x) end
  end

  kurir.on.auth = function(s, cred)
    s:log("auth", { user = cred.user, mechanism = cred.mechanism })
    return true
  end

  kurir.on.data = function(s, msg)
    local fcode, ftext = opts.faults:check("data", s, msg)
    if fcode then return fcode, ftext end
    local mailbox = mockstore.mailbox_of(s, msg, opts.mailbox_order)
    local ok, names = store:deliver(msg)
    if not ok then
      s:log("store_failed", { id = msg.id, error = names })
      -- the detail (paths, local parts) is for the log, not the client
      return kurir.reply("store_failed")
    end
    local files = {}
    for i, name in ipairs(names) do files[i] = dir .. "/" .. name end
    for _, name in ipairs(names) do
      local _, err = index:add_file(name, {
        mailbox = mailbox,
        tls = s.tls and tostring(s.tls.version or "yes") or false,
        auth = s.user or false,
      })
      if err then s:log("index_failed", { id = msg.id, error = err }) end
    end
    s:log("stored", {
      id = msg.id,
      mailbox = mailbox,
      from = msg.from.address,
      to = recipients(msg),
      subject = mock.decode_header(msg:header("Subject") or ""),
      size = msg.size,
      file = table.concat(files, ","),
    })
    return 250, "2.0.0 Ok: queued as " .. msg.id
  end

  if kurir.log then
    kurir.log("mock server: every message is stored in the Maildir " .. dir)
  end
  return opts
end

return mock
