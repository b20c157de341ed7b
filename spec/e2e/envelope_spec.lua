-- End to end: the accepted message as a core object (issue 7 s.2). The
-- address objects are views on the transaction's C envelope: built-in
-- fields are read-only, the script's own fields stay with the recipient,
-- rcpt.route set in the data hook writes through to what the queue stores,
-- s.rcpts is a copy, and msg:enqueue takes only recipients of its message.
-- A body spilled to disk becomes the queue file itself (event=queued
-- body=linked), or is copied when the spool is on another file system,
-- and is delivered byte for byte either way.

local harness = require "harness"
local client = require "smtp_client"

-- arg[1] = DIR, arg[2] = spool directory. "keep" writes each recipient's
-- copy to DIR/out/<address>; "hold" keeps the message queued.
local SCRIPT = [[
local kurir = require "kurir"
local dir = arg[1]
kurir.configure {
  hostname = "mx.e2e.test",
  spool = arg[2],
  queue = { dir = dir .. "/queue", retry = { 30 } },
}
local keep = kurir.deliver(function(msg, rcpts)
  for _, r in ipairs(rcpts) do
    local f = assert(io.open(dir .. "/out/" .. r.address, "wb"))
    f:write(msg:raw())
    f:close()
  end
  return true
end, "keep")
local hold = kurir.deliver(function() return nil, "held by the spec" end, "hold")

function kurir.on.rcpt(s, rcpt)
  if s.internal then rcpt.route = kurir.discard() return end   -- the DSN NOTIFY=SUCCESS asks for
  local ok, err = pcall(function() rcpt.address = "other@x.test" end)
  rcpt.note = "n-" .. rcpt.user
  if rcpt.domain == "hold.test" then rcpt.route = hold
  elseif rcpt.domain ~= "late.test" then rcpt.route = keep end
  s:log("rcpt_view", { address = rcpt.address, read_only = tostring(not ok and err:find("read%-only") ~= nil),
                       notify = tostring(rcpt.params.NOTIFY), before = #s.rcpts })
end

function kurir.on.data(s, msg)
  local seen = {}
  for _, r in ipairs(msg.rcpts) do
    if r.domain == "late.test" then r.route = keep end   -- set in the data hook
    local keys = {}
    for k in pairs(r) do keys[#keys + 1] = k end
    table.sort(keys)
    seen[#seen + 1] = r.address .. ":" .. r.note .. ":" .. table.concat(keys, ",")
  end
  local copy = s.rcpts
  table.remove(copy, 1)
  local ok, err = pcall(msg.enqueue, msg, { { address = "forged@x.test", route = keep } })
  s:log("data_view", { seen = table.concat(seen, ";"), copy = #copy, rcpts = #msg.rcpts,
                       same = tostring(s.rcpts[1] == msg.rcpts[1]), from = msg.from.address,
                       forged = tostring(not ok and err:find("not a recipient of this message") ~= nil) })
end
]]

local function start(spool)
  local srv = harness.start { script = SCRIPT, args = { "{dir}", spool or "{dir}/spool" } }
  assert(os.execute("mkdir -p " .. harness.quote(srv.dir .. "/out") .. " " .. harness.quote(srv.dir .. "/spool")))
  return srv
end

local function send(srv, rcpts, body)
  local c = client.open(srv.port)
  c:expect(220)
  assert.equals(250, (c:ehlo("client.e2e.test")))
  c:check("MAIL FROM:<a@src.test> RET=HDRS", 250)
  for _, r in ipairs(rcpts) do c:check("RCPT TO:<" .. r:gsub(" ", "> ", 1) .. (r:find(" ") and "" or ">"), 250) end
  c:check("DATA", 354)
  assert(c:send(body .. "\r\n.\r\n"))
  local text = c:expect(250)
  c:close()
  return assert(text:match("queued as (%S+)$"), text)
end

-- a body well past the 64 KiB the spool keeps in memory, lines of
-- varying content so that a shifted or cut copy cannot compare equal
local function big_body()
  local lines = { "Subject: big", "" }
  for i = 1, 4000 do lines[#lines + 1] = ("line %05d %s"):format(i, ("abcdefghij"):rep(i % 7 + 1)) end
  return table.concat(lines, "\r\n")
end

local function device(path)
  local rc, out = harness.sh("stat -c %d " .. harness.quote(path))
  return rc == 0 and out:match("%d+") or nil
end

describe("the envelope", function()
  local srv
  after_each(function()
    harness.finish(srv)
    srv = nil
  end)

  it("is what the Lua objects show, and what the queue stores", function()
    srv = start()
    local id = send(srv, { "a@keep.test NOTIFY=SUCCESS", "b@late.test" }, "Subject: small\r\n\r\nhello")
    assert.truthy(srv:wait_log("event=queued id=" .. id .. " rcpts=2 body=written"), srv:describe())
    local views = harness.log_lines(srv, { event = "rcpt_view" })
    assert.equals(2, #views, srv:describe())
    assert.same({ "a@keep.test", "true", "SUCCESS", "0" },
      { views[1].fields.address, views[1].fields.read_only, views[1].fields.notify, views[1].fields.before })
    assert.same({ "b@late.test", "true", "nil", "1" },
      { views[2].fields.address, views[2].fields.read_only, views[2].fields.notify, views[2].fields.before })
    local d = harness.log_lines(srv, { event = "data_view" })[1].fields
    assert.equals("a@keep.test:n-a:address,domain,note,params,route,user;" ..
                  "b@late.test:n-b:address,domain,note,params,route,user", d.seen)
    assert.same({ "1", "2", "true", "a@src.test", "true" }, { d.copy, d.rcpts, d.same, d.from, d.forged })
    -- the route set in the data hook reached the queue: b was delivered too
    assert.truthy(srv:wait_log("event=queue_done id=" .. id .. " delivered=2 failed=0"), srv:describe())
    assert.equals("hello\r\n", (harness.read_file(srv.dir .. "/out/b@late.test"):match("\r\n\r\n(.*)$")))
    assert.truthy(srv:log():find("event=message id=" .. id .. " from=a@src.test rcpts=a@keep.test,b@late.test", 1,
      true), srv:describe())
  end)

  it("links a spilled body into the queue instead of copying it", function()
    srv = start()
    local body = big_body()
    assert.is_true(#body > 128 * 1024)
    local stored = body .. "\r\n"   -- the message ends with its last line's CRLF
    local held = send(srv, { "h@hold.test" }, body)
    assert.truthy(srv:wait_log("event=queued id=" .. held .. " rcpts=1 body=linked"), srv:describe())
    -- msg/ID names where the message starts; zeros fill the room before it
    local file = assert(harness.read_file(srv.dir .. "/queue/msg/" .. held))
    local at = tonumber(file:match("\nbody (%d+)\n\n"))
    assert.truthy(at, file:sub(1, 400))
    assert.equals(65536 + #stored, #file)
    local head_end = file:find("\n\n", 1, true) + 2
    assert.truthy(file:sub(head_end, at):match("^%z+$"))
    assert.truthy(file:sub(at + 1, at + 10) == "Received: ")
    assert.is_true(file:sub(65537) == stored)
    assert.same({}, harness.list_dir(srv.dir .. "/spool"))   -- the spool file got no name there
    assert.same({}, harness.list_dir(srv.dir .. "/queue/tmp"))

    -- and an agent reads the linked file right
    local id = send(srv, { "k@keep.test" }, body)
    assert.truthy(srv:wait_log("event=queued id=" .. id .. " rcpts=1 body=linked"), srv:describe())
    assert.truthy(srv:wait_log("event=queue_done id=" .. id .. " delivered=1"), srv:describe())
    -- (an agent's msg:raw() has the headers kurir added, then the bytes as received)
    local got = harness.read_file(srv.dir .. "/out/k@keep.test")
    assert.truthy(got:find("^Received: "))
    assert.is_true(got:sub(-#stored) == stored and got:sub(1, #got - #stored):find("\r\n$") ~= nil)
  end)

  it("copies the body when the spool is on another file system", function()
    local shm = "/dev/shm"
    local probe = harness.tmpdir()
    local other = device(shm) and device(shm) ~= device(probe)
    harness.rmtree(probe)
    if not other then
      pending("no second file system for the spool (/dev/shm)")
      return
    end
    srv = start(shm)
    local body = big_body()
    local id = send(srv, { "k@keep.test" }, body)
    assert.truthy(srv:wait_log("event=queued id=" .. id .. " rcpts=1 body=copied"), srv:describe())
    assert.truthy(srv:wait_log("event=queue_done id=" .. id .. " delivered=1"), srv:describe())
    local got, stored = harness.read_file(srv.dir .. "/out/k@keep.test"), body .. "\r\n"
    assert.truthy(got:find("^Received: "))
    assert.is_true(got:sub(-#stored) == stored)
  end)

  it("a view kept past its transaction reads that envelope; rawset of its hidden keys raises, never crashes",
     function()
    -- the first transaction's recipient view is all that is left of it
    -- when the second one starts (its sender view dropped, the garbage
    -- collector run); under ASan a freed envelope would be caught here
    srv = harness.start { script = [[
local kurir = require "kurir"
local kept

local function hidden_keys(v)
  local keys = {}
  for k in next, v do
    if type(k) ~= "string" then keys[#keys + 1] = k end
  end
  return keys
end

function kurir.on.rcpt(s, rcpt)
  rcpt.route = kurir.discard()
  rcpt.mine = "m-" .. rcpt.user
  kept = kept or rcpt
  s:log("rcpt_seen", { address = rcpt.address, before = #s.rcpts })
end

function kurir.on.mail(s, from)
  if not kept then return end
  collectgarbage()
  collectgarbage()
  local keys = {}
  for k in pairs(kept) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local raised, other, hidden = 0, {}, hidden_keys(kept)
  for _, k in ipairs(hidden) do
    local was = rawget(kept, k)
    rawset(kept, k, 99)
    for _, read in ipairs { function() return kept.address end, function() return pairs(kept) end,
                            function() kept.route = kurir.discard() end, function() return tostring(kept) end } do
      local ok, err = pcall(read)
      if not ok then
        if tostring(err):find("not a kurir address", 1, true) then raised = raised + 1
        else other[#other + 1] = tostring(err) end
      end
    end
    rawset(kept, k, was)
  end
  s:log("kept", { address = kept.address, domain = kept.domain, mine = kept.mine, keys = table.concat(keys, ","),
                  route = tostring(kept.route ~= nil), now = from.address, hidden = #hidden, raised = raised,
                  other = table.concat(other, ";") })
end
]] }
    local c = client.open(srv.port)
    c:expect(220)
    assert.equals(250, (c:ehlo("client.e2e.test")))
    c:check("MAIL FROM:<first@src.test>", 250)
    c:check("RCPT TO:<one@dst.test>", 250)
    c:check("RCPT TO:<extra@dst.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: one\r\n\r\nhello\r\n.\r\n"))
    c:expect(250)
    c:check("MAIL FROM:<second@src.test>", 250)
    c:check("RCPT TO:<two@dst.test>", 250)
    c:check("RSET", 250)
    c:close()
    assert.truthy(srv:wait_log("event=kept"), srv:describe())
    local k = harness.log_lines(srv, { event = "kept" })[1].fields
    assert.same({ "one@dst.test", "dst.test", "m-one", "address,domain,mine,params,route,user", "true",
                  "second@src.test", "" },
                { k.address, k.domain, k.mine, k.keys, k.route, k.now, k.other })
    assert.is_true(tonumber(k.hidden) >= 1)
    assert.is_true(tonumber(k.raised) >= 1)
    -- the second transaction starts with no recipients of the first
    local seen = {}
    for _, l in ipairs(harness.log_lines(srv, { event = "rcpt_seen" })) do
      seen[#seen + 1] = l.fields.address .. "=" .. l.fields.before
    end
    assert.equals("one@dst.test=0 extra@dst.test=1 two@dst.test=0", table.concat(seen, " "))
  end)
end)
