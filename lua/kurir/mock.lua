-- kurir.mock: the developer mock server (scripts/mock.lua, and what
-- `kurir` runs with no script). Every sender and recipient is accepted,
-- every message is stored in one Maildir and logged on one line; with
-- --tls any AUTH credentials are accepted and logged (never the secret).

local config = require "kurir.config"

local mock = {}

mock.usage = [[
usage: kurir [-l [smtps://]ADDR:PORT]... scripts/mock.lua [OPTIONS]

A mock mail server for tests: accepts every message and stores it in a
Maildir (new/ holds one file per message).

  --maildir DIR        where to store messages (default ./mail)
  --listen ADDR:PORT   listen there (repeatable; default 127.0.0.1:1025;
                       smtps://ADDR:PORT for implicit TLS); kurir's own -l
                       options replace these
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
  local opts = { maildir = "./mail", tls = false, listen = {}, auth_plaintext = false }
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

  local settings = { listen = opts.listen }
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

  kurir.on.auth = function(s, cred)
    s:log("auth", { user = cred.user, mechanism = cred.mechanism })
    return true
  end

  kurir.on.data = function(s, msg)
    local ok, names = store:deliver(msg)
    if not ok then
      s:log("store_failed", { id = msg.id, error = names })
      -- the detail (paths, local parts) is for the log, not the client
      return 451, "4.3.0 Could not store the message, try again later"
    end
    local files = {}
    for i, name in ipairs(names) do files[i] = dir .. "/" .. name end
    s:log("stored", {
      id = msg.id,
      from = msg.from.address,
      to = recipients(msg),
      subject = msg:header("Subject") or "",
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
