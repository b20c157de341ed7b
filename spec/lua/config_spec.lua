-- kurir.config: defaults, every validation error, merging, -l parsing and
-- error positions.

local config = require "kurir.config"

-- What the engine does: configure is a closure that passes level 2.
local function new_configure()
  local state = config.new()
  return state, function(t) config.merge(state, t, 2) end
end

local function final(t, overrides, hostname)
  local state, configure = new_configure()
  if t then configure(t) end
  return config.finalize(state, overrides, hostname)
end

local function merge_error(t)
  local _, configure = new_configure()
  local ok, err = pcall(configure, t)
  assert.is_false(ok)
  return err
end

local function finalize_error(...)
  local state, configure = new_configure()
  for _, t in ipairs({ ... }) do configure(t) end
  local ok, err = pcall(config.finalize, state, nil, "h")
  assert.is_false(ok)
  return err
end

describe("kurir.config defaults", function()
  it("fills in every key", function()
    local cfg = final(nil, nil, "mx.test")
    assert.same("mx.test", cfg.hostname)
    assert.same({ { host = "127.0.0.1", port = 2525, tls = false } }, cfg.listen)
    assert.same(os.getenv("TMPDIR") or "/tmp", cfg.spool)
    assert.same({
      line_length = 2048, text_line_length = 0, message_size = 33554432, recipients = 100,
      connections = 1000, connections_per_ip = 50, errors = 10, bare_lf = "reject",
      header_size = 102400,
      bare_cr = "accept", min_data_rate = 500, junk_commands = 100, ipv6_prefix = 64,
      spool_reserve = 16777216,
    }, cfg.limits)
    assert.is_nil(cfg.user)
    assert.is_nil(cfg.group)
    assert.is_false(cfg.run_as_root)
    assert.same({ command = 300, data = 180, handshake = 30, hook = 60, shutdown = 30 }, cfg.timeouts)
    assert.same(1.0, cfg.cpu_budget)
    assert.is_nil(cfg.workers)   -- the engine takes the number of cores
    assert.is_nil(cfg.tls)
    assert.same({ plaintext = false, required = false, mechanisms = { "PLAIN", "LOGIN", "CRAM-MD5" },
                  failure_delay = 1.0 }, cfg.auth)
  end)

  it("gives every hook an error policy, tempfail by default", function()
    local cfg = final()
    local n = 0
    for _, h in ipairs({ "connect", "helo", "starttls", "auth", "mail", "rcpt", "data",
                         "vrfy", "expn", "command", "reset", "disconnect" }) do
      assert.same("tempfail", cfg.on_error[h])
      n = n + 1
    end
    local count = 0
    for _ in pairs(cfg.on_error) do count = count + 1 end
    assert.same(n, count)
  end)

  it("falls back to localhost without a default host name", function()
    assert.same("localhost", final().hostname)
  end)

  it("does not share default tables between results", function()
    local a = final()
    a.listen[1].port = 1
    a.auth.mechanisms[1] = "X"
    local b = final()
    assert.same(2525, b.listen[1].port)
    assert.same("PLAIN", b.auth.mechanisms[1])
  end)
end)

