-- End to end: the Lua objects hooks get (kurir.session, kurir.message,
-- kurir.cred) read their fields and methods through their metatables:
-- built-in fields are read-only, methods are shared functions, the
-- script's own values stay on the session; and the shipped modules the
-- `kurir` table is built from fail the load loudly when they are broken.

local harness = require "harness"
local client = require "smtp_client"

local q = harness.quote

teardown(harness.cleanup)

describe("Lua objects", function()
  local srv

  lazy_setup(function()
    srv = harness.start {
      script = [[
local kurir = require "kurir"
kurir.configure { hostname = "mx.objects.test", auth = { plaintext = true } }

local function try(f)
  local ok, err = pcall(f)
  return ok and "ok" or tostring(err):gsub("^.-:%d+: ", "")
end

function kurir.on.helo(s, name)
  s.counter = 1
  local same = s.log == s.log and rawequal(s.log, s.log)
  return 250, table.concat({
    "id=" .. #s.id, "helo=" .. name, "port=" .. math.type(s.remote_port),
    "same=" .. tostring(same), "set_id=" .. try(function() s.id = "x" end),
    "set_log=" .. try(function() s.log = print end), "missing=" .. tostring(s.nothing),
  }, " ")
end

function kurir.on.mail(s, from)
  s.counter = s.counter + 1
  return 250, "2.1.0 counter=" .. s.counter .. " helo=" .. s.helo .. " from=" .. from.address
end

function kurir.on.auth(s, cred)
  return 235, "2.7.0 " .. cred.mechanism .. " " .. cred.user .. " " .. tostring(cred:verify("pw")) ..
    " " .. try(function() cred.user = "x" end)
end

function kurir.on.data(s, msg)
  return 250, "2.0.0 " .. table.concat({
    "size=" .. msg.size, "subject=" .. tostring(msg:header("Subject")),
    "rcpts=" .. #msg.rcpts, "same=" .. tostring(msg.raw == msg.raw),
    "set=" .. try(function() msg.size = 1 end), "new=" .. try(function() msg.mine = 1 end),
  }, " ")
end
]],
    }
  end)

  lazy_teardown(function() harness.finish(srv) end)

  it("reads fields and shared methods; built-ins are read-only; script values persist", function()
    local c = client.open(srv.port)
    c:expect(220)
    local code, text = c:cmd("EHLO client.objects.test")
    assert.equals(250, code, text)
    -- the hook's text on the first line of the EHLO reply
    local first = text:match("^[^\r\n]*")
    assert.truthy(first:find("id=20 helo=client.objects.test port=integer same=true " ..
      "set_id=kurir.session field 'id' is read-only set_log=kurir.session field 'log' is read-only " ..
      "missing=nil", 1, true), text)
    -- PLAIN with user "u", password "pw"
    c:check("AUTH PLAIN AHUAcHc=", 235, "235 2.7.0 PLAIN u true kurir.cred field 'user' is read-only")
    c:check("MAIL FROM:<a@example.test>", 250, "250 2.1.0 counter=2 helo=client.objects.test from=a@example.test")
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: hi\r\n\r\nbody\r\n.\r\n"))
    c:expect(250, "250 2.0.0 size=21 subject=hi rcpts=1 same=true " ..
      "set=kurir.message field 'size' is read-only new=kurir.message objects take no new fields")
    c:close()
  end)
end)

describe("shipped modules", function()
  it("a broken module that builds the kurir table fails the load with its file:line", function()
    local dir = harness.tmpdir()
    os.execute("cp -r " .. q(harness.root .. "/lua") .. " " .. q(dir .. "/lua"))
    harness.write_file(dir .. "/lua/kurir/net.lua", "local net = {}\nthis is not lua\nreturn net\n")
    harness.write_file(dir .. "/script.lua", "local kurir = require \"kurir\"\nkurir.configure {}\n")
    local code, out = harness.sh("KURIR_HOME=" .. q(dir) .. " " .. q(harness.bin) .. " --check " ..
      q(dir .. "/script.lua"))
    harness.rmtree(dir)
    assert.equals(1, code, out)
    assert.truthy(out:find("lua/kurir/net.lua:2:", 1, true), out)
  end)
end)
