-- End to end: the mock's HTTP API (SPEC 5, docs/api.md) over a real
-- socket: list, message, raw, parts, delete, read marks, search, mailboxes,
-- wait-for-message, Server-Sent Events, the store across a restart, the cap.

local socket = require "socket"
local cjson = require "cjson"
local harness = require "harness"
local http = require "http_client"
local send = require "mail_send"

teardown(harness.cleanup)

local function start(args, dir)
  local a = { "--maildir", (dir or "{dir}") .. "/mail", "--auth-plaintext" }
  for _, x in ipairs(args or {}) do a[#a + 1] = x end
  local srv = harness.start {
    script_file = "scripts/mock.lua", args = a, listen = { "127.0.0.1:0", "http://127.0.0.1:0" },
  }
  srv.http = http.port_of(srv)
  return srv
end

local function list(srv, qs)
  local r = http.get(srv.http, "/api/v1/messages" .. (qs or ""))
  assert.equals(200, r.status, r.body)
  return r.json
end

local function esc(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local MULTI = table.concat({
  "From: =?utf-8?q?J=C3=B6rg?= <joerg@example.test>",
  "To: Anna <anna@example.test>",
  "Cc: cc@example.test",
  "Subject: =?iso-8859-1?q?Caf=E9_report?=",
  "Date: Mon, 01 Jan 2024 10:00:00 +0000",
  "MIME-Version: 1.0",
  "Content-Type: multipart/mixed; boundary=OUTER",
  "",
  "--OUTER",
  "Content-Type: multipart/alternative; boundary=INNER",
  "",
  "--INNER",
  "Content-Type: text/plain; charset=iso-8859-1",
  "Content-Transfer-Encoding: quoted-printable",
  "",
  "Gr=FC=DFe aus dem Caf=E9, needle-in-body",
  "--INNER",
  "Content-Type: text/html; charset=utf-8",
  "Content-Transfer-Encoding: base64",
  "",
  "PHA+SGVsbG8gPGI+d29ybGQ8L2I+PC9wPg==",
  "--INNER--",
  "--OUTER",
  "Content-Type: application/pdf; name=\"report.pdf\"",
  "Content-Disposition: attachment; filename=\"report.pdf\"",
  "Content-Transfer-Encoding: base64",
  "",
  "JVBERi0xLjQKJcOkw7w=",
  "--OUTER--",
  "",
}, "\r\n")

describe("mock HTTP API", function()
  local srv

  lazy_setup(function() srv = start() end)
  lazy_teardown(function() harness.finish(srv) end)

  it("lists nothing as an empty array", function()
    local r = http.get(srv.http, "/api/v1/messages")
    assert.equals(200, r.status)
    assert.equals("application/json", r.headers["content-type"])
    assert.truthy(r.body:find('"messages":[]', 1, true), r.body)
    assert.equals(0, r.json.total)
  end)

  it("lists a message with the SPEC 5 fields, parsed and decoded", function()
    local reply = send.message(srv.port,
      { from = "joerg@example.test", to = { "anna+report@example.test" }, data = MULTI })
    local id_q = reply:match("queued as (%S+)")
    assert.truthy(id_q)
    local l = list(srv, "?mailbox=report")
    assert.equals(1, #l.messages)
    local m = l.messages[1]
    assert.equals("report", m.mailbox)
    assert.equals("joerg@example.test", m.from)
    assert.same({ "anna+report@example.test" }, m.to)
    assert.equals("Café report", m.subject)
    assert.equals("Jörg <joerg@example.test>", m.header_from)
    assert.equals(1, m.attachment_count)
    assert.is_false(m.read)
    assert.is_false(m.tls)
    assert.truthy(m.size > #MULTI)
    assert.truthy(m.id:match("^[%w%.]+$"))

    local full = http.get(srv.http, "/api/v1/messages/" .. m.id)
    assert.equals(200, full.status)
    assert.equals("Grüße aus dem Café, needle-in-body", full.json.text:gsub("%s+$", ""))
    assert.equals("<p>Hello <b>world</b></p>", full.json.html)
    assert.equals(1, #full.json.attachments)
    local att = full.json.attachments[1]
    assert.equals("report.pdf", att.filename)
    assert.equals("application/pdf", att.content_type)
    local found
    for _, h in ipairs(full.json.headers) do
      if h.name == "Subject" then found = h.value end
    end
    assert.equals("Café report", found)

    local part = http.get(srv.http, "/api/v1/messages/" .. m.id .. "/parts/" .. math.tointeger(att.part))
    assert.equals(200, part.status, part.body)
    assert.equals("%PDF-1.4\n%\xC3\xA4\xC3\xBC", part.body)
    assert.equals('attachment; filename="report.pdf"', part.headers["content-disposition"])

    local raw = http.get(srv.http, "/api/v1/messages/" .. m.id .. "/raw")
    assert.equals(200, raw.status)
    local files = harness.maildir_new(srv.dir .. "/mail")
    local stored
    for _, f in ipairs(files) do
      local d = harness.read_file(f)
      if d:find("Caf=E9_report", 1, true) then stored = d end
    end
    assert.equals(stored, raw.body)
  end)

  it("puts mail in the AUTH user's mailbox, then +tag, then X-Kurir-Mailbox, then default", function()
    send.message(srv.port, { to = { "x+tagbox@example.test" }, auth = { "authbox", "pw" },
      data = "X-Kurir-Mailbox: hdrbox\r\nSubject: a\r\n\r\nx\r\n" })
    local hdr = "X-Kurir-Mailbox: hdrbox\r\n"
    send.message(srv.port, { to = { "x+tagbox@example.test" }, data = hdr .. "Subject: b\r\n\r\nx\r\n" })
    send.message(srv.port, { to = { "plain@example.test" }, data = hdr .. "Subject: c\r\n\r\nx\r\n" })
    send.message(srv.port, { to = { "plain@example.test" }, data = "Subject: d\r\n\r\nx\r\n" })
    assert.equals("a", list(srv, "?mailbox=authbox").messages[1].subject)
    assert.equals("authbox", list(srv, "?mailbox=authbox").messages[1].auth)
    assert.equals("b", list(srv, "?mailbox=tagbox").messages[1].subject)
    assert.equals("c", list(srv, "?mailbox=hdrbox").messages[1].subject)
    assert.equals("d", list(srv, "?mailbox=default").messages[1].subject)
    local boxes = http.get(srv.http, "/api/v1/mailboxes").json.mailboxes
    local names = {}
    for _, b in ipairs(boxes) do names[#names + 1] = b.name end
    assert.same({ "authbox", "default", "hdrbox", "report", "tagbox" }, names)
  end)

  it("lists newest first, with limit and offset", function()
    for i = 1, 3 do
      send.message(srv.port, { to = { "x+paging@example.test" }, data = "Subject: page " .. i .. "\r\n\r\nx\r\n" })
    end
    local l = list(srv, "?mailbox=paging&limit=2")
    assert.equals(3, l.total)
    assert.equals(2, #l.messages)
    assert.equals("page 3", l.messages[1].subject)
    assert.equals("page 2", l.messages[2].subject)
    local l2 = list(srv, "?mailbox=paging&limit=2&offset=2")
    assert.equals("page 1", l2.messages[1].subject)
    assert.equals(400, http.get(srv.http, "/api/v1/messages?limit=abc").status)
    assert.equals(400, http.get(srv.http, "/api/v1/messages?limit=0").status)
  end)

  it("searches with from:, to:, subject:, free text, has:attachment, before:/after:, all terms at once", function()
    local function subjects(q)
      local out = {}
      for _, m in ipairs(list(srv, "?query=" .. esc(q)).messages) do out[#out + 1] = m.subject end
      return out
    end
    assert.same({ "Café report" }, subjects("from:joerg"))
    assert.same({ "Café report" }, subjects("to:anna"))
    assert.same({ "Café report" }, subjects("to:cc@example.test"))
    assert.same({ "Café report" }, subjects("subject:café"))
    assert.same({ "Café report" }, subjects("needle-in-body"))
    assert.same({ "Café report" }, subjects("has:attachment"))
    assert.same({}, subjects("has:attachment from:nobody"))
    assert.same({ "page 3", "page 2", "page 1" }, subjects('subject:"page "'))
    assert.same({}, subjects("before:2000-01-01"))
    assert.equals(8, #subjects("after:2000-01-01"))
    assert.same({ "page 2" }, subjects("subject:page -subject:3 -subject:1"))
    local bad = http.get(srv.http, "/api/v1/messages?query=" .. esc("before:yesterday"))
    assert.equals(400, bad.status)
    assert.truthy(bad.json.error:find("before:", 1, true))
  end)

  it("marks read and unread (Maildir cur/ with the S flag)", function()
    local m = list(srv, "?mailbox=tagbox").messages[1]
    local r = http.request(srv.http, "PUT", "/api/v1/messages/" .. m.id .. "/read")
    assert.equals(200, r.status)
    assert.is_true(r.json.read)
    assert.is_true(list(srv, "?mailbox=tagbox").messages[1].read)
    local cur = harness.list_dir(srv.dir .. "/mail/cur")
    assert.equals(1, #cur)
    assert.truthy(cur[1]:match(":2,S$"))
    r = http.request(srv.http, "PUT", "/api/v1/messages/" .. m.id .. "/read", '{"read": false}')
    assert.is_false(r.json.read)
    assert.equals(0, #harness.list_dir(srv.dir .. "/mail/cur"))
    assert.equals(400, http.request(srv.http, "PUT", "/api/v1/messages/" .. m.id .. "/read", "nope").status)
    http.request(srv.http, "PUT", "/api/v1/messages/" .. m.id .. "/read")
  end)

  it("never maps an id or asset name to a path", function()
    for _, p in ipairs {
      "/api/v1/messages/..%2F..%2F..%2Fetc%2Fpasswd", "/api/v1/messages/../../etc/passwd/raw",
      "/api/v1/messages/%2Fetc%2Fpasswd/raw", "/ui/..%2F..%2Flua%2Fkurir%2Fmock.lua", "/ui/.hidden",
      "/api/v1/messages/new/raw",
    } do
      local r = http.get(srv.http, p)
      assert.equals(404, r.status, p)
      assert.falsy(r.body:find("root:", 1, true))
    end
    assert.equals(404, http.get(srv.http, "/api/v1/nothing").status)
    assert.equals(405, http.request(srv.http, "POST", "/api/v1/messages").status)
  end)

  it("deletes one message, a mailbox, a search", function()
    local one = list(srv, "?mailbox=paging").messages[1]
    assert.equals(200, http.request(srv.http, "DELETE", "/api/v1/messages/" .. one.id).status)
    assert.equals(404, http.get(srv.http, "/api/v1/messages/" .. one.id).status)
    assert.equals(2, list(srv, "?mailbox=paging").total)
    local r = http.request(srv.http, "DELETE", "/api/v1/messages?mailbox=paging")
    assert.equals(2, r.json.deleted)
    assert.equals(0, list(srv, "?mailbox=paging").total)
    r = http.request(srv.http, "DELETE", "/api/v1/messages?query=" .. esc("subject:c"))
    assert.truthy(r.json.deleted >= 1)
    assert.equals(0, list(srv, "?mailbox=hdrbox").total)
  end)

  it("keeps the index, mailboxes and read marks across a restart", function()
    local before = list(srv, "?limit=100")
    assert.equals(0, srv:stop())
    local dir = harness.tmpdir()
    os.execute("cp -r " .. harness.quote(srv.dir .. "/mail") .. " " .. harness.quote(dir .. "/mail"))
    harness.finish(srv)
    srv = start({}, dir)
    local after = list(srv, "?limit=100")
    assert.equals(before.total, after.total)
    for i, m in ipairs(before.messages) do
      local a = after.messages[i]
      assert.equals(m.id, a.id)
      assert.equals(m.mailbox, a.mailbox)
      assert.equals(m.subject, a.subject)
      assert.equals(m.read, a.read)
      assert.equals(m.auth, a.auth)
    end
    harness.rmtree(dir)
  end)

  it("deletes everything", function()
    local r = http.request(srv.http, "DELETE", "/api/v1/messages")
    assert.equals(200, r.status)
    assert.equals(0, list(srv).total)
    assert.same({}, harness.maildir_new(srv.dir .. "/mail"))
  end)
end)

describe("mock HTTP API: wait-for-message", function()
  local srv

  lazy_setup(function() srv = start() end)
  lazy_teardown(function() harness.finish(srv) end)

  it("answers at once when enough matching messages exist", function()
    send.message(srv.port, { to = { "w+now@example.test" }, data = "Subject: here\r\n\r\nx\r\n" })
    local r = http.get(srv.http, "/api/v1/wait?mailbox=now&count=1&timeout=5")
    assert.equals(200, r.status)
    assert.equals("here", r.json.messages[1].subject)
  end)

  it("answers 408 at the timeout", function()
    local t0 = socket.gettime()
    local r = http.get(srv.http, "/api/v1/wait?mailbox=never&timeout=0.3")
    assert.equals(408, r.status)
    assert.equals("timeout", r.json.error)
    assert.truthy(socket.gettime() - t0 >= 0.25)
  end)

  it("refuses bad parameters", function()
    assert.equals(400, http.get(srv.http, "/api/v1/wait?count=x").status)
    assert.equals(400, http.get(srv.http, "/api/v1/wait?timeout=-1").status)
    assert.equals(400, http.get(srv.http, "/api/v1/wait?timeout=99999").status)
    assert.equals(400, http.get(srv.http, "/api/v1/wait?query=%22open").status)
  end)

  it("answers as soon as the Nth matching message is stored, with that 250", function()
    local w = http.send(srv.http, "GET", "/api/v1/wait?mailbox=later&query=subject:want&count=2&timeout=" ..
      (20 * harness.scale))
    -- the wait is registered before this second request is answered
    assert.equals(200, http.get(srv.http, "/api/v1/info").status)
    send.message(srv.port, { to = { "w+later@example.test" }, data = "Subject: want 1\r\n\r\nx\r\n" })
    send.message(srv.port, { to = { "w+later@example.test" }, data = "Subject: other\r\n\r\nx\r\n" })
    send.message(srv.port, { to = { "w+other@example.test" }, data = "Subject: want x\r\n\r\nx\r\n" })
    w:settimeout(0.05)
    assert.is_nil((w:receive(1)))   -- not yet: one of two
    send.message(srv.port, { to = { "w+later@example.test" }, data = "Subject: want 2\r\n\r\nx\r\n" })
    -- answered in the loop turn of that 250: readable at once
    w:settimeout(0.5 * harness.scale)
    local r = assert(http.read_response(w))
    w:close()
    assert.equals(200, r.status)
    local body = cjson.decode(r.body)
    assert.equals(2, #body.messages)
    assert.equals("want 2", body.messages[1].subject)
    assert.equals("want 1", body.messages[2].subject)
  end)
end)

describe("mock HTTP API: events", function()
  local srv

  lazy_setup(function() srv = start() end)
  lazy_teardown(function() harness.finish(srv) end)

  -- a minimal SSE reader over chunked transfer encoding
  local function reader(sock)
    local pending = ""
    return function()
      while true do
        local a, b = pending:find("\n\n", 1, true)
        if a then
          local frame = pending:sub(1, a - 1)
          pending = pending:sub(b + 1)
          if not frame:match("^:") then
            return frame:match("event: (%S+)"), frame:match("data: ([^\n]*)")
          end
        else
          local size = assert(sock:receive("*l"))
          local n = assert(tonumber(size, 16), size)
          pending = pending .. assert(sock:receive(n))
          sock:receive("*l")
        end
      end
    end
  end

  it("streams one event per new and deleted message", function()
    local s = http.send(srv.http, "GET", "/api/v1/events")
    local status = s:receive("*l")
    assert.truthy(status:match("^HTTP/1%.1 200"))
    repeat local h = s:receive("*l") until h == ""
    local next_event = reader(s)
    assert.equals(200, http.get(srv.http, "/api/v1/info").status)
    send.message(srv.port, { to = { "e+ev@example.test" }, data = "Subject: evented\r\n\r\nx\r\n" })
    local kind, data = next_event()
    assert.equals("new", kind)
    local m = cjson.decode(data)
    assert.equals("evented", m.subject)
    assert.equals("ev", m.mailbox)
    http.request(srv.http, "DELETE", "/api/v1/messages/" .. m.id)
    kind, data = next_event()
    assert.equals("deleted", kind)
    assert.equals(m.id, cjson.decode(data).id)
    s:close()
  end)
end)

describe("mock HTTP API: cap", function()
  it("drops the oldest messages past --max-messages", function()
    local srv = start { "--max-messages", "2" }
    for i = 1, 3 do send.message(srv.port, { data = "Subject: cap " .. i .. "\r\n\r\nx\r\n" }) end
    local l = list(srv)
    assert.equals(2, l.total)
    assert.equals("cap 3", l.messages[1].subject)
    assert.equals("cap 2", l.messages[2].subject)
    assert.equals(2, #harness.maildir_new(srv.dir .. "/mail"))
    harness.finish(srv)
  end)
end)
