-- End to end: kurir.dns (a, aaaa, addr, mx, txt, ptr) against the test
-- zone of spec/support/dns_server.py on 127.0.0.1: every record type,
-- NXDOMAIN, names without records, timeouts, SERVFAIL/REFUSED, a DNSBL
-- check in the connect hook, one session waiting on DNS while another is
-- served, clients that leave while their hook waits, the hook time limit
-- ending a wait, and misuse.

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"

local HOST = "mx.dns.test"

local SCRIPT = [=[
local kurir = require "kurir"
kurir.configure {
  hostname = "mx.dns.test",
  dns = { servers = { "127.0.0.1:" .. arg[1] }, timeout = tonumber(arg[2]) or 0.5, tries = 1 },
  timeouts = { hook = tonumber(arg[3]) or 60 },
}

local function show(r, err)
  if not r then return "nil " .. tostring(err) end
  local out = {}
  for i, v in ipairs(r) do
    if type(v) == "table" then v = v.preference .. " " .. v.host end
    out[i] = v
  end
  return "{" .. table.concat(out, ",") .. "}"
end

-- DNSBL: 127.0.0.2 is listed in zen.test
function kurir.on.connect(s)
  local a, b, c, d = s.remote_ip:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return end
  local hit = kurir.dns.a(table.concat({ d, c, b, a }, ".") .. ".zen.test")
  if hit and hit[1] then
    local why = kurir.dns.txt(table.concat({ d, c, b, a }, ".") .. ".zen.test")
    return 554, "5.7.1 " .. s.remote_ip .. " listed (" .. hit[1] .. ": " .. tostring(why and why[1]) .. ")"
  end
end

function kurir.on.rcpt(_, rcpt)
  local mx, err = kurir.dns.mx(rcpt.domain)
  return 250, "2.1.5 mx " .. show(mx, err)
end

function kurir.on.command(_, verb, a)
  if verb == "XDNS" then
    local kind, name = a:match("^(%w+) (%S+)$")
    return 250, "2.0.0 " .. kind .. " " .. show(kurir.dns[kind](name))
  elseif verb == "XMISUSE" then
    local cases = {
      number = function() return kurir.dns.a(42) end,
      none = function() return kurir.dns.mx() end,
      nul = function() return kurir.dns.txt("a\0b") end,
      badip = function() return kurir.dns.ptr("not-an-ip") end,
      coroutine = function()
        local co = coroutine.create(function() return kurir.dns.a("a.test") end)
        local ok, e = coroutine.resume(co)
        if not ok then error(e, 0) end
      end,
    }
    local ok, e = pcall(cases[a])
    return 250, "2.0.0 " .. (ok and "no error" or ("raised " .. tostring(e)))
  end
end
]=]

local function start_dns()
  local dir = harness.tmpdir()
  local pf = dir .. "/port"
  os.execute("python3 " .. harness.quote(harness.root .. "/spec/support/dns_server.py") ..
    " --port-file " .. harness.quote(pf) .. " --lifetime " .. (120 * harness.scale) ..
    " </dev/null >/dev/null 2>" .. harness.quote(dir .. "/log") .. " & echo $! > " ..
    harness.quote(dir .. "/pid"))
  local port = harness.wait_for(function()
    local t = harness.read_file(pf)
    return t and tonumber(t:match("%d+"))
  end, 10)
  assert(port, "dns_server.py did not start: " .. tostring(harness.read_file(dir .. "/log")))
  local pid = tonumber(harness.read_file(dir .. "/pid"):match("%d+"))
  return {
    port = port,
    dir = dir,
    log = function() return harness.read_file(dir .. "/log") or "" end,
    stop = function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      harness.wait_for(function() return os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= true end, 5)
      harness.rmtree(dir)
    end,
  }
end

-- How many queries for name the DNS server has received so far.
local function queries(dns, name)
  local n = 0
  for line in dns.log():gmatch("[^\n]+") do
    if line:find("query " .. name .. " ", 1, true) then n = n + 1 end
  end
  return n
end

local function open(srv, bind)
  local c = client.open(srv.port, "127.0.0.1", bind and { bind = bind } or nil)
  return c
end

local function session(srv)
  local c = open(srv)
  c:expect(220, "220 " .. HOST .. " ESMTP kurir")
  local code, text = c:ehlo("client.dns.test")
  assert.equals(250, code, text)
  return c
end

teardown(harness.cleanup)