describe("kurir.config values", function()
  it("takes every documented key", function()
    local cfg = final({
      hostname = "mx.example.test",
      listen = { "127.0.0.1:2525", "[::1]:2525", "smtps://127.0.0.1:2465",
                 { host = "::1", port = 2587 }, { host = "localhost", port = 25, tls = true } },
      spool = "/var/tmp",
      limits = { line_length = 512, text_line_length = 998, message_size = 1e6, recipients = 5,
                 connections = 10, connections_per_ip = 2, errors = 3, bare_lf = "accept",
                 bare_cr = "reject", min_data_rate = 0, junk_commands = 7, ipv6_prefix = 48,
                 spool_reserve = 0 },
      timeouts = { command = 10, data = 20, handshake = 5, hook = 0.5, shutdown = 1 },
      cpu_budget = 0.25,
      workers = 4,
      on_error = { default = "reject", rcpt = "continue", data = "tempfail" },
      tls = { cert = "c.pem", key = "k.pem", chain = "ch.pem", ca = "ca.pem", client_cert = "request" },
      auth = { plaintext = true, required = true, mechanisms = { "cram-md5", "PLAIN" }, failure_delay = 0.05 },
    }, nil, "ignored")
    assert.same("mx.example.test", cfg.hostname)
    assert.same({
      { host = "127.0.0.1", port = 2525, tls = false },
      { host = "::1", port = 2525, tls = false },
      { host = "127.0.0.1", port = 2465, tls = true },
      { host = "::1", port = 2587, tls = false },
      { host = "127.0.0.1", port = 25, tls = true },
    }, cfg.listen)
    assert.same("/var/tmp", cfg.spool)
    assert.same(1000000, cfg.limits.message_size)
    assert.same("integer", math.type(cfg.limits.message_size))
    assert.same(998, cfg.limits.text_line_length)
    assert.same("accept", cfg.limits.bare_lf)
    assert.same("reject", cfg.limits.bare_cr)
    assert.same(0, cfg.limits.min_data_rate)
    assert.same(7, cfg.limits.junk_commands)
    assert.same(48, cfg.limits.ipv6_prefix)
    assert.same(0, cfg.limits.spool_reserve)
    assert.same(0.5, cfg.timeouts.hook)
    assert.same(0.25, cfg.cpu_budget)
    assert.same(4, cfg.workers)
    assert.same("continue", cfg.on_error.rcpt)
    assert.same("tempfail", cfg.on_error.data)
    assert.same("reject", cfg.on_error.connect)
    assert.is_nil(cfg.on_error.default)
    assert.same({ cert = "c.pem", key = "k.pem", chain = "ch.pem", ca = "ca.pem",
                  self_signed = false, client_cert = 1 }, cfg.tls)
    assert.same({ plaintext = true, required = true, mechanisms = { "CRAM-MD5", "PLAIN" }, failure_delay = 0.05 },
      cfg.auth)
  end)

  it("accepts a single listen string and an on_error string", function()
    local cfg = final({ listen = "[::]:25", on_error = "continue" })
    assert.same({ { host = "::", port = 25, tls = false } }, cfg.listen)
    assert.same("continue", cfg.on_error.mail)
  end)

  it("maps client_cert names to 0, 1, 2", function()
    for name, n in pairs({ none = 0, request = 1, require = 2 }) do
      local cfg = final({ tls = { self_signed = true, client_cert = name } })
      assert.same(n, cfg.tls.client_cert)
    end
    assert.same(0, final({ tls = { self_signed = true } }).tls.client_cert)
  end)

  it("takes a self-signed certificate without files", function()
    local cfg = final({ tls = { self_signed = true }, listen = { "smtps://127.0.0.1:1465" } })
    assert.is_true(cfg.tls.self_signed)
    assert.is_nil(cfg.tls.cert)
  end)

  it("keeps a copy, not the script's tables", function()
    local state, configure = new_configure()
    local limits = { recipients = 7 }
    local listen = { "127.0.0.1:1" }
    configure({ limits = limits, listen = listen })
    limits.recipients = 8
    listen[1] = "127.0.0.1:2"
    local cfg = config.finalize(state)
    assert.same(7, cfg.limits.recipients)
    assert.same(1, cfg.listen[1].port)
  end)
end)

