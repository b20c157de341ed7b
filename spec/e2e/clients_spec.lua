-- End to end: third-party SMTP clients (Python's smtplib, swaks) against
-- the mock server; the message must land in the Maildir.

local harness = require "harness"

local function find_message(maildir, needle)
  local found = {}
  for _, f in ipairs(harness.maildir_new(maildir)) do
    local data = harness.read_file(f)
    if data and data:find(needle, 1, true) then found[#found + 1] = data end
  end
  return found
end

-- Stop servers that a failing test left running.
teardown(harness.cleanup)

describe("third-party clients", function()
  local srv, maildir

  lazy_setup(function()
    srv = harness.start { script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" } }
    maildir = srv.dir .. "/mail"
  end)

  lazy_teardown(function()
    harness.finish(srv)
  end)

  it("Python smtplib sends a message that is stored", function()
    local rc, out = harness.sh("python3 " .. harness.quote(harness.root .. "/spec/support/smtplib_client.py") ..
      " 127.0.0.1 " .. srv.port .. " 'smtplib e2e'", 30)
    assert.equals(0, rc, out)
    assert.truthy(out:find("sendmail: {}", 1, true), out)
    local found = find_message(maildir, "Subject: smtplib e2e")
    assert.equals(1, #found)
    local prefix, _, rest = harness.split_delivery(found[1])
    assert.equals("Return-Path: <sender@example.test>\r\nDelivered-To: rcpt@example.test\r\n", prefix)
    assert.equals("From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: smtplib e2e\r\n\r\n" ..
      "Hello from smtplib.\r\n.a line that starts with a dot\r\nBye.\r\n", rest)
  end)

  it("swaks sends a message that is stored", function()
    local rc, out = harness.sh("swaks --server 127.0.0.1:" .. srv.port ..
      " --to a@example.test --from b@example.test --header 'Subject: swaks e2e'" ..
      " --body x --silent 1 --timeout 10", 30)
    assert.equals(0, rc, out)
    local found = find_message(maildir, "Subject: swaks e2e")
    assert.equals(1, #found)
    assert.truthy(found[1]:match("^Return%-Path: <b@example%.test>\r\nDelivered%-To: a@example%.test\r\n"), found[1])
    assert.truthy(found[1]:find("\r\n\r\nx\r\n", 1, true), found[1])
  end)

  it("swaks with pipelining and BDAT-free DATA works too", function()
    local rc, out = harness.sh("swaks --server 127.0.0.1:" .. srv.port ..
      " --to c@example.test --from d@example.test --header 'Subject: swaks pipe'" ..
      " --body y --pipeline --silent 1 --timeout 10", 30)
    assert.equals(0, rc, out)
    assert.equals(1, #find_message(maildir, "Subject: swaks pipe"))
  end)
end)