describe("kurir.dns", function()
  local dns, srv

  lazy_setup(function()
    dns = start_dns()
    srv = harness.start { script = SCRIPT, args = { tostring(dns.port), tostring(0.5 * harness.scale) } }
  end)

  lazy_teardown(function()
    if srv then
      client.close_all(srv.port)
      srv:stop()
      harness.assert_clean(srv)
      assert(srv.stopped == 0, "kurir exited with " .. tostring(srv.stopped) .. "\n" .. srv:describe())
      harness.rmtree(srv.dir)
    end
    if dns then dns.stop() end
  end)

  local function xdns(c, kind, name)
    local _, lines = c:check("XDNS " .. kind .. " " .. name, 250)
    return lines[1]:match("^250 2%.0%.0 " .. kind .. " (.*)$")
  end

  it("a returns every IPv4 address", function()
    local c = session(srv)
    assert.equals("{192.0.2.1,192.0.2.2}", xdns(c, "a", "a.test"))
    c:close()
  end)

  it("aaaa returns IPv6 addresses", function()
    local c = session(srv)
    assert.equals("{2001:db8::1}", xdns(c, "aaaa", "v6.test"))
    c:close()
  end)

  it("addr returns the IPv4 addresses, then the IPv6 ones", function()
    local c = session(srv)
    assert.equals("{192.0.2.10,2001:db8::10}", xdns(c, "addr", "both.test"))
    assert.equals("{192.0.2.1,192.0.2.2}", xdns(c, "addr", "a.test"))
    assert.equals("{2001:db8::1}", xdns(c, "addr", "v6.test"))
    assert.equals("{}", xdns(c, "addr", "empty.test"))
    assert.equals("nil NXDOMAIN", xdns(c, "addr", "nx.test"))
    c:close()
  end)

  it("mx returns preference and host, sorted by preference", function()
    local c = session(srv)
    assert.equals("{10 mx1.test,20 mx2.test}", xdns(c, "mx", "mx.test"))
    c:close()
  end)

  it("mx of the recipient domain from the rcpt hook", function()
    local c = session(srv)
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@mx.test>", 250, "250 2.1.5 mx {10 mx1.test,20 mx2.test}")
    c:check("RCPT TO:<b@nx.test>", 250, "250 2.1.5 mx nil NXDOMAIN")
    c:close()
  end)

  it("txt joins the character-strings of one record", function()
    local c = session(srv)
    local r = xdns(c, "txt", "txt.test")
    assert.truthy(r == "{v=spf1 -all,part one part two}" or r == "{part one part two,v=spf1 -all}", r)
    c:close()
  end)

  it("ptr builds the in-addr.arpa and ip6.arpa names itself", function()
    local c = session(srv)
    assert.equals("{host.a.test}", xdns(c, "ptr", "192.0.2.1"))
    assert.equals("{v6host.test}", xdns(c, "ptr", "2001:db8::1"))
    assert.equals("nil NXDOMAIN", xdns(c, "ptr", "192.0.2.99"))
    c:close()
  end)

  it("a name that does not exist is nil, NXDOMAIN", function()
    local c = session(srv)
    for _, kind in ipairs { "a", "aaaa", "mx", "txt" } do
      assert.equals("nil NXDOMAIN", xdns(c, kind, "nx.test"))
    end
    c:close()
  end)

  it("a name without records of the type is an empty table", function()
    local c = session(srv)
    for _, kind in ipairs { "a", "aaaa", "mx" } do
      assert.equals("{}", xdns(c, kind, "empty.test"))
    end
    assert.equals("{only text here}", xdns(c, "txt", "empty.test"))
    c:close()
  end)

  it("SERVFAIL and REFUSED are errors", function()
    local c = session(srv)
    assert.equals("nil servfail", xdns(c, "a", "servfail.test"))
    assert.equals("nil refused", xdns(c, "a", "refused.test"))
    c:close()
  end)

  it("an answer to another question is dropped (nil, timeout)", function()
    local c = session(srv)
    assert.equals("nil timeout", xdns(c, "a", "wrongq.test"))
    c:close()
  end)

  it("an unanswered query is nil, timeout after dns.timeout", function()
    local c = session(srv)
    local t0 = socket.gettime()
    assert.equals("nil timeout", xdns(c, "a", "slow.test"))
    local took = socket.gettime() - t0
    assert.truthy(took >= 0.4 * harness.scale and took < 3 * harness.scale, "took " .. took)
    c:close()
  end)

  it("a DNSBL hit in the connect hook refuses the session", function()
    local c = client.connect(srv.port, "127.0.0.1", { bind = "127.0.0.2" })
    if not c then return pending("cannot bind 127.0.0.2") end
    c:expect(554, "554 5.7.1 127.0.0.2 listed (127.0.0.2: listed)")
    c:check("QUIT", 221)
    c:close()
    -- not listed: the ordinary greeting
    local ok = open(srv)
    ok:expect(220, "220 " .. HOST .. " ESMTP kurir")
    ok:close()
  end)

  it("a lookup suspends only its own session", function()
    local a = session(srv)
    local asked = queries(dns, "slow.test")
    assert(a:send("XDNS a slow.test\r\nNOOP\r\n"))
    -- a's query has reached the DNS server: a's hook is waiting
    assert.truthy(harness.wait_for(function() return queries(dns, "slow.test") > asked end, 5), dns.log())
    local b = session(srv)
    assert.equals("{192.0.2.1,192.0.2.2}", xdns(b, "a", "a.test"))
    assert.equals("{10 mx1.test,20 mx2.test}", xdns(b, "mx", "mx.test"))
    b:check("NOOP", 250, "250 2.0.0 OK")
    -- b was served completely while a still waits
    assert.is_false(a:readable(0))
    a:expect(250, "250 2.0.0 a nil timeout", 10)
    a:expect(250, "250 2.0.0 OK")
    a:close()
    b:close()
  end)

  it("many sessions wait at once and each gets its own answer", function()
    local conns = {}
    local names = { "a.test", "v6.test", "mx.test", "nx.test", "empty.test" }
    local kinds = { "a", "aaaa", "mx", "a", "a" }
    local want = { "{192.0.2.1,192.0.2.2}", "{2001:db8::1}", "{10 mx1.test,20 mx2.test}", "nil NXDOMAIN", "{}" }
    for i = 1, #names do
      conns[i] = session(srv)
      assert(conns[i]:send("XDNS " .. kinds[i] .. " " .. names[i] .. "\r\n"))
    end
    for i = #names, 1, -1 do
      conns[i]:expect(250, "250 2.0.0 " .. kinds[i] .. " " .. want[i])
      conns[i]:close()
    end
  end)

  it("a client that leaves while its hook waits on DNS does no harm", function()
    local ids = {}
    for i = 1, 4 do
      local c = session(srv)
      ids[i] = harness.session_id(srv, c)
      local asked = queries(dns, "slow.test")
      assert(c:send(i < 4 and "XDNS addr slow.test\r\n" or "XDNS a slow.test\r\n"))
      -- the query has reached the DNS server: the hook waits on it
      assert.truthy(harness.wait_for(function() return queries(dns, "slow.test") > asked end, 5), dns.log())
      c:close()
    end
    -- A lookup asked after the abandoned ones, with the same timeout, times
    -- out after them: once it has, c-ares has called back for all of them
    -- (each either ended its hook or, the hook abandoned, was dropped).
    local later = session(srv)
    assert.equals("nil timeout", xdns(later, "a", "slow.test"))
    later:close()
    for _, id in ipairs(ids) do
      assert.truthy(harness.wait_session_end(srv, id), srv:describe())
    end
    local d = session(srv)
    assert.equals("{192.0.2.1,192.0.2.2}", xdns(d, "a", "a.test"))
    d:close()
    assert.is_true(srv:running())
  end)

  it("misuse raises", function()
    local c = session(srv)
    local function misuse(case)
      local _, lines = c:check("XMISUSE " .. case, 250)
      return lines[1]
    end
    assert.truthy(misuse("number"):find("raised .*string expected, got number"), misuse("number"))
    assert.truthy(misuse("none"):find("raised .*string expected, got no value"))
    assert.truthy(misuse("nul"):find("raised .*expected a domain name"))
    assert.truthy(misuse("badip"):find("raised .*expected an IPv4 or IPv6 address"))
    assert.truthy(misuse("coroutine"):find("raised .*only run inside a hook"))
    c:close()
  end)
end)