describe("kurir.config dns", function()
  it("defaults to resolv.conf, 5 s and 2 tries", function()
    assert.same({ timeout = 5, tries = 2 }, final().dns)
    assert.is_nil(final().dns.servers)
  end)

  it("normalises servers to ADDR:PORT and [IPv6]:PORT, port 53 by default", function()
    local cfg = final { dns = { servers = { "127.0.0.1:5353", "[::1]:53", "192.0.2.1", "::1", "[2001:db8::2]",
                                            "localhost:54" }, timeout = 0.5, tries = 3 } }
    assert.same({
      servers = { "127.0.0.1:5353", "[::1]:53", "192.0.2.1:53", "[::1]:53", "[2001:db8::2]:53", "127.0.0.1:54" },
      timeout = 0.5, tries = 3,
    }, cfg.dns)
  end)

  it("takes a single server string", function()
    assert.same({ "192.0.2.53:53" }, final({ dns = { servers = "192.0.2.53" } }).dns.servers)
    -- localhost means 127.0.0.1, as in listen (docs/configuration.md)
    assert.same({ "127.0.0.1:5353", "127.0.0.1:53" },
      final({ dns = { servers = { "localhost:5353", "localhost" } } }).dns.servers)
  end)

  it("merges dns keys across calls", function()
    local state, configure = new_configure()
    configure { dns = { servers = { "127.0.0.1:5353" } } }
    configure { dns = { timeout = 1 } }
    local cfg = config.finalize(state, nil, "h")
    assert.same({ servers = { "127.0.0.1:5353" }, timeout = 1, tries = 2 }, cfg.dns)
  end)

  it("keeps a copy of the server list", function()
    local state, configure = new_configure()
    configure { dns = { servers = { "127.0.0.1:5353" } } }
    local a = config.finalize(state, nil, "h")
    a.dns.servers[1] = "changed"
    assert.same({ "127.0.0.1:5353" }, config.finalize(state, nil, "h").dns.servers)
  end)
end)

