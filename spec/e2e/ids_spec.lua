-- End to end: queue ids and session ids are unique across restarts and
-- between processes (they name files in a shared queue later), short, and
-- safe in file names. Ids are collected from the 250 replies after DATA and
-- from the connect log lines of two consecutive server runs and of two
-- servers running at the same time.

local harness = require "harness"
local client = require "smtp_client"

teardown(harness.cleanup)

local MESSAGES = 25

-- Send MESSAGES messages over one session; returns their queue ids.
local function queue_ids(srv)
  local c = client.open(srv.port)
  c:expect(220)
  local code, text = c:ehlo("client.ids.test")
  assert.equals(250, code, text)
  local ids = {}
  for i = 1, MESSAGES do
    c:check("MAIL FROM:<a@example.test>", 250)
    c:check("RCPT TO:<b@example.test>", 250)
    c:check("DATA", 354)
    assert(c:send("Subject: " .. i .. "\r\n\r\nbody\r\n.\r\n"))
    local reply = c:expect(250)
    local id = reply:match("queued as (%S+)")
    assert.truthy(id, reply)
    ids[#ids + 1] = id
  end
  c:check("QUIT", 221)
  c:close()
  return ids
end

local function session_ids(srv)
  local ids = {}
  for line in srv:log():gmatch("[^\n]+") do
    local f = harness.logfmt(line)
    if f.event == "connect" then ids[#ids + 1] = f.session end
  end
  return ids
end

local function start()
  return harness.start { script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" } }
end

-- Assert the format of every id and that no id occurs twice.
local function assert_unique(ids)
  local seen = {}
  for _, id in ipairs(ids) do
    assert.truthy(id:match("^[0-9A-F]+$") and #id <= 23, "not a short file-name-safe id: " .. id)
    assert.is_nil(seen[id], "id " .. id .. " given twice")
    seen[id] = true
  end
end

describe("ids", function()
  it("never collide between two consecutive server runs", function()
    local all = {}
    for _ = 1, 2 do
      local srv = start()
      for _, id in ipairs(queue_ids(srv)) do all[#all + 1] = id end
      for _, id in ipairs(session_ids(srv)) do all[#all + 1] = id end
      harness.finish(srv)
    end
    assert.equals(2 * MESSAGES + 2, #all)
    assert_unique(all)
  end)

  it("never collide between two servers running at once", function()
    local a, b = start(), start()
    local all = {}
    for _, srv in ipairs { a, b } do
      for _, id in ipairs(queue_ids(srv)) do all[#all + 1] = id end
      for _, id in ipairs(session_ids(srv)) do all[#all + 1] = id end
    end
    harness.finish(a)
    harness.finish(b)
    assert.equals(2 * MESSAGES + 2, #all)
    assert_unique(all)
  end)
end)