describe("kurir.dns and the hook time limit", function()
  it("ends a wait that outlives timeouts.hook; the late answer is dropped", function()
    local dns = start_dns()
    -- dns timeout 2 s, hook limit 0.3 s
    local srv = harness.start { script = SCRIPT, args = { tostring(dns.port), "2", tostring(0.3 * harness.scale) } }
    local c = session(srv)
    local id = harness.session_id(srv, c)
    c:check("XDNS a slow.test", 451)
    -- the session goes on, and c-ares later times the query out
    assert.equals("250 2.0.0 a {192.0.2.1,192.0.2.2}", (select(2, c:check("XDNS a a.test", 250)))[1])
    assert.is_nil(srv:log():find("event=dns_dropped", 1, true), srv:describe())
    local dropped = srv:wait_log("session=" .. id .. " event=dns_dropped name=slow.test status=[^\n]*", 10)
    assert.truthy(dropped, srv:describe())
    assert.truthy(dropped:lower():find("timeout", 1, true), dropped)
    assert.equals("250 2.0.0 aaaa {2001:db8::1}", (select(2, c:check("XDNS aaaa v6.test", 250)))[1])
    c:close()
    harness.finish(srv)
    dns.stop()
  end)
end)

describe("kurir.dns when kurir stops", function()
  it("destroys the resolver with abandoned lookups still pending, cleanly", function()
    local dns = start_dns()
    -- dns timeout 5 s, hook limit 0.3 s: the hooks give up, the queries
    -- are still pending inside c-ares when kurir stops
    local srv = harness.start { script = SCRIPT, args = { tostring(dns.port), "5", tostring(0.3 * harness.scale) } }
    local c = session(srv)
    for _ = 1, 3 do c:check("XDNS addr slow.test", 451) end
    assert.equals(6, select(2, dns.log():gsub("slow.test", "")), dns.log())
    c:check("QUIT", 221)
    c:close()
    local t0 = socket.gettime()
    harness.finish(srv)   -- exit 0, no sanitizer report (no leak, no use after free)
    assert.truthy(socket.gettime() - t0 < 3 * harness.scale, "stop waited for the abandoned lookups")
    dns.stop()
  end)
end)