describe("kurir.config validation", function()
  local cases = {
    { { foo = 1 }, "unknown configuration key 'foo'" },
    { { "x" }, "unknown configuration key '[1]'" },
    { { limits = { foo = 1 } }, "unknown configuration key 'limits.foo'" },
    { { timeouts = { idle = 1 } }, "unknown configuration key 'timeouts.idle'" },
    { { tls = { certificate = "x" } }, "unknown configuration key 'tls.certificate'" },
    { { auth = { mechanism = {} } }, "unknown configuration key 'auth.mechanism'" },
    { { on_error = { rcp = "reject" } }, "unknown configuration key 'on_error.rcp'" },
    { { listen = { { host = "127.0.0.1", port = 1, ssl = true } } },
      "unknown configuration key 'listen[1].ssl'" },
    { { listen = { "127.0.0.1:1", x = "127.0.0.1:2" } }, "unknown configuration key 'listen.x'" },
    { { auth = { mechanisms = { "PLAIN", n = 1 } } }, "unknown configuration key 'auth.mechanisms.n'" },
    { { hostname = 1 }, "hostname: expected a non-empty string, got 1" },
    { { hostname = "" }, 'hostname: expected a non-empty string, got ""' },
    { { hostname = "mx example" }, 'hostname: expected a host name without spaces or control characters' },
    { { spool = false }, "spool: expected a non-empty string, got false" },
    { { limits = 5 }, "limits: expected a table, got 5" },
    { { limits = { message_size = -1 } }, "limits.message_size: expected a positive integer, got -1" },
    { { limits = { message_size = 0 } }, "limits.message_size: expected a positive integer, got 0" },
    { { limits = { message_size = 1.5 } }, "limits.message_size: expected a positive integer, got 1.5" },
    { { limits = { message_size = "1M" } }, 'limits.message_size: expected a positive integer, got "1M"' },
    { { limits = { line_length = 511 } },
      "limits.line_length: expected an integer >= 512 (RFC 5321 minimum), got 511" },
    { { limits = { text_line_length = -1 } },
      "limits.text_line_length: expected an integer >= 0 (0 = unlimited), got -1" },
    { { limits = { recipients = 0 } }, "limits.recipients: expected a positive integer, got 0" },
    { { limits = { connections = {} } }, "limits.connections: expected a positive integer, got table" },
    { { limits = { connections_per_ip = -5 } },
      "limits.connections_per_ip: expected a positive integer, got -5" },
    { { limits = { errors = 2 ^ 40 } }, "limits.errors: expected a positive integer" },
    { { limits = { bare_lf = "fix" } }, 'limits.bare_lf: expected one of "reject", "accept", got "fix"' },
    { { limits = { bare_cr = true } }, 'limits.bare_cr: expected one of "reject", "accept", got true' },
    { { limits = { min_data_rate = -1 } },
      "limits.min_data_rate: expected bytes per second, an integer >= 0 (0 = no rate deadline), got -1" },
    { { limits = { junk_commands = 1.5 } }, "limits.junk_commands: expected an integer >= 0 (0 = unlimited), got 1.5" },
    { { limits = { ipv6_prefix = 129 } }, "limits.ipv6_prefix: expected a prefix length 1-128, got 129" },
    { { limits = { spool_reserve = "1G" } },
      'limits.spool_reserve: expected bytes, an integer >= 0 (0 = no check), got "1G"' },
    { { auth = { failure_delay = -0.5 } }, "auth.failure_delay: expected seconds between 0 and 60, got -0.5" },
    { { timeouts = { command = 0 } }, "timeouts.command: expected a positive number, got 0" },
    { { timeouts = { data = -1 } }, "timeouts.data: expected a positive number, got -1" },
    { { timeouts = { hook = "5" } }, 'timeouts.hook: expected a positive number, got "5"' },
    { { timeouts = { shutdown = math.huge } }, "timeouts.shutdown: expected a positive number, got inf" },
    { { timeouts = { handshake = 0 / 0 } }, "timeouts.handshake: expected a positive number" },
    { { cpu_budget = 0 }, "cpu_budget: expected a positive number, got 0" },
    { { workers = 0 }, "workers: expected an integer from 1 to 64, got 0" },
    { { workers = 65 }, "workers: expected an integer from 1 to 64, got 65" },
    { { workers = 1.5 }, "workers: expected an integer from 1 to 64, got 1.5" },
    { { on_error = { default = "ignore" } },
      'on_error.default: expected one of "tempfail", "reject", "continue", got "ignore"' },
    { { on_error = 3 }, "on_error: expected a table, got 3" },
    { { tls = { cert = 1 } }, "tls.cert: expected a non-empty string, got 1" },
    { { tls = { self_signed = "yes" } }, 'tls.self_signed: expected true or false, got "yes"' },
    { { tls = { client_cert = "optional" } },
      'tls.client_cert: expected one of "none", "request", "require", got "optional"' },
    { { auth = { plaintext = 1 } }, "auth.plaintext: expected true or false, got 1" },
    { { auth = { required = "no" } }, 'auth.required: expected true or false, got "no"' },
    { { auth = { mechanisms = "PLAIN" } }, 'auth.mechanisms: expected a table, got "PLAIN"' },
    { { auth = { mechanisms = {} } }, "auth.mechanisms: expected a non-empty list of PLAIN, LOGIN, CRAM-MD5" },
    { { auth = { mechanisms = { "PLAIN", "DIGEST-MD5" } } },
      'auth.mechanisms[2]: expected PLAIN, LOGIN or CRAM-MD5, got "DIGEST-MD5"' },
    { { auth = { mechanisms = { "PLAIN", "plain" } } }, "auth.mechanisms: PLAIN is listed twice" },
    { { listen = {} }, "listen: expected at least one address" },
    { { listen = 25 }, "listen: expected a table, got 25" },
    { { listen = { "127.0.0.1:65536" } }, "listen[1]: bad port '65536' (0-65535; 0 = any free port)" },
    { { listen = { "127.0.0.1:25", "example.test:25" } }, "listen[2]: bad address 'example.test'" },
    { { listen = { { host = "example.test", port = 25 } } },
      'listen[1].host: expected an IPv4 or IPv6 address or localhost, got "example.test"' },
    { { listen = { { host = "127.0.0.1", port = 70000 } } },
      "listen[1].port: expected a port number 0-65535 (0 = any free port), got 70000" },
    { { listen = { { host = "127.0.0.1", port = "25" } } },
      'listen[1].port: expected a port number 0-65535 (0 = any free port), got "25"' },
    { { listen = { { host = "127.0.0.1", port = 25, tls = "yes" } } },
      'listen[1].tls: expected true or false, got "yes"' },
    { { listen = { true } }, "listen[1]: expected \"ADDR:PORT\" or { host = ..., port = ... }, got true" },
    { { dns = 1 }, "dns: expected a table, got 1" },
    { { dns = { server = {} } }, "unknown configuration key 'dns.server'" },
    { { dns = { servers = {} } }, "dns.servers: expected at least one server" },
    { { dns = { servers = { "127.0.0.1", x = "::1" } } }, "unknown configuration key 'dns.servers.x'" },
    { { dns = { servers = { 53 } } }, 'dns.servers[1]: expected "ADDR" or "ADDR:PORT", got 53' },
    { { dns = { servers = { "127.0.0.1", "dns.example" } } },
      'dns.servers[2]: bad address "dns.example" (an IPv4 literal or [IPv6], with an optional :PORT)' },
    { { dns = { servers = { "[fe80::zz]:53" } } }, 'dns.servers[1]: bad address "[fe80::zz]:53"' },
    { { dns = { servers = { "127.0.0.1:0" } } }, 'dns.servers[1]: bad port in "127.0.0.1:0" (1-65535)' },
    { { dns = { servers = { "[::1]:x" } } }, 'dns.servers[1]: bad port in "[::1]:x"' },
    { { dns = { timeout = 0 } }, "dns.timeout: expected a positive number, got 0" },
    { { dns = { timeout = "5" } }, 'dns.timeout: expected a positive number, got "5"' },
    { { dns = { timeout = 1e-4 } }, "dns.timeout: expected seconds between 0.001 and 3600" },
    { { dns = { timeout = 7200 } }, "dns.timeout: expected seconds between 0.001 and 3600, got 7200" },
    { { dns = { tries = 0 } }, "dns.tries: expected an integer 1-100, got 0" },
    { { dns = { tries = 1.5 } }, "dns.tries: expected an integer 1-100, got 1.5" },
  }

  for _, case in ipairs(cases) do
    local t, expected = case[1], case[2]
    it("rejects with: " .. expected, function()
      local err = merge_error(t)
      assert.is_string(err)
      assert.truthy(err:find(expected, 1, true), "got: " .. err)
    end)
  end

  it("rejects a non-table argument", function()
    assert.truthy(merge_error("x"):find("kurir.configure: expected a table, got \"x\"", 1, true))
  end)

  it("applies nothing from a table that fails", function()
    local state, configure = new_configure()
    assert.is_false(pcall(configure, { hostname = "a.test", limits = { recipients = 0 } }))
    assert.same("h", config.finalize(state, nil, "h").hostname)
  end)

  it("needs cert and key unless self-signed", function()
    assert.truthy(finalize_error({ tls = { cert = "c.pem" } })
      :find("tls: needs both cert and key (or self_signed = true)", 1, true))
    assert.truthy(finalize_error({ tls = { key = "k.pem" } }):find("tls: needs both cert and key", 1, true))
    assert.truthy(finalize_error({ tls = { client_cert = "require" } })
      :find("tls: needs both cert and key", 1, true))
  end)

  it("refuses self_signed together with cert/key", function()
    assert.truthy(finalize_error({ tls = { self_signed = true, cert = "c.pem", key = "k.pem" } })
      :find("tls: self_signed = true cannot be combined with cert/key", 1, true))
  end)

  it("refuses an implicit TLS listener without tls, naming the configure line", function()
    local state = config.new()
    local kurir = { configure = function(t) config.merge(state, t, 2) end }
    load("local kurir = ...\nkurir.configure { hostname = 'a' }\n" ..
      "kurir.configure { listen = { '127.0.0.1:25', 'smtps://[::1]:465' } }\n", "@script.lua")(kurir)
    local ok, err = pcall(config.finalize, state)
    assert.is_false(ok)
    assert.same("script.lua:3: listen: smtps://[::1]:465 is implicit TLS but no tls is configured" ..
      " (tls = { cert = ..., key = ... } or { self_signed = true })", err)
  end)

  it("refuses auth.required when no client could authenticate", function()
    assert.truthy(finalize_error({ auth = { required = true } }):find("auth.required: no client could", 1, true))
    assert.is_true(final({ auth = { required = true, plaintext = true } }).auth.required)
    assert.is_true(final({ auth = { required = true }, tls = { self_signed = true } }).auth.required)
  end)

  it("takes tls.required as a boolean, absent (false) when not given", function()
    assert.is_true(final({ tls = { self_signed = true, required = true } }).tls.required)
    assert.is_nil(final({ tls = { self_signed = true } }).tls.required)
    assert.truthy(merge_error({ tls = { self_signed = true, required = "yes" } }):find("tls.required", 1, true))
  end)
end)

