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
      "127.0.0.1:0",          -- port out of range
      "127.0.0.1:70000",
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
    local declared = harness.free_port()
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
    local rc, out = harness.run { args = { "-l", "smtps://127.0.0.1:" .. harness.free_port(), "--check", "{script}" },
      script = "local kurir = require 'kurir'\nfunction kurir.on.data() return 250 end\n" }
    assert.equals(1, rc, out)
    assert.truthy(out:find("smtps://", 1, true), out)
  end)
end)