describe("kurir.dns at load time", function()
  it("raises, naming the script line", function()
    local rc, out = harness.run { args = { "--check", "{script}" }, script = [[
local kurir = require "kurir"
kurir.configure { dns = { servers = { "127.0.0.1:53" } } }
local r = kurir.dns.a("a.test")
function kurir.on.data() return 250 end
]] }
    assert.is_not.equals(0, rc)
    assert.truthy(out:find("script.lua:3:", 1, true), out)
    assert.truthy(out:find("only run inside a hook", 1, true), out)
  end)

  it("refuses a bad dns configuration", function()
    local rc, out = harness.run { args = { "--check", "{script}" }, script = [[
local kurir = require "kurir"
kurir.configure { dns = { servers = { "dns.example:53" } } }
]] }
    assert.is_not.equals(0, rc)
    assert.truthy(out:find("script.lua:2:", 1, true), out)
    assert.truthy(out:find("dns.servers[1]", 1, true), out)
  end)
end)

-- kurir.connect with a host name: resolved through kurir.dns (lua/kurir/net.lua)
local CONNECT_SCRIPT = [=[
local kurir = require "kurir"
local dns_port, peer_port = tonumber(arg[1]), tonumber(arg[2])
kurir.configure { hostname = "mx.dns.test", dns = { servers = { "127.0.0.1:" .. dns_port }, timeout = 1, tries = 1 } }

function kurir.on.rcpt(_, rcpt)
  local sock, err = kurir.connect(rcpt.user, peer_port, { timeout = 5 })
  if not sock then return 451, "4.4.1 " .. tostring(err) end
  local greeting = sock:receive("l")
  sock:send("QUIT\r\n")
  local bye = sock:receive("l")
  sock:close()
  return 250, "2.1.5 peer said " .. tostring(greeting):sub(1, 3) .. " then " .. tostring(bye):sub(1, 3)
end

function kurir.on.data() return 250 end
]=]

describe("kurir.connect by name", function()
  local dns, peer, srv

  lazy_setup(function()
    dns = start_dns()
    peer = harness.start { script = "local kurir = require 'kurir'\nfunction kurir.on.data() return 250 end\n" }
    srv = harness.start { script = CONNECT_SCRIPT, args = { tostring(dns.port), tostring(peer.port) } }
  end)

  lazy_teardown(function()
    for _, s in ipairs { srv, peer } do
      client.close_all(s.port)
      s:stop()
      harness.assert_clean(s)
      assert(s.stopped == 0, "kurir exited with " .. tostring(s.stopped) .. "\n" .. s:describe())
      harness.rmtree(s.dir)
    end
    if dns then dns.stop() end
  end)

  it("resolves the name and talks to the peer at its address", function()
    local c = session(srv)
    c:check("MAIL FROM:<a@dns.test>", 250)
    c:check("RCPT TO:<peer.test@x.test>", 250, "250 2.1.5 peer said 220 then 221")
    c:close()
    assert.truthy(dns.log():find("peer.test", 1, true), "the name was looked up")
  end)

  it("reports a name that does not exist with the name and NXDOMAIN", function()
    local c = session(srv)
    c:check("MAIL FROM:<a@dns.test>", 250)
    c:check("RCPT TO:<nx.test@x.test>", 451, "451 4.4.1 nx.test: NXDOMAIN")
    c:close()
  end)
end)