describe("kurir.config merging", function()
  it("merges section keys across calls, later wins", function()
    local state, configure = new_configure()
    configure({ limits = { recipients = 5, errors = 3 }, timeouts = { command = 10 }, hostname = "a.test" })
    configure({ limits = { recipients = 6 }, hostname = "b.test" })
    local cfg = config.finalize(state)
    assert.same(6, cfg.limits.recipients)
    assert.same(3, cfg.limits.errors)
    assert.same(10, cfg.timeouts.command)
    assert.same(180, cfg.timeouts.data)
    assert.same("b.test", cfg.hostname)
  end)

  it("replaces listen as a whole", function()
    local state, configure = new_configure()
    configure({ listen = { "127.0.0.1:1", "127.0.0.1:2" } })
    configure({ listen = { "127.0.0.1:3" } })
    assert.same({ { host = "127.0.0.1", port = 3, tls = false } }, config.finalize(state).listen)
  end)

  it("replaces the mechanism list as a whole", function()
    local state, configure = new_configure()
    configure({ auth = { mechanisms = { "PLAIN", "LOGIN" }, plaintext = true } })
    configure({ auth = { mechanisms = { "CRAM-MD5" } } })
    assert.same({ plaintext = true, required = false, mechanisms = { "CRAM-MD5" }, failure_delay = 1.0 },
      config.finalize(state).auth)
  end)

  it("merges on_error default and per-hook entries from separate calls", function()
    local state, configure = new_configure()
    configure({ on_error = { rcpt = "continue" } })
    configure({ on_error = { default = "reject" } })
    local cfg = config.finalize(state)
    assert.same("continue", cfg.on_error.rcpt)
    assert.same("reject", cfg.on_error.data)
  end)

  it("lets -l overrides replace the script's listeners", function()
    local cfg = final({ listen = { "127.0.0.1:1" }, tls = { self_signed = true } },
      { listen = { "127.0.0.1:2525", "smtps://[::1]:2465" } })
    assert.same(2, #cfg.listen)
    assert.same({ host = "127.0.0.1", port = 2525, tls = false }, cfg.listen[1])
    assert.same({ host = "::1", port = 2465, tls = true }, cfg.listen[2])
  end)

  it("accepts parsed tables as overrides too", function()
    local cfg = final(nil, { listen = { config.parse_listen("localhost:2600") } })
    assert.same({ { host = "127.0.0.1", port = 2600, tls = false } }, cfg.listen)
  end)

  it("checks -l overrides against tls", function()
    local state = config.new()
    local ok, err = pcall(config.finalize, state, { listen = { "smtps://127.0.0.1:465" } })
    assert.is_false(ok)
    assert.same("listen: smtps://127.0.0.1:465 is implicit TLS but no tls is configured" ..
      " (tls = { cert = ..., key = ... } or { self_signed = true })", err)
  end)

  it("keeps the script's listeners when overrides has none", function()
    assert.same(1, final({ listen = { "127.0.0.1:1" } }, {}).listen[1].port)
  end)
end)

describe("kurir.config error position", function()
  it("points at the script line that called configure", function()
    local _, configure = new_configure()
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() configure({ limits = { foo = 1 } }) end)
    assert.is_false(ok)
    assert.same("spec/lua/config_spec.lua:" .. line .. ": unknown configuration key 'limits.foo'", err)
  end)

  it("counts the level from merge's caller", function()
    local state = config.new()
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() config.merge(state, { cpu_budget = -1 }, 1) end)
    assert.is_false(ok)
    assert.same("spec/lua/config_spec.lua:" .. line .. ": cpu_budget: expected a positive number, got -1", err)
  end)

  it("starts a script's message with its chunk name and line", function()
    local state = config.new()
    local kurir = { configure = function(t) config.merge(state, t, 2) end }
    local chunk = load("local kurir = ...\n\nkurir.configure { hostname = 42 }\n", "@script.lua")
    local ok, err = pcall(chunk, kurir)
    assert.is_false(ok)
    assert.same("script.lua:3: hostname: expected a non-empty string, got 42", err)
  end)

  it("names the line where tls was set in a finalize error", function()
    local state = config.new()
    local kurir = { configure = function(t) config.merge(state, t, 2) end }
    local chunk = load("local kurir = ...\nkurir.configure { listen = '127.0.0.1:1' }\n" ..
      "kurir.configure {\n  tls = { cert = 'c.pem' } }\n", "@script.lua")
    chunk(kurir)
    local ok, err = pcall(config.finalize, state)
    assert.is_false(ok)
    assert.same("script.lua:3: tls: needs both cert and key (or self_signed = true)", err)
  end)
