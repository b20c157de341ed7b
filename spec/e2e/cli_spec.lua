-- End to end: the command line of SPEC 1: --version, --help, exit codes,
-- --check (file:line in every message, no socket opened), the arg table,
-- -l syntax and -l replacing the script's listeners.

local socket = require "socket"
local harness = require "harness"
local client = require "smtp_client"

local OK_SCRIPT = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.e2e.test", listen = { "127.0.0.1:%d" } }
function kurir.on.rcpt(s, rcpt)
  if rcpt.domain ~= "example.test" then return 550, "5.7.1 Relaying denied" end
end
function kurir.on.data(s, msg) return 250 end
]]

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("command line", function()
  it("--version exits 0 and prints a version", function()
    local rc, out = harness.run { args = { "--version" } }
    assert.equals(0, rc, out)
    assert.truthy(out:match("%d+%.%d+%.%d+"), out)
    assert.truthy(out:lower():find("kurir", 1, true), out)
  end)

  it("--help exits 0 and shows the usage", function()
    local rc, out = harness.run { args = { "--help" } }
    assert.equals(0, rc, out)
    assert.truthy(out:lower():find("usage", 1, true), out)
    assert.truthy(out:find("--check", 1, true), out)
    assert.truthy(out:find("-l", 1, true), out)
  end)

  it("exits 2 on a bad command line", function()
    for _, args in ipairs {
      { "--bogus" },
      { "-l" },
      { "-l", "not-an-address", "--check", "{script}" },
      { "--version-please" },
    } do
      local rc, out = harness.run { args = args, script = "return" }
      assert.equals(2, rc, table.concat(args, " ") .. ": " .. out)
      assert.is_true(#out > 0, "no message for " .. table.concat(args, " "))
    end
  end)

  it("checks -l with the listener grammar of kurir.configure and says what is wrong (exit 2)", function()
    for arg, why in pairs {
      ["::1:2525"] = "IPv6 addresses need brackets",
      ["127.0.0.1:99999"] = "bad port '99999'",
      ["mail.example.test:25"] = "bad address 'mail.example.test'",
      ["gopher://127.0.0.1:25"] = "unknown scheme 'gopher://'",
      ["127.0.0.1"] = "missing port",
    } do
      local rc, out = harness.run { args = { "-l", arg, "--check", "{script}" }, script = "return" }
      assert.equals(2, rc, arg .. ": " .. out)
      assert.truthy(out:find("kurir: -l " .. arg .. ": " .. why, 1, true), arg .. ": " .. out)
    end
  end)

  describe("port 0 (an ephemeral port)", function()
    local function greets(port, host)
      local c = assert(socket.connect(host or "127.0.0.1", port))
      c:settimeout(5 * harness.scale)
      local line = c:receive("*l")
      c:close()
      return line
    end

    it("-l ADDR:0 binds a free port on each listener and logs the port bound", function()
      local srv = harness.start {
        script_file = "scripts/mock.lua", args = { "--tls", "--maildir", "{dir}/mail" },
        listen = { "127.0.0.1:0", "[::1]:0", "smtps://127.0.0.1:0" },
      }
      assert.equals(3, #srv.ports)
      local lines = harness.log_lines(srv, { event = "listening" })
      for i, want in ipairs { "^127%.0%.0%.1:(%d+)$", "^%[::1%]:(%d+)$", "^smtps://127%.0%.0%.1:(%d+)$" } do
        local port = lines[i].fields.address:match(want)
        assert.truthy(port, lines[i].line)
        assert.equals(port, lines[i].fields.port, lines[i].line)
        assert.is_true(tonumber(port) > 0, lines[i].line)
      end
      assert.are_not.equal(srv.ports[1], srv.ports[3])
      assert.truthy((greets(srv.ports[1]) or ""):match("^220 "))
      assert.truthy((greets(srv.ports[2], "::1") or ""):match("^220 "))
      local tls = assert(socket.connect("127.0.0.1", srv.ports[3]))
      tls:close()
      harness.finish(srv)
    end)

    it("listen = { \"127.0.0.1:0\" } in a script binds a free port too", function()
      local srv = harness.start { listen = false, script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.e2e.test", listen = { "127.0.0.1:0", { host = "::1", port = 0 } } }
function kurir.on.data() return 250 end
]] }
      assert.equals(2, #srv.ports)
      assert.equals("220 mx.e2e.test ESMTP kurir", greets(srv.ports[1]))
      assert.equals("220 mx.e2e.test ESMTP kurir", greets(srv.ports[2], "::1"))
      harness.finish(srv)
    end)
  end)

  describe("where the Lua modules are found (README)", function()
    local q = harness.quote
    -- A tree holding lua/ (the real modules) and a scripts/mock.lua that
    -- names the tree it came from.
    local function tree(dir, name)
      assert(os.execute("mkdir -p " .. q(dir .. "/scripts") .. " && ln -s " .. q(harness.root .. "/lua") ..
        " " .. q(dir .. "/lua")))
      harness.write_file(dir .. "/scripts/mock.lua", 'local kurir = require "kurir"\n' ..
        'require "kurir.config"\nio.stdout:write("MOCK FROM ' .. name .. '\\n")\n' ..
        "function kurir.on.data() return 250 end\n")
    end

    it("KURIR_HOME comes first", function()
      local dir = harness.tmpdir()
      tree(dir, "home")
      local rc, out = harness.sh("KURIR_HOME=" .. q(dir) .. " " .. q(harness.bin) .. " --check")
      harness.rmtree(dir)
      assert.equals(0, rc, out)
      assert.truthy(out:find("MOCK FROM home", 1, true), out)
    end)

    it("then <binary>/../share/kurir (an installed tree), before the source tree", function()
      local dir = harness.tmpdir()
      tree(dir .. "/share/kurir", "share")
      assert(os.execute("mkdir " .. q(dir .. "/bin") .. " && cp " .. q(harness.bin) .. " " .. q(dir .. "/bin/kurir")))
      local rc, out = harness.sh("env -u KURIR_HOME " .. q(dir .. "/bin/kurir") .. " --check")
      harness.rmtree(dir)
      assert.equals(0, rc, out)
      assert.truthy(out:find("MOCK FROM share", 1, true), out)
    end)

    it("then the source tree the binary was built from", function()
      local dir = harness.tmpdir()   -- the mock's ./mail lands here
      local rc, out = harness.sh("cd " .. q(dir) .. " && env -u KURIR_HOME " .. q(harness.bin) .. " --check")
      harness.rmtree(dir)
      assert.equals(0, rc, out)
      assert.truthy(out:find(harness.root .. "/scripts/mock.lua: OK", 1, true), out)
    end)
  end)

  it("exits 1 naming the file when the script does not exist", function()
    local rc, out = harness.run { args = { "/nonexistent/e2e-missing.lua" } }
    assert.equals(1, rc, out)
    assert.truthy(out:find("e2e-missing.lua", 1, true), out)
  end)

  describe("--check", function()
    it("accepts a good script with 0 and opens no socket", function()
      -- Hold the script's port ourselves: a bind by kurir would fail, and a
      -- probe connection would show up as a pending connection.
      local holder = assert(socket.tcp())
      assert(holder:bind("127.0.0.1", 0))
      assert(holder:listen(8))
      local _, port = holder:getsockname()
      port = tonumber(port)
      local rc, out = harness.run { args = { "--check", "{script}" }, script = OK_SCRIPT:format(port) }
      assert.equals(0, rc, out)
      rc, out = harness.run { args = { "-l", "127.0.0.1:" .. port, "--check", "{script}" },
        script = OK_SCRIPT:format(port) }
      assert.equals(0, rc, out)
      holder:settimeout(0)
      assert.is_nil(holder:accept())
      holder:close()
    end)

    it("accepts scripts/mock.lua", function()
      local rc, out = harness.run { args = { "--check", harness.root .. "/scripts/mock.lua", "--maildir", "{dir}/m" } }
      assert.equals(0, rc, out)
    end)

    it("accepts every hook name of SPEC 2, starttls and auth included", function()
      local hooks = { "connect", "helo", "starttls", "auth", "mail", "rcpt", "data", "vrfy", "expn", "command",
        "reset", "disconnect" }
      local src = { "local kurir = require \"kurir\"" }
      for _, h in ipairs(hooks) do src[#src + 1] = "function kurir.on." .. h .. "() end" end
      local rc, out = harness.run { args = { "--check", "{script}" }, script = table.concat(src, "\n") .. "\n" }
      assert.equals(0, rc, out)
    end)

    it("reports a syntax error with file:line and exits 1", function()
      local rc, out = harness.run { args = { "--check", "{script}" },
        script = "local kurir = require \"kurir\"\n\nlocal x = = 1\n" }
      assert.equals(1, rc, out)
      assert.truthy(out:find("script.lua:3", 1, true), out)
    end)

    it("reports an unknown hook name with file:line and exits 1", function()
      local rc, out = harness.run { args = { "--check", "{script}" },
        script = "local kurir = require \"kurir\"\nkurir.on.rcpt_to = function() end\n" ..
          "function kurir.on.data() end\n" }
      assert.equals(1, rc, out)
      assert.truthy(out:find("script.lua:2", 1, true), out)
      assert.truthy(out:find("rcpt_to", 1, true), out)
    end)

    it("reports a bad configuration value with file:line and exits 1", function()
      local rc, out = harness.run { args = { "--check", "{script}" },
        script = "local kurir = require \"kurir\"\nfunction kurir.on.data() end\n" ..
          "kurir.configure { limits = { recipients = \"many\" } }\n" }
      assert.equals(1, rc, out)
      assert.truthy(out:find("script.lua:3", 1, true), out)
      assert.truthy(out:find("recipients", 1, true), out)
    end)

    it("reports an unknown configuration key with file:line and exits 1", function()
      local rc, out = harness.run { args = { "--check", "{script}" },
        script = "local kurir = require \"kurir\"\nfunction kurir.on.data() end\n\n" ..
          "kurir.configure { timeouts = { comand = 5 } }\n" }
      assert.equals(1, rc, out)
      assert.truthy(out:find("script.lua:4", 1, true), out)
      assert.truthy(out:find("comand", 1, true), out)
    end)

    it("reports a runtime error in the script body with file:line and exits 1", function()
      local rc, out = harness.run { args = { "--check", "{script}" },
        script = "local kurir = require \"kurir\"\nlocal t = nil\nprint(t.field)\n" }
      assert.equals(1, rc, out)
      assert.truthy(out:find("script.lua:3", 1, true), out)
    end)

    it("says that a script without data hook or routes refuses mail", function()
      local _, out = harness.run { args = { "--check", "{script}" },
        script = "local kurir = require \"kurir\"\nfunction kurir.on.rcpt() end\n" }
      assert.truthy(out:lower():find("data", 1, true), out)
    end)

    it("exits 1 for a bad script even without --check", function()
      local rc, out = harness.run { args = { "{script}" }, script = "this is not lua\n" }
      assert.equals(1, rc, out)
      assert.truthy(out:find("script.lua:1", 1, true), out)
    end)
  end)

  it("hands the script its arguments in the arg table", function()
    local srv = harness.start {
      script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.e2e.test" }
function kurir.on.data() end
local f = assert(io.open("args.out", "wb"))
f:write(tostring(arg[0]), "\n", #arg, "\n")
for i = 1, #arg do f:write(arg[i], "\n") end
f:close()
]],
      args = { "one", "two words", "--three", "-l" },
    }
    local text = harness.wait_for(function() return harness.read_file(srv.dir .. "/args.out") end, 5)
    assert.equals(srv.script .. "\n4\none\ntwo words\n--three\n-l\n", text)
    harness.finish(srv)
  end)
end)

describe("command line: -l and the script's arguments (SPEC 1)", function()
  local function open(port)
    local c = client.open(port)
    c:expect(220, "220 mx.conf.test ESMTP kurir")
    return c
  end

  -- True when something accepts TCP connections on 127.0.0.1:port.
  local function accepts(port)
    local s = socket.tcp()
    s:settimeout(0.5)
    local ok = s:connect("127.0.0.1", port)
    s:close()
    return ok and true or false
  end

  it("exits 2 for every -l value that is not [smtps://]ADDR:PORT with a literal address", function()
    for _, l in ipairs {
      "127.0.0.1",            -- no port
      "127.0.0.1:70000",      -- port out of range
      "256.0.0.1:2525",       -- not an IPv4 literal
      "example.com:2525",     -- a host name
      "::1:2525",             -- IPv6 without brackets
      "ftp://127.0.0.1:2525", -- unknown scheme
    } do
      local rc, out = harness.run { args = { "-l", l, "--check", "{script}" },
        script = "local kurir = require 'kurir'\nfunction kurir.on.data() return 250 end\n" }
      assert.equals(2, rc, "-l " .. l .. ": " .. out)
      assert.truthy(out:find(l, 1, true), "-l " .. l .. ": the message does not name it: " .. out)
    end
  end)

  it("-l replaces the listeners the script declares", function()
    -- We hold the declared port bound (not listening): were kurir to bind
    -- it too, it would fail to start.
    local declared, holder = harness.closed_port()
    local srv = harness.start { script = ([[
local kurir = require "kurir"
kurir.configure { hostname = "mx.conf.test", listen = { "127.0.0.1:%d" } }
function kurir.on.data() return 250 end
]]):format(declared) }
    local c = open(srv.port)
    c:check("QUIT", 221)
    c:close()
    assert.is_false(accepts(declared), "the script's own listener is open too")
    harness.finish(srv)
    holder:close()
  end)

  it("hands options written after SCRIPT to the script, not to kurir", function()
    local rc, out = harness.run {
      args = { "--check", "{script}", "--check", "-l", "--help", "x y" },
      script = [[
local kurir = require "kurir"
io.stdout:write("ARGS[", tostring(arg[0]):match("[^/]*$"), "|", table.concat(arg, "|"), "]\n")
function kurir.on.data() return 250 end
]] }
    assert.equals(0, rc, out)
    assert.truthy(out:find("ARGS[script.lua|--check|-l|--help|x y]", 1, true), out)
    assert.falsy(out:lower():find("usage", 1, true), out)
  end)

  it("--check reports a bad TLS certificate path with file:line", function()
    local rc, out = harness.run { args = { "--check", "{script}" }, script = [[
local kurir = require "kurir"

kurir.configure { tls = { cert = "/nonexistent/conf-cert.pem", key = "/nonexistent/conf-key.pem" } }
function kurir.on.data() return 250 end
]] }
    assert.equals(1, rc, out)
    assert.truthy(out:find("conf-cert.pem", 1, true), out)
    assert.truthy(out:find("script.lua:3:", 1, true), "no file:line in: " .. out)
  end)

  it("refuses an smtps:// listener without TLS configured with exit 1", function()
    local rc, out = harness.run { args = { "-l", "smtps://127.0.0.1:0", "--check", "{script}" },
      script = "local kurir = require 'kurir'\nfunction kurir.on.data() return 250 end\n" }
    assert.equals(1, rc, out)
    assert.truthy(out:find("smtps://", 1, true), out)
  end)
end)