end)

describe("kurir.config.parse_listen", function()
  local good = {
    { "127.0.0.1:2525", "127.0.0.1", 2525, false },
    { "0.0.0.0:25", "0.0.0.0", 25, false },
    { "255.255.255.255:65535", "255.255.255.255", 65535, false },
    { "localhost:1", "127.0.0.1", 1, false },
    { "[::1]:2525", "::1", 2525, false },
    { "[::]:25", "::", 25, false },
    { "[fe80::1:2]:25", "fe80::1:2", 25, false },
    { "[1:2:3:4:5:6:7:8]:25", "1:2:3:4:5:6:7:8", 25, false },
    { "[::ffff:192.0.2.1]:25", "::ffff:192.0.2.1", 25, false },
    { "[2001:db8::]:25", "2001:db8::", 25, false },
    { "smtps://127.0.0.1:465", "127.0.0.1", 465, true },
    { "smtps://[::1]:465", "::1", 465, true },
    { "SMTPS://localhost:465", "127.0.0.1", 465, true },
    { "smtp://127.0.0.1:25", "127.0.0.1", 25, false },
    { "127.0.0.1:0", "127.0.0.1", 0, false },
    { "[::1]:0", "::1", 0, false },
    { "smtps://localhost:0", "127.0.0.1", 0, true },
  }
  for _, g in ipairs(good) do
    it("parses " .. g[1], function()
      assert.same({ host = g[2], port = g[3], tls = g[4] }, config.parse_listen(g[1]))
    end)
  end

  it("parses http:// listeners, port 0 included", function()
    assert.same({ host = "127.0.0.1", port = 8025, tls = false, http = true },
      config.parse_listen("http://127.0.0.1:8025"))
    assert.same({ host = "::1", port = 0, tls = false, http = true }, config.parse_listen("HTTP://[::1]:0"))
  end)

  local bad = {
    { "127.0.0.1", "missing port in '127.0.0.1'" },
    { "127.0.0.1:", "bad port ''" },
    { "127.0.0.1:65536", "bad port '65536'" },
    { "127.0.0.1:99999999", "bad port '99999999'" },
    { "127.0.0.1:-1", "bad port '-1'" },
    { "127.0.0.1:25x", "bad port '25x'" },
    { "*:25", "bad address '*'" },
    { "example.test:25", "bad address 'example.test'" },
    { ":25", "bad address ''" },
    { "1.2.3:25", "bad address '1.2.3'" },
    { "1.2.3.256:25", "bad address '1.2.3.256'" },
    { "01.2.3.4:25", "bad address '01.2.3.4'" },
    { "::1:25", "IPv6 addresses need brackets" },
    { "[::1]", "bad address '[::1]' (expected [IPv6]:PORT)" },
    { "[::1]25", "bad address '[::1]25'" },
    { "[127.0.0.1]:25", "bad IPv6 address '127.0.0.1'" },
    { "[1::2::3]:25", "bad IPv6 address '1::2::3'" },
    { "[1:2:3:4:5:6:7:8:9]:25", "bad IPv6 address" },
    { "[1:2:3:4:5:6:7]:25", "bad IPv6 address" },
    { "[12345::]:25", "bad IPv6 address" },
    { "[fe80::1%eth0]:25", "bad IPv6 address" },
    { "ftp://127.0.0.1:80", "unknown scheme 'ftp://'" },
    { "", "missing port in ''" },
  }
  for _, b in ipairs(bad) do
    it("refuses " .. (b[1] == "" and "the empty string" or b[1]), function()
      local l, err = config.parse_listen(b[1])
      assert.is_nil(l)
      assert.truthy(err:find(b[2], 1, true), "got: " .. tostring(err))
    end)
  end

  it("refuses a non-string", function()
    local l, err = config.parse_listen(25)
    assert.is_nil(l)
    assert.same("expected a string, got 25", err)
  end)
end)
